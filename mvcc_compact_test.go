package ember

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// overwriteCmd puts n keys in one revision.
func overwriteCmd(id uint64, n int, val string) *wire.Command {
	ops := make([]wire.Op, n)
	for i := range ops {
		ops[i] = wirePut(fmt.Sprintf("k%05d", i), val)
	}
	return txnCmd(id, &wire.Txn{Success: ops})
}

// compactionFSM returns a detached fsm holding n keys written twice (n superseded versions), at
// revision 3, with nothing compacted yet.
func compactionFSM(t testing.TB, n int) *fsmDriver {
	t.Helper()
	d := &fsmDriver{f: detachedFSM()}
	for i, val := range []string{"old", "new"} {
		if res := d.apply(t, overwriteCmd(uint64(i+1), n, val)); res.Code != wire.CodeOK {
			t.Fatalf("overwrite: code %d", res.Code)
		}
	}
	return d
}

// TestFSM_Compact_ApplyIsBounded applies a compaction of 3 steps' worth of superseded versions:
// applying it must remove at most a bounded number of records, so that the write applied next
// goes in before the removal is done; reads below the compaction revision fail meanwhile; each
// step removes a bounded number; and the result is the fully compacted state.
func TestFSM_Compact_ApplyIsBounded(t *testing.T) {
	n := 3 * compactStepRecords
	d := compactionFSM(t, n)
	f := d.f
	before := f.st.history.Len()
	if res := d.apply(t, &wire.Command{Kind: wire.KindCompact, Revision: 3}); res.Code != wire.CodeOK {
		t.Fatalf("compact: code %d", res.Code)
	}
	if removed := before - f.st.history.Len(); removed > 2*compactStepRecords {
		t.Fatalf("applying the compaction removed %d versions: the apply is not bounded", removed)
	}
	if res := d.apply(t, putCmd(3, "late", "x", 0)); res.Code != wire.CodeOK || res.Revision != 4 {
		t.Fatalf("put after compact: code %d revision %d", res.Code, res.Revision)
	}
	if !f.st.CompactPending() {
		t.Fatal("the removal completed before the next write was applied")
	}
	want := f.st.Clone() // what the removal must leave: the same state, fully compacted
	for want.CompactStep(1 << 30) {
	}
	v := f.view().st
	if _, code := v.checkRev(2, v.rev); code != wire.CodeCompacted {
		t.Fatalf("read at 2 during the removal: code %d, want compacted", code)
	}
	if res, code := v.rangeKeys(&wire.Op{Kind: wire.OpRange, Key: []byte("k00000"), End: []byte{0}, Revision: 3, CountOnly: true}, v.rev); code != wire.CodeOK || res.Count != int64(n) {
		t.Fatalf("count at the compaction revision during the removal: %+v code %d", res, code)
	}

	// A snapshot taken now holds the compacted state and nothing pending.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}

	steps := 0
	for {
		before := f.st.history.Len()
		more := f.compactStep()
		steps++
		if removed := before - f.st.history.Len(); removed > 2*compactStepRecords {
			t.Fatalf("step %d removed %d versions", steps, removed)
		}
		if !more {
			break
		}
	}
	if steps < 3 || f.st.CompactPending() {
		t.Fatalf("removal took %d steps, pending %v: want at least 3, done", steps, f.st.CompactPending())
	}
	if got, want := f.st.history.Len(), n+1; got != want {
		t.Fatalf("%d versions after the removal, want %d (the new ones and late)", got, want)
	}
	assertStatesEqual(t, want, f.st)
	checkTreesAgree(t, f.st)
	if f.sizeInUse.Load() != f.st.Size() {
		t.Fatalf("size in use %d, state size %d", f.sizeInUse.Load(), f.st.Size())
	}

	// Restoring that snapshot into a member with a removal of its own pending resets it.
	r := compactionFSM(t, 10)
	r.apply(t, &wire.Command{Kind: wire.KindCompact, Revision: 2})
	if err := r.f.Restore(io.NopCloser(bytes.NewReader(sink.buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if r.f.st.CompactPending() {
		t.Fatal("restored state has a removal pending")
	}
	if err := r.f.waitCompacted(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertStatesEqual(t, want, r.f.st)
}

// stateReadings renders what a client or a member can observe of st at and after its compaction
// revision: reads at the compaction revision, the current one and at revs, HashKV at those,
// watch catch-up with previous versions from the compaction revision, and the snapshot bytes.
func stateReadings(t testing.TB, st *mvcc.State, nKeys int, revs []int64) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "rev %d compacted %d\n", st.Rev(), st.CompactRev())
	for _, r := range append([]int64{max(st.CompactRev(), 1), st.Rev()}, revs...) {
		fmt.Fprintf(&b, "@%d hash %08x %s\n", r, st.Hash(r), readingsAt(t, st, r, nKeys))
	}
	w := &watcher{hub: &watchHub{limits: defaultHubLimits}, kr: mvcc.NewKeyRange([]byte{0}, []byte{0}), prevKV: true}
	for next := max(st.CompactRev(), 1); next <= st.Rev(); {
		evs, last := w.readHistory(st, next, st.Rev())
		for _, e := range evs {
			fmt.Fprintf(&b, "event %v %s@%d", e.Type, e.Kv.Key, e.Kv.ModRevision)
			if e.PrevKv != nil {
				fmt.Fprintf(&b, " prev %s@%d", e.PrevKv.Value, e.PrevKv.ModRevision)
			}
			b.WriteString("\n")
		}
		next = last + 1
	}
	fmt.Fprintf(&b, "snapshot %x\n", encodeSnapshot(t, st, 1))
	return b.String()
}

// TestMVCC_Compact_IncrementalEqualsFull runs the same random writes and compactions on two
// states: one finishes each removal at once, the other removes in small steps interleaved with
// the writes, and sometimes compacts again while a removal is pending. After every operation the
// two must be indistinguishable (reads and hashes at the compaction revision, the current one
// and random ones between, watch catch-up, snapshots), and once the removal is done their trees
// must be identical.
func TestMVCC_Compact_IncrementalEqualsFull(t *testing.T) {
	const nKeys = 20
	for _, seed := range []int64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			ctl := rand.New(rand.NewSource(seed))
			wFull, wSteps := rand.New(rand.NewSource(seed+100)), rand.New(rand.NewSource(seed+100))
			full, steps := mvcc.New(), mvcc.New()
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
			if got, want := historyNames(steps), historyNames(full); !slices.Equal(got, want) {
				t.Fatalf("history after the removal %v, want %v", got, want)
			}
			if steps.size != full.size {
				t.Fatalf("size %d, want %d", steps.size, full.size)
			}
			checkTreesAgree(t, steps)
		})
	}
}

