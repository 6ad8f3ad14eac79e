package mvcc

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"

	"github.com/ember-kv/ember/internal/wire"
)

// stepChanges is the fsm's bound on the changes one compaction step visits (compactStepRecords
// in the root package's fsm.go): the benchmark times a step of that size.
const stepChanges = 500

func historyNames(t testing.TB, st *State) []string {
	t.Helper()
	var out []string
	for _, r := range allVersions(t, st) {
		out = append(out, recordName(r))
	}
	return out
}

// allVersions is every version st holds, in key and revision order.
func allVersions(t testing.TB, st *State) []*Record {
	t.Helper()
	var out []*Record
	if !st.eachVersion(func(r *Record, _ int64) bool {
		out = append(out, r)
		return true
	}) {
		t.Fatal("a version listed by its key is missing")
	}
	return out
}

// checkTreesAgree fails unless st.Check finds its indexes in agreement.
func checkTreesAgree(t testing.TB, st *State) {
	t.Helper()
	if err := st.Check(); err != nil {
		t.Fatal(err)
	}
}

// stateStep is one step of a scripted history.
type stateStep func(t testing.TB, st *State)

func sPut(key string) stateStep {
	return func(t testing.TB, st *State) { stPut(t, st, key, "v", 0) }
}

func sDel(key, end string) stateStep {
	return func(t testing.TB, st *State) {
		if stDelete(t, st, key, end) == 0 {
			t.Fatalf("script deletes nothing at %q", key)
		}
	}
}

func sTxn(ops ...wire.Op) stateStep {
	return func(t testing.TB, st *State) {
		// What the root package's validateTxn checks of a script: single keys, each changed once.
		seen := map[string]bool{}
		for _, op := range ops {
			if len(op.Key) == 0 || op.End != nil || seen[string(op.Key)] {
				t.Fatalf("script txn invalid at %q", op.Key)
			}
			seen[string(op.Key)] = true
		}
		txn := &wire.Txn{Success: ops}
		if res, _ := st.ApplyTxn(txn); res.Code != wire.CodeOK {
			t.Fatalf("script txn: code %d", res.Code)
		}
	}
}

// compactFully applies a compaction at rev and runs its removal to the end.
func compactFully(st *State, rev int64) wire.Code {
	code := st.Compact(rev)
	for st.CompactStep(stepChanges) {
	}
	return code
}

func sCompact(rev int64) stateStep {
	return func(t testing.TB, st *State) {
		if code := compactFully(st, rev); code != wire.CodeOK {
			t.Fatalf("compact(%d): code %d", rev, code)
		}
	}
}

