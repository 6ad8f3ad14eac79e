package ember

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// Value sizes of the commands in these tests: the results are previous values of puts and
// deletes, and ranges read inside write transactions. The budget tests use values of 512 KiB to
// 1 MiB, as a real workload might; the others scale everything down, as the choices depend only
// on sizes relative to the budget, to stay fast under the race detector.
const (
	bigValue   = 512 << 10
	smallValue = 4 << 10
)

// valueOf returns a value of base to 2×base bytes, its size and content set by i.
func valueOf(i, base int) string {
	return strings.Repeat(string(rune('a'+i%26)), base+(i*97*base/512)%base)
}

// bigResultKinds makes the i-th command of a log whose results are large, one kind per entry.
var bigResultKinds = []struct {
	name string
	cmd  func(i, base int) *wire.Command
}{
	{"put with prevKV", func(i, base int) *wire.Command {
		op := wirePut("k", valueOf(i, base))
		op.PrevKV = true
		return txnCmd(uint64(i), &wire.Txn{Success: wireOps(op)})
	}},
	{"delete range with prevKV", func(i, base int) *wire.Command {
		// Put a key, then delete [k, l) with its previous values: the result holds the put.
		if i%2 == 0 {
			return txnCmd(uint64(i), &wire.Txn{Success: wireOps(wirePut(fmt.Sprintf("k%d", i), valueOf(i, base)))})
		}
		op := wireDel("k", "l")
		op.PrevKV = true
		return txnCmd(uint64(i), &wire.Txn{Success: wireOps(op)})
	}},
	{"txn with a range", func(i, base int) *wire.Command {
		return txnCmd(uint64(i), &wire.Txn{Success: wireOps(wirePut("k", valueOf(i, base)), wirePut("n", fmt.Sprint(i)), wireGet("k"))})
	}},
}

// mixedBigCommand mixes the kinds, for tests that need a long varied log.
func mixedBigCommand(i, base int) *wire.Command {
	return bigResultKinds[i%len(bigResultKinds)].cmd(i, base)
}

// dedupSlack is what the table may hold beyond the budget for n remembered IDs: a record and a
// short result each.
func dedupSlack(n int) int64 { return int64(n) * (mvcc.DedupRecordBytes + mvcc.DedupShortResult) }

// checkDedupCounts checks the dedup bookkeeping against the table (mvcc.Applier.Check) and
// that the fsm published its size.
func checkDedupCounts(t testing.TB, f *fsm) {
	t.Helper()
	if err := f.app.Check(); err != nil {
		t.Fatal(err)
	}
	if got, want := f.dedupSize.Load(), f.app.DedupBytes(); got != want {
		t.Fatalf("published dedup size %d, table %d", got, want)
	}
}

// longResultBytes is what the table holds in results longer than the short ones, which the
// budget bounds.
func longResultBytes(st *mvcc.State) int64 {
	var n int64
	st.ScanRemembered(func(e *mvcc.DedupEntry) bool {
		if len(e.Result) > mvcc.DedupShortResult {
			n += int64(len(e.Result))
		}
		return true
	})
	return n
}

// Trimming and window expiry share dedupOrder: as entries expire and the order is compacted, the
// trim cursor stays on the oldest entry that may hold a long result, and the counts stay exact.
func TestFSM_Dedup_TrimAcrossWindowExpiry(t *testing.T) {
	const step = mvcc.DedupWindow / 50 // about 50 entries in the window
	tests := []struct {
		name     string
		budget   int64
		wantHeld int64 // long result bytes held once the window is full, at least
	}{
		{"trims on every write", 3 * 300, 2 * 200},
		{"never trims while entries expire", 1 << 20, 30 * 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := detachedFSMWithBudget(t, tc.budget)
			for i := 1; i <= 600; i++ {
				cmd := putCmd(uint64(i), "k", strings.Repeat("v", 200+i%100), 0)
				cmd.Txn.Success[0].PrevKV = i%4 != 0 // every fourth result is short
				f.ApplyBatch([]*raft.Log{{Index: uint64(i * step), Type: raft.LogCommand, Data: cmd.Marshal(nil)}})
				checkDedupCounts(t, f)
				if n := len(remembered(f.app.State())); n > mvcc.DedupWindow/step+1 {
					t.Fatalf("after %d: %d request IDs remembered", i, n)
				}
				if longResultBytes(f.app.State()) < tc.wantHeld && i > 60 {
					t.Fatalf("after %d: %d bytes of long results held, want at least %d", i, longResultBytes(f.app.State()), tc.wantHeld)
				}
			}
		})
	}
}