// TestFSM_Compact_ConcurrentReaders reads read views from several goroutines while the compactor
// removes a compaction in steps and writes go on: every read at the compaction revision and every
// hash there must be the fully compacted state's. Run with -race: steps mutate the live trees
// that the views share nodes with.
func TestFSM_Compact_ConcurrentReaders(t *testing.T) {
	d := compactionFSM(t, 4*compactStepRecords)
	f := d.f
	ref := f.st.Clone()
	compactFully(ref, 3)
	wantRead, wantHash := readingsAt(t, ref, 3, 30), ref.Hash(3)

	ctx, cancel := context.WithCancel(context.Background())
	var compactor sync.WaitGroup
	compactor.Add(1)
	go func() {
		defer compactor.Done()
		f.runCompactor(ctx)
	}()
	defer func() {
		cancel()
		compactor.Wait()
	}()

	d.apply(t, &wire.Command{Kind: wire.KindCompact, Revision: 3})
	stop := make(chan struct{})
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				st := f.view().st
				if got := readingsAt(t, st, 3, 30); got != wantRead {
					errs <- fmt.Errorf("read at 3 during the removal: %s, want %s", got, wantRead)
					return
				}
				if got := st.Hash(3); got != wantHash {
					errs <- fmt.Errorf("hash at 3 during the removal: %08x, want %08x", got, wantHash)
					return
				}
			}
		}()
	}
	for i := 0; i < 100; i++ {
		d.apply(t, putCmd(uint64(10+i), fmt.Sprintf("w%03d", i%7), "x", 0))
	}
	close(stop)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// A second compaction, which may find the first still pending.
	d.apply(t, &wire.Command{Kind: wire.KindCompact, Revision: 50})
	if err := f.waitCompacted(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.st.CompactPending() || f.st.CompactRev() != 50 {
		t.Fatalf("after waitCompacted: pending %v compactRev %d", f.st.CompactPending(), f.st.CompactRev())
	}
	checkTreesAgree(t, f.st)
	f.st.history.Scan(func(r *mvcc.Record) bool {
		if next := f.st.nextVersion(r); f.st.obsolete(r, next) {
			t.Fatalf("%s survived the removal", recordName(r))
		}
		return true
	})
}