// TestState_Compact_RemovesHistory checks exactly which records compactions drop: superseded
// versions at once, tombstones older than the compaction point, and a tombstone at exactly the
// compaction revision only at the next compaction (so a watch from that revision sees it).
func TestState_Compact_RemovesHistory(t *testing.T) {
	// put a@2, put a@3, delete a@4, put b@5, put b@6
	lifeA := []stateStep{sPut("a"), sPut("a"), sDel("a", ""), sPut("b"), sPut("b")}
	// put a@2, delete a@3, put a@4
	lifeB := []stateStep{sPut("a"), sDel("a", ""), sPut("a")}
	tests := []struct {
		name     string
		steps    []stateStep
		wHistory []string
	}{
		{name: "nothing superseded yet", steps: append(slices.Clip(lifeA), sCompact(2)),
			wHistory: []string{"a@2", "a@3", "a@4t", "b@5", "b@6"}},
		{name: "superseded put dropped", steps: append(slices.Clip(lifeA), sCompact(3)),
			wHistory: []string{"a@3", "a@4t", "b@5", "b@6"}},
		{name: "tombstone at the compaction revision stays", steps: append(slices.Clip(lifeA), sCompact(4)),
			wHistory: []string{"a@4t", "b@5", "b@6"}},
		{name: "next compaction drops it", steps: append(slices.Clip(lifeA), sCompact(4), sCompact(5)),
			wHistory: []string{"b@5", "b@6"}},
		{name: "compaction past a tombstone drops the key", steps: append(slices.Clip(lifeA), sCompact(5)),
			wHistory: []string{"b@5", "b@6"}},
		{name: "compact at current keeps only the newest", steps: append(slices.Clip(lifeA), sCompact(6)),
			wHistory: []string{"b@6"}},
		{name: "stepwise equals at once", steps: append(slices.Clip(lifeA), sCompact(2), sCompact(3), sCompact(4), sCompact(5), sCompact(6)),
			wHistory: []string{"b@6"}},
		{name: "tombstone before a recreation", steps: append(slices.Clip(lifeB), sCompact(3)),
			wHistory: []string{"a@3t", "a@4"}},
		{name: "recreation supersedes the tombstone", steps: append(slices.Clip(lifeB), sCompact(4)),
			wHistory: []string{"a@4"}},
		{name: "tombstone then recreation then compaction", steps: append(slices.Clip(lifeB), sCompact(3), sCompact(4)),
			wHistory: []string{"a@4"}},
		{name: "tombstones of one revision stay together",
			steps:    []stateStep{sTxn(wirePut("a", "1"), wirePut("b", "1")), sDel("a", "c"), sCompact(3)},
			wHistory: []string{"a@3t", "b@3t"}},
		{name: "and leave together",
			steps:    []stateStep{sTxn(wirePut("a", "1"), wirePut("b", "1")), sDel("a", "c"), sCompact(3), sPut("c"), sCompact(4)},
			wHistory: []string{"c@4"}},
		{name: "later writes survive",
			steps:    []stateStep{sPut("a"), sPut("a"), sCompact(3), sPut("a"), sDel("a", ""), sPut("a")},
			wHistory: []string{"a@3", "a@4", "a@5t", "a@6"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := New()
			for _, step := range tc.steps {
				step(t, st)
			}
			if got := historyNames(t, st); !slices.Equal(got, tc.wHistory) {
				t.Fatalf("history %v, want %v", got, tc.wHistory)
			}
			checkTreesAgree(t, st)
		})
	}
}

// TestState_Compact_Codes checks the compaction bounds (§3): at or below the previous compaction is
// ErrCompacted, above the current revision is ErrFutureRev, and a refused compaction changes nothing.
func TestState_Compact_Codes(t *testing.T) {
	tests := []struct {
		name   string
		prior  []int64
		at     int64
		wCode  wire.Code
		wAfter int64 // compactRev afterwards
	}{
		{name: "first compaction", at: 3, wCode: wire.CodeOK, wAfter: 3},
		{name: "at current revision", at: 5, wCode: wire.CodeOK, wAfter: 5},
		{name: "above current revision", at: 6, wCode: wire.CodeFutureRev},
		{name: "repeat", prior: []int64{3}, at: 3, wCode: wire.CodeCompacted, wAfter: 3},
		{name: "below previous", prior: []int64{3}, at: 2, wCode: wire.CodeCompacted, wAfter: 3},
		{name: "after previous", prior: []int64{3}, at: 4, wCode: wire.CodeOK, wAfter: 4},
		{name: "future after previous", prior: []int64{3}, at: 9, wCode: wire.CodeFutureRev, wAfter: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := keyLife(t, 0) // revision 5
			for _, p := range tc.prior {
				sCompact(p)(t, st)
			}
			before := historyNames(t, st)
			code := st.Compact(tc.at)
			if code != tc.wCode || st.CompactRev() != tc.wAfter {
				t.Fatalf("code %d compactRev %d, want %d %d", code, st.CompactRev(), tc.wCode, tc.wAfter)
			}
			if code != wire.CodeOK && !slices.Equal(historyNames(t, st), before) {
				t.Fatalf("refused compaction changed history: %v -> %v", before, historyNames(t, st))
			}
		})
	}
}

// randomHistory applies n effective writes (puts, single and range deletes, multi-op txns) over
// nKeys keys, so that st ends n revisions later.
func randomHistory(t testing.TB, st *State, rng *rand.Rand, n, nKeys int) {
	t.Helper()
	key := func(i int) string { return fmt.Sprintf("k%02d", i) }
	target := st.Rev() + int64(n)
	for st.Rev() < target {
		switch p := rng.Intn(100); {
		case p < 55:
			stPut(t, st, key(rng.Intn(nKeys)), fmt.Sprint(rng.Intn(1000)), 0)
		case p < 75:
			stDelete(t, st, key(rng.Intn(nKeys)), "") // may delete nothing: no revision
		case p < 82:
			a, b := rng.Intn(nKeys), rng.Intn(nKeys)
			stDelete(t, st, key(min(a, b)), key(max(a, b)))
		default:
			// 2-4 puts on distinct keys and a delete of another key, in one revision.
			perm := rng.Perm(nKeys)
			var ops []wire.Op
			for _, i := range perm[:2+rng.Intn(3)] {
				ops = append(ops, wirePut(key(i), fmt.Sprint(rng.Intn(1000))))
			}
			ops = append(ops, wireDel(key(perm[5]), ""))
			sTxn(ops...)(t, st)
		}
	}
}