// Large results (PrevKV, delete-range PrevKVs, ranges inside write transactions) stay within the
// budget, and so does every snapshot: after a full compaction a snapshot is the live data, the
// budget and a few bytes per remembered request ID, where it used to hold every result.
func TestFSM_Dedup_LargeResultsStayWithinBudget(t *testing.T) {
	const budget = 2 << 20
	const n = 6
	for _, kind := range bigResultKinds {
		t.Run(kind.name, func(t *testing.T) {
			d := &fsmDriver{f: detachedFSMWithBudget(t, budget)}
			var last *wire.Result
			for i := range n {
				if last = d.apply(t, kind.cmd(i, bigValue)); last.Code != wire.CodeOK {
					t.Fatalf("command %d: code %d", i, last.Code)
				}
				checkDedupCounts(t, d.f)
			}
			if res := d.apply(t, &wire.Command{Kind: wire.KindCompact, Revision: d.f.app.State().Rev()}); res.Code != wire.CodeOK {
				t.Fatalf("compact: code %d", res.Code)
			}
			checkDedupCounts(t, d.f)
			if got := d.f.dedupSize.Load(); got > budget+dedupSlack(n) {
				t.Fatalf("dedup table %d bytes, want at most %d", got, budget+dedupSlack(n))
			}
			snap := encodeSnapshot(t, d.f.app.State(), d.f.applied.Load())
			if limit := d.f.app.State().Size() + budget + dedupSlack(n) + 4<<10; int64(len(snap)) > limit {
				t.Fatalf("snapshot %d bytes, want at most %d (data %d, budget %d)", len(snap), limit, d.f.app.State().Size(), budget)
			}
			// The budget is met by dropping old results, not the newest: a retry of the last
			// command still gets its whole result.
			rev := d.f.app.State().Rev()
			d.index++
			out := d.f.ApplyBatch([]*raft.Log{{Index: d.index, Type: raft.LogCommand, Data: retryOf(kind.cmd(n-1, bigValue), 1)}})
			if !reflect.DeepEqual(out[0], last) || d.f.app.State().Rev() != rev {
				t.Fatalf("retry of the newest command: %+v, rev %d -> %d; want its first result", out[0], rev, d.f.app.State().Rev())
			}
		})
	}
}

// retryOf encodes cmd as the proposer retries it after an unknown outcome.
func retryOf(cmd *wire.Command, floor uint64) []byte {
	c := *cmd
	c.RetryFloor = floor
	return c.Marshal(nil)
}

// dedupStateOf sums up what applying a command changes: any write moves the revision, and the
// dedup table gains an entry only for a command applied (or refused) for the first time.
func dedupStateOf(f *fsm) string {
	return fmt.Sprintf("rev %d, size %d, %d request IDs, %d dedup bytes",
		f.app.State().Rev(), f.app.State().Size(), len(remembered(f.app.State())), f.app.DedupBytes())
}