// TestStore_Compact_Physical checks that WithCompactPhysical returns once the removal is done on
// this member: the records are gone and the size in use shows it.
func TestStore_Compact_Physical(t *testing.T) {
	s := openMem(t)
	ctx := emberTestCtx(t)
	var rev int64
	for _, val := range []string{"old", "new"} {
		ops := make([]Op, 100)
		for i := range ops {
			ops[i] = OpPut(fmt.Sprintf("k%03d", i), val)
		}
		for range 30 { // 100 keys with 60 versions each
			resp, err := s.Txn(ctx).Then(ops...).Commit()
			if err != nil {
				t.Fatal(err)
			}
			rev = resp.Header.Revision
		}
	}
	before, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(ctx, rev, WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "k000", WithRev(rev-1)); !errors.Is(err, ErrCompacted) {
		t.Fatalf("read below the compaction: %v, want ErrCompacted", err)
	}
	s.fsm.mu.Lock()
	pending, records := s.fsm.st.CompactPending(), s.fsm.st.history.Len()
	s.fsm.mu.Unlock()
	if pending || records != 100 {
		t.Fatalf("after a physical compaction: pending %v, %d records, want done, 100", pending, records)
	}
	after, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.DBSizeInUse >= before.DBSizeInUse/10 {
		t.Fatalf("size in use %d after a physical compaction, %d before", after.DBSizeInUse, before.DBSizeInUse)
	}
}

// TestMVCC_Compact_ExtendPendingRemoval compacts again while a removal has stopped half-way
// through the previous compaction revision: the tombstone that revision kept must go too.
func TestMVCC_Compact_ExtendPendingRemoval(t *testing.T) {
	st := mvcc.New()
	stPut(t, st, "a", "1", 0)                        // a@2
	sTxn(wireDel("a", ""), wirePut("b", "1"))(t, st) // a@3 tombstone, b@3
	if code := st.Compact(3); code != wire.CodeOK {
		t.Fatalf("compact(3): code %d", code)
	}
	if !st.CompactStep(2) { // visits a@2 and a@3, stops before b@3
		t.Fatal("removal done after 2 of 3 changes")
	}
	if got, want := historyNames(st), []string{"a@3t", "b@3"}; !slices.Equal(got, want) {
		t.Fatalf("history after one step %v, want %v", got, want)
	}
	stPut(t, st, "c", "1", 0) // c@4
	if code := st.Compact(4); code != wire.CodeOK {
		t.Fatalf("compact(4): code %d", code)
	}
	for st.CompactStep(1) {
	}
	if got, want := historyNames(st), []string{"b@3", "c@4"}; !slices.Equal(got, want) {
		t.Fatalf("history after compacting past the tombstone %v, want %v", got, want)
	}
	checkTreesAgree(t, st)
}

// BenchmarkMVCC_CompactStep times one compaction step (compactStepRecords changes, each
// superseding a version) over 200k keys: how long a compaction holds fsm.mu at a time.
func BenchmarkMVCC_CompactStep(b *testing.B) {
	const keys = 200_000
	build := func() *mvcc.State {
		st := mvcc.New()
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
		if !st.CompactStep(compactStepRecords) {
			b.StopTimer()
			st = build()
			b.StartTimer()
		}
	}
}