// readingsAt renders the reads a client can make of st at rev: each key alone, a full scan and a
// limited range scan. Two states with equal readings are indistinguishable at rev.
func readingsAt(t testing.TB, st *State, rev int64, nKeys int) string {
	t.Helper()
	var b strings.Builder
	render := func(op wire.Op) {
		res, code := rangeKeys(st, &op)
		if code != wire.CodeOK {
			fmt.Fprintf(&b, "code %d;", code)
			return
		}
		fmt.Fprintf(&b, "n%d m%v:", res.Count, res.More)
		for _, kv := range res.Kvs {
			fmt.Fprintf(&b, "%s=%s c%d m%d v%d,", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version)
		}
		b.WriteString(";")
	}
	for i := 0; i < nKeys; i++ {
		render(wire.Op{Kind: wire.OpRange, Key: []byte(fmt.Sprintf("k%02d", i)), Revision: rev})
	}
	render(wire.Op{Kind: wire.OpRange, Key: []byte{0}, End: []byte{0}, Revision: rev})
	render(wire.Op{Kind: wire.OpRange, Key: []byte("k05"), End: []byte("k12"), Revision: rev, Limit: 3})
	return b.String()
}

// TestState_Compact_PreservesReads builds a random history, records every read at every revision,
// and checks that after each of several increasing compactions every read at or after the
// compaction revision is unchanged, reads below it fail with ErrCompacted, and the trees only
// shrink. Writes continue between compactions.
func TestState_Compact_PreservesReads(t *testing.T) {
	const nKeys = 20
	for _, seed := range []int64{1, 2} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			st := New()
			readings := map[int64]string{}
			snap := func() {
				for r := int64(1); r <= st.Rev(); r++ {
					if _, ok := readings[r]; !ok {
						readings[r] = readingsAt(t, st, r, nKeys)
					}
				}
			}
			verify := func(c int64) {
				t.Helper()
				for r := c; r <= st.Rev(); r++ {
					if got := readingsAt(t, st, r, nKeys); got != readings[r] {
						t.Fatalf("after compact(%d): reads at %d changed:\n got %s\nwant %s", c, r, got, readings[r])
					}
				}
				for _, r := range []int64{1, c - 1} {
					if r < 1 || r >= c {
						continue
					}
					if _, code := st.checkRev(r, st.Rev()); code != wire.CodeCompacted {
						t.Fatalf("after compact(%d): read at %d gives code %d, want compacted", c, r, code)
					}
				}
			}
			compact := func(c int64) {
				t.Helper()
				hBefore, rBefore := st.Versions(), st.revs.Len()
				if code := compactFully(st, c); code != wire.CodeOK {
					t.Fatalf("compact(%d): code %d", c, code)
				}
				if st.Versions() > hBefore || st.revs.Len() > rBefore {
					t.Fatalf("compact(%d) grew the trees: history %d->%d revs %d->%d", c, hBefore, st.Versions(), rBefore, st.revs.Len())
				}
				checkTreesAgree(t, st)
				// Nothing older than c is kept unless it is its key's newest version at c and a
				// put: superseded versions and old tombstones are gone.
				newestAtC := map[string]*Record{}
				for _, r := range allVersions(t, st) {
					if r.Mod <= c {
						newestAtC[r.Key] = r
					}
				}
				for _, r := range allVersions(t, st) {
					if r.Mod < c && (r.Tombstone() || newestAtC[r.Key].pos() != r.pos()) {
						t.Fatalf("compact(%d) kept %s", c, recordName(r))
					}
				}
				verify(c)
			}

			randomHistory(t, st, rng, 300, nKeys)
			snap()
			total := st.Versions()
			for _, c := range []int64{1, 7, 8, 60, 61, 150, 220, st.Rev() - 1} {
				compact(c)
			}
			if st.Versions() >= total {
				t.Fatalf("compactions removed nothing: %d records", total)
			}
			randomHistory(t, st, rng, 100, nKeys)
			snap()
			compact(st.Rev() - 50)
			compact(st.Rev())
			// At the current revision only the live keys and this revision's tombstones remain.
			tombs := 0
			for _, r := range allVersions(t, st) {
				if r.Tombstone() {
					tombs++
					if r.Mod != st.Rev() {
						t.Fatalf("tombstone %s survived compact(%d)", recordName(r), st.Rev())
					}
				}
			}
			if st.Versions() != st.Keys()+tombs {
				t.Fatalf("history %d records, want %d live + %d tombstones", st.Versions(), st.Keys(), tombs)
			}
			// One more write and compaction: the remaining tombstones go too.
			stPut(t, st, "zz", "1", 0)
			snap()
			compact(st.Rev())
			if st.Versions() != st.Keys() {
				t.Fatalf("history %d records, latest %d: tombstones kept", st.Versions(), st.Keys())
			}
		})
	}
}