// A retry of a command whose result was dropped is answered honestly and applies nothing: a
// success as CodeResultNotHeld at the revision it was applied at (never a response without
// the PrevKV it had), a failure as the same failure. A retry whose request ID is forgotten
// altogether, with a floor older than the window, stays "outcome unknown".
func TestFSM_Dedup_RetryOfDroppedResult(t *testing.T) {
	const budget = 2 * smallValue
	d := &fsmDriver{f: detachedFSMWithBudget(t, budget)}
	first := map[uint64]*wire.Result{}
	cmds := map[uint64]*wire.Command{}
	for i := range 12 {
		cmds[uint64(i)] = mixedBigCommand(i, smallValue)
		first[uint64(i)] = d.apply(t, cmds[uint64(i)])
	}
	// A failure, a small success and a lease grant: their results are short and always held.
	cmds[100] = putCmd(100, "g", "v", 12345)
	cmds[101] = putCmd(101, "small", "v", 0)
	cmds[102] = &wire.Command{ID: wire.RequestID{Client: 7, Seq: 102}, Kind: wire.KindLeaseGrant, LeaseID: 5, LeaseTTL: 60}
	for _, id := range []uint64{100, 101, 102} {
		first[id] = d.apply(t, cmds[id])
	}
	for i := 12; i < 24; i++ { // pushes every earlier long result out
		cmds[uint64(i)] = mixedBigCommand(i, smallValue)
		first[uint64(i)] = d.apply(t, cmds[uint64(i)])
	}
	if first[100].Code != wire.CodeLeaseNotFound || first[101].Code != wire.CodeOK || first[102].Code != wire.CodeOK {
		t.Fatalf("short commands: codes %d, %d, %d", first[100].Code, first[101].Code, first[102].Code)
	}
	notHeld := func(id uint64) *wire.Result {
		return &wire.Result{Code: wire.CodeResultNotHeld, Revision: first[id].Revision}
	}
	tests := []struct {
		name string
		id   uint64
		want *wire.Result
	}{
		{"dropped put with prevKV", 3, notHeld(3)},
		{"dropped delete range with prevKV", 1, notHeld(1)},
		{"dropped txn with a range", 2, notHeld(2)},
		{"failure", 100, first[100]},
		{"small put", 101, first[101]},
		{"lease grant", 102, first[102]},
		{"newest", 23, first[23]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := dedupStateOf(d.f)
			d.index++
			out := d.f.ApplyBatch([]*raft.Log{{Index: d.index, Type: raft.LogCommand, Data: retryOf(cmds[tc.id], 1)}})
			if !reflect.DeepEqual(out[0], tc.want) {
				t.Fatalf("retry answered %+v, want %+v", out[0], tc.want)
			}
			if after := dedupStateOf(d.f); after != before {
				t.Fatalf("the retry changed the state: %s, was %s", after, before)
			}
		})
	}
	// The proposer turns CodeResultNotHeld into an error meaning "outcome unknown", and nothing
	// definite.
	if err := codeError(wire.CodeResultNotHeld); !errors.Is(err, ErrTimeout) || errors.Is(err, ErrNoLeader) || errors.Is(err, ErrStopped) {
		t.Fatalf("CodeResultNotHeld maps to %v, want an error wrapping ErrTimeout alone", err)
	}
	t.Run("forgotten beyond the window", func(t *testing.T) {
		rev := d.f.app.State().Rev()
		idx := d.index + mvcc.DedupWindow + 1
		d.f.ApplyBatch([]*raft.Log{{Index: idx, Type: raft.LogCommand, Data: putCommand(wire.RequestID{Client: 8, Seq: 1}, "x", "1")}})
		d.index = idx + 1
		out := d.f.ApplyBatch([]*raft.Log{{Index: d.index, Type: raft.LogCommand, Data: retryOf(cmds[101], 1)}})
		if res := out[0].(*wire.Result); res.Code != wire.CodeTimeout || d.f.app.State().Rev() != rev+1 {
			t.Fatalf("retry of a forgotten command: %+v, rev %d -> %d; want CodeTimeout and only the put applied", res, rev, d.f.app.State().Rev())
		}
	})
}