// stateReadings renders what a client or a member can observe of st at and after its compaction
// revision: reads at the compaction revision, the current one and at revs, HashKV at those,
// the changes and previous versions watch catch-up reads from the compaction revision, and the
// snapshot bytes.
func stateReadings(t testing.TB, st *State, nKeys int, revs []int64) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "rev %d compacted %d\n", st.Rev(), st.CompactRev())
	for _, r := range append([]int64{max(st.CompactRev(), 1), st.Rev()}, revs...) {
		h, err := st.Hash(r)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "@%d hash %08x %s\n", r, h, readingsAt(t, st, r, nKeys))
	}
	// Watch catch-up reads the changes from the compaction revision on and, above it, each
	// change's previous version (see the root package's watcher.readHistory).
	if !st.Changes(max(st.CompactRev(), 1), func(r *Record) bool {
		fmt.Fprintf(&b, "change %s", recordName(r))
		prev, ok := st.PrevVersion(r)
		if !ok {
			t.Fatalf("previous version of %s missing", recordName(r))
		}
		if r.Mod > st.CompactRev() && prev != nil && !prev.Tombstone() {
			v, _ := st.Value(prev)
			fmt.Fprintf(&b, " prev %s@%d", v, prev.Mod)
		}
		b.WriteString("\n")
		return true
	}) {
		t.Fatal("Changes could not read every version")
	}
	fmt.Fprintf(&b, "snapshot %x\n", encodeSnapshot(t, st, 1))
	return b.String()
}

// TestState_Compact_IncrementalEqualsFull runs the same random writes and compactions on two
// states: one finishes each removal at once, the other removes in small steps interleaved with
// the writes, and sometimes compacts again while a removal is pending. After every operation the
// two must be indistinguishable (reads and hashes at the compaction revision, the current one
// and random ones between, watch catch-up, snapshots), and once the removal is done their trees
// must be identical.
func TestState_Compact_IncrementalEqualsFull(t *testing.T) {
	const nKeys = 20
	for _, seed := range []int64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			ctl := rand.New(rand.NewSource(seed))
			wFull, wSteps := rand.New(rand.NewSource(seed+100)), rand.New(rand.NewSource(seed+100))
			full, steps := New(), New()
			merged := 0
			for op := 0; op < 100; op++ {
				switch p := ctl.Intn(10); {
				case p < 4:
					n := 1 + ctl.Intn(4)
					randomHistory(t, full, wFull, n, nKeys)
					randomHistory(t, steps, wSteps, n, nKeys)
				case p < 6 && steps.rev > steps.compactRev:
					if steps.compactPending {
						merged++
					}
					rev := steps.compactRev + 1 + ctl.Int63n(steps.rev-steps.compactRev)
					if code := compactFully(full, rev); code != wire.CodeOK {
						t.Fatalf("compact(%d): code %d", rev, code)
					}
					if code := steps.Compact(rev); code != wire.CodeOK {
						t.Fatalf("compact(%d): code %d", rev, code)
					}
				default:
					steps.CompactStep(1 + ctl.Intn(6))
				}
				revs := make([]int64, 3)
				for i := range revs {
					revs[i] = max(steps.compactRev, 1) + ctl.Int63n(steps.rev-max(steps.compactRev, 1)+1)
				}
				if want, got := stateReadings(t, full, nKeys, revs), stateReadings(t, steps, nKeys, revs); got != want {
					t.Fatalf("op %d: incremental state differs from full compaction:\n got %s\nwant %s", op, got, want)
				}
			}
			if merged == 0 {
				t.Fatal("no compaction was applied while a removal was pending")
			}
			for steps.CompactStep(3) {
			}
			if got, want := historyNames(t, steps), historyNames(t, full); !slices.Equal(got, want) {
				t.Fatalf("history after the removal %v, want %v", got, want)
			}
			if steps.size != full.size {
				t.Fatalf("size %d, want %d", steps.size, full.size)
			}
			checkTreesAgree(t, steps)
		})
	}
}