// Two members with the same budget fed the same log, in different batches and one of them
// restored from the other's snapshot half way, end with identical dedup tables and write
// identical snapshots. A member with another budget agrees on every write and every remembered
// request ID; only whether a retry gets its full result differs.
func TestFSM_Dedup_Deterministic(t *testing.T) {
	const budget = 6 * smallValue
	const n = 40
	var log []*raft.Log
	for i := range n {
		cmd := mixedBigCommand(i, smallValue)
		if i%9 == 8 {
			cmd = &wire.Command{ID: wire.RequestID{Client: 9, Seq: uint64(i)}, Kind: wire.KindCompact, Revision: int64(i)}
		}
		log = append(log, &raft.Log{Index: uint64(len(log) + 1), Type: raft.LogCommand, Data: cmd.Marshal(nil)})
		if i%7 == 6 { // a retry of an older command, whose result may or may not be held
			log = append(log, &raft.Log{Index: uint64(len(log) + 1), Type: raft.LogCommand, Data: retryOf(mixedBigCommand(i-6, smallValue), 1)})
		}
	}
	a, b, other := detachedFSMWithBudget(t, budget), detachedFSMWithBudget(t, budget), detachedFSMWithBudget(t, 4*budget)
	var outA, outOther []any
	for _, l := range log {
		outA = append(outA, a.ApplyBatch([]*raft.Log{l})...)
		outOther = append(outOther, other.ApplyBatch([]*raft.Log{l})...)
		checkDedupCounts(t, a)
		checkDedupCounts(t, other)
	}
	half := len(log) / 2
	for i := 0; i < half; i += 5 {
		b.ApplyBatch(log[i:min(i+5, half)])
	}
	restored := detachedFSMWithBudget(t, budget)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(encodeSnapshot(t, b.app.State(), b.applied.Load())))); err != nil {
		t.Fatal(err)
	}
	for i := half; i < len(log); i += 3 {
		restored.ApplyBatch(log[i:min(i+3, len(log))])
	}
	checkDedupCounts(t, restored)
	if !bytes.Equal(encodeSnapshot(t, a.app.State(), a.applied.Load()), encodeSnapshot(t, restored.app.State(), restored.applied.Load())) {
		t.Fatal("members with the same budget wrote different snapshots")
	}
	// The sizes count what the background compaction has removed so far: finish it on both.
	for stepCompaction(a) || stepCompaction(restored) {
	}
	assertSameState(t, a.app.State(), restored.app.State())
	if a.app.DedupBytes() != restored.app.DedupBytes() || longResultBytes(a.app.State()) != longResultBytes(restored.app.State()) {
		t.Fatalf("dedup counts %d/%d and %d/%d", a.app.DedupBytes(), longResultBytes(a.app.State()), restored.app.DedupBytes(), longResultBytes(restored.app.State()))
	}

	// The member with a larger budget: the same writes, the same request IDs at the same
	// indexes; each answer is the same, or the smaller budget's says the result is not held.
	ea, eo := remembered(a.app.State()), remembered(other.app.State())
	if len(ea) != len(eo) {
		t.Fatalf("budgets %d and %d remember %d and %d request IDs", budget, 4*budget, len(ea), len(eo))
	}
	for i := range ea {
		if ea[i].ID != eo[i].ID || ea[i].Index != eo[i].Index {
			t.Fatalf("entry %d: %v@%d and %v@%d", i, ea[i].ID, ea[i].Index, eo[i].ID, eo[i].Index)
		}
	}
	stripped := func(st *mvcc.State) []byte {
		c := st.Clone()
		for _, e := range remembered(c) {
			c.Forget(e.ID)
		}
		return encodeSnapshot(t, c, 0)
	}
	if !bytes.Equal(stripped(a.app.State()), stripped(other.app.State())) {
		t.Fatal("members with different budgets hold different data")
	}
	held := 0
	for i := range outA {
		ra, ro := outA[i].(*wire.Result), outOther[i].(*wire.Result)
		switch {
		case reflect.DeepEqual(ra, ro):
		case ra.Code == wire.CodeResultNotHeld && ro.Code == wire.CodeOK && ra.Revision == ro.Revision:
			held++
		default:
			t.Fatalf("entry %d answered %+v with budget %d, %+v with %d", i+1, ra, budget, ro, 4*budget)
		}
	}
	if held == 0 {
		t.Fatal("no retry found its result held by the larger budget only: the log does not test budgets")
	}

	// Restoring the larger budget's snapshot trims its table to this member's budget.
	trimmed := detachedFSMWithBudget(t, budget)
	if err := trimmed.Restore(io.NopCloser(bytes.NewReader(encodeSnapshot(t, other.app.State(), other.applied.Load())))); err != nil {
		t.Fatal(err)
	}
	checkDedupCounts(t, trimmed)
	if longResultBytes(other.app.State()) <= budget {
		t.Fatalf("the larger budget holds only %d bytes of results: nothing to trim", longResultBytes(other.app.State()))
	}
}

// trimmedDedupFSM is a detached fsm whose dedup table holds long results, short ones, and
// results replaced by CodeResultNotHeld.
func trimmedDedupFSM(t testing.TB) *fsmDriver {
	t.Helper()
	d := &fsmDriver{f: detachedFSMWithBudget(t, 200)}
	for i := range 9 {
		d.apply(t, mixedBigCommand(i, 60))
	}
	d.apply(t, putCmd(100, "g", "v", 12345)) // a failure
	var notHeld int
	d.f.app.State().ScanRemembered(func(e *mvcc.DedupEntry) bool {
		if code, _, _ := wire.ResultHead(e.Result); code == wire.CodeResultNotHeld {
			notHeld++
		}
		return true
	})
	if notHeld == 0 || longResultBytes(d.f.app.State()) == 0 {
		t.Fatalf("%d results not held, %d bytes of long results: want both", notHeld, longResultBytes(d.f.app.State()))
	}
	return d
}

// Through a store: WithDedupResultBytes reaches the state machine, and a retry of a put whose
// previous value is no longer held is answered CodeResultNotHeld and not applied again.
func TestStore_Submit_RetryOfDroppedResult(t *testing.T) {
	const budget = 64 << 10
	s := openMem(t, WithDedupResultBytes(budget))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	val := strings.Repeat("v", 40<<10)
	if _, err := s.Put(ctx, "k", val); err != nil {
		t.Fatal(err)
	}
	op := wirePut("k", val)
	op.PrevKV = true
	cmd := &wire.Command{ID: s.nextID(), Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{op}}}
	data := cmd.Marshal(nil)
	first, err := s.submit(ctx, cmd, data, true)
	if err != nil || first.Code != wire.CodeOK || first.Txn.Responses[0].Put.PrevKV == nil {
		t.Fatalf("first attempt: %+v, %v", first, err)
	}
	for range 2 { // two more previous values of 40 KiB: over the budget
		if _, err := s.Put(ctx, "k", val, WithPrevKV()); err != nil {
			t.Fatal(err)
		}
	}
	cmd.RetryFloor = 1
	retry, err := s.submit(ctx, cmd, cmd.Marshal(nil), true)
	if err != nil || retry.Code != wire.CodeResultNotHeld || retry.Revision != first.Revision {
		t.Fatalf("retry: %+v, %v; want CodeResultNotHeld at revision %d", retry, err, first.Revision)
	}
	g, err := s.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if g.Kvs[0].Version != 4 {
		t.Fatalf("version %d after four puts and a retry, want 4", g.Kvs[0].Version)
	}
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.DedupBytes > budget+dedupSlack(5) {
		t.Fatalf("DedupBytes %d, budget %d", st.DedupBytes, budget)
	}
}

// remembered lists the dedup table's entries in request ID order.
func remembered(st *mvcc.State) []*mvcc.DedupEntry {
	var es []*mvcc.DedupEntry
	st.ScanRemembered(func(e *mvcc.DedupEntry) bool {
		es = append(es, e)
		return true
	})
	return es
}