// TestState_Compact_ExtendPendingRemoval compacts again while a removal has stopped half-way
// through the previous compaction revision: the tombstone that revision kept must go too.
func TestState_Compact_ExtendPendingRemoval(t *testing.T) {
	st := New()
	stPut(t, st, "a", "1", 0)                        // a@2
	sTxn(wireDel("a", ""), wirePut("b", "1"))(t, st) // a@3 tombstone, b@3
	if code := st.Compact(3); code != wire.CodeOK {
		t.Fatalf("compact(3): code %d", code)
	}
	if !st.CompactStep(2) { // visits a@2 and a@3, stops before b@3
		t.Fatal("removal done after 2 of 3 changes")
	}
	if got, want := historyNames(t, st), []string{"a@3t", "b@3"}; !slices.Equal(got, want) {
		t.Fatalf("history after one step %v, want %v", got, want)
	}
	stPut(t, st, "c", "1", 0) // c@4
	if code := st.Compact(4); code != wire.CodeOK {
		t.Fatalf("compact(4): code %d", code)
	}
	for st.CompactStep(1) {
	}
	if got, want := historyNames(t, st), []string{"b@3", "c@4"}; !slices.Equal(got, want) {
		t.Fatalf("history after compacting past the tombstone %v, want %v", got, want)
	}
	checkTreesAgree(t, st)
}

// BenchmarkState_CompactStep times one compaction step (stepChanges changes, each
// superseding a version) over 200k keys: how long a compaction holds fsm.mu at a time.
func BenchmarkState_CompactStep(b *testing.B) {
	const keys = 200_000
	build := func() *State {
		st := New()
		for round := range 2 {
			for i := 0; i < keys; i += 100 {
				w := st.beginWrite()
				for j := range 100 {
					op := wirePut(fmt.Sprintf("k%07d", i+j), "value")
					w.put(&op)
				}
				w.end()
			}
			if round == 0 {
				compactFully(st, st.Rev()) // removes nothing: the next compaction's changes all supersede
			}
		}
		if code := st.Compact(st.Rev()); code != wire.CodeOK {
			b.Fatalf("compact: code %d", code)
		}
		return st
	}
	st := build()
	b.ResetTimer()
	for range b.N {
		if !st.CompactStep(stepChanges) {
			b.StopTimer()
			st = build()
			b.StartTimer()
		}
	}
}

// BenchmarkState_CompactOnDisk times a whole compaction of 100k superseded versions of 1 KiB
// values in a state with a backend, in steps of 500 with a commit every 4 steps, as a member's
// compactor and committer do.
func BenchmarkState_CompactOnDisk(b *testing.B) {
	const keys = 100_000
	value := make([]byte, 1024)
	for range b.N {
		b.StopTimer()
		st := NewOnDisk(testBackend(b, InlineValueMax))
		applied := uint64(0)
		putAll(b, st, keys, value, &applied)
		putAll(b, st, keys, value, &applied)
		if code := st.Compact(st.Rev()); code != wire.CodeOK {
			b.Fatalf("compact: code %d", code)
		}
		b.StartTimer()
		for steps := 1; st.CompactStep(500); steps++ {
			if steps%4 == 0 {
				applied++
				if err := st.Commit(applied); err != nil {
					b.Fatal(err)
				}
			}
		}
		applied++
		if err := st.Commit(applied); err != nil {
			b.Fatal(err)
		}
	}
}
