package ember

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// dedupWindow is how many log entries a request ID is remembered for. A retry comes within
// seconds of its original, far inside this window.
const dedupWindow = 100_000

// Bytes of the dedup table: every remembered request ID costs dedupRecordBytes (its ID and log
// index) plus its encoded result. A result of at most dedupShortResult bytes (a put or delete
// without a previous value, a lease grant, any failure) is always held; the longer ones share
// the budget (WithDedupResultBytes) and are replaced, oldest first, by a short result that says
// only "applied at revision R, result not held" (wire.CodeResultNotHeld). The table thus holds
// at most dedupWindow × (dedupRecordBytes + dedupShortResult) bytes plus the budget.
const (
	dedupRecordBytes = 24
	dedupShortResult = 32
)

// fsm is the raft state machine: it applies commands to the MVCC state, keeps its own applied
// index (raft's AppliedIndex runs ahead of the FSM), and hands out read views.
//
// Concurrency: raft calls ApplyBatch, Snapshot and Restore from one goroutine. Readers call view
// and waitApplied from any goroutine.
type fsm struct {
	log hclog.Logger

	// mu guards st and the dedup fields below, and is held for a whole apply batch or one
	// compaction step.
	// Lock order: fsm.mu, then watchHub.mu.
	mu         sync.Mutex
	st         *mvcc.State
	dedupOrder []dedupRef // request IDs in apply order, for expiry; live from dedupHead on
	dedupHead  int
	dedupFull  int   // dedupOrder from here on may hold results longer than dedupShortResult
	dedupLong  int64 // bytes of the results longer than dedupShortResult: at most dedupBudget
	dedupBytes int64 // bytes of the whole table, as the dedupRecordBytes comment counts them

	// dedupBudget caps dedupLong (WithDedupResultBytes); set before raft starts.
	//
	// It is a local setting, yet the table is replicated state. That is safe because the budget
	// only decides whether a retry is answered with its full result or with CodeResultNotHeld:
	// which request IDs are remembered, and so whether a command applies, depends on log
	// indexes alone (dedupWindow), the same on every member. Members with equal budgets make
	// the same choices (by result sizes and log order), hold identical tables and write
	// identical snapshots; a member with a different budget answers some retries differently,
	// both answers honest, and trims a restored snapshot's table to its own budget.
	dedupBudget int64
	dedupSize   atomic.Int64 // dedupBytes after the last batch, for Status and metrics

	applied    atomic.Uint64 // index of the last entry applied to st
	appliedSig signal        // fired after every batch

	current atomic.Pointer[readView]

	// sizeInUse is st.Size() after the last batch or compaction step: the space quota reads it on
	// every write.
	sizeInUse atomic.Int64

	compactWake  chan struct{} // capacity 1: a compaction was applied and its removal is pending
	compactedSig signal        // fired when a pending removal completes, and on Restore

	// Observers, set before raft starts and never changed.
	watch  *watchHub
	lessor *lessor

	metrics *metrics // nil without WithMetricsRegisterer; set before raft starts

	// corrupt stops the member when an entry fails its checksum: this member's copy of the
	// log is damaged, and applying anything, or skipping the entry, would make its state
	// diverge. It does not return (it ends raft's apply goroutine). Set before raft starts.
	corrupt func(err error)
}

type dedupRef struct {
	index uint64
	id    wire.RequestID
}

// readView is an immutable copy of the state at an applied index. Any number of goroutines read
// it without locks.
type readView struct {
	st      *mvcc.State
	applied uint64
}

func newFSM(log hclog.Logger, watch *watchHub, lessor *lessor) *fsm {
	return &fsm{log: log, st: mvcc.New(), watch: watch, lessor: lessor, dedupBudget: defaultDedupResultBytes,
		compactWake: make(chan struct{}, 1)}
}

// Apply applies one entry; raft calls ApplyBatch instead, but the interface requires it.
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies a batch of committed entries. It never blocks on a consumer: watch events
// go into bounded per-watcher queues, and lease changes into the lessor's queue.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	start := f.metrics.start()
	out := make([]any, len(logs))
	var revs []revEvents
	var leaseChanges []leaseChange
	var damaged error
	f.mu.Lock()
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue // configuration entries only advance the applied index
		}
		res, evs, lc, err := f.applyCommand(l)
		if err != nil {
			// Publish what came before the damaged entry, then stop.
			logs, damaged = logs[:i], fmt.Errorf("%w: raft log entry %d: %w", ErrCorrupt, l.Index, err)
			break
		}
		out[i] = res
		if len(evs) > 0 {
			revs = append(revs, revEvents{rev: res.Revision, events: evs})
		}
		leaseChanges = append(leaseChanges, lc...)
	}
	if len(logs) > 0 {
		f.applied.Store(logs[len(logs)-1].Index)
	}
	f.sizeInUse.Store(f.st.Size())
	f.dedupSize.Store(f.dedupBytes)
	if len(revs) > 0 {
		f.watch.notify(revs, f.st.Rev())
	}
	f.mu.Unlock()
	if len(leaseChanges) > 0 {
		f.lessor.observe(leaseChanges)
	}
	f.metrics.appliedBatch(start)
	f.appliedSig.fire()
	if damaged != nil {
		f.log.Error("raft log entry failed its checksum; stopping this member", "error", damaged)
		f.corrupt(damaged)
	}
	return out
}

// leaseChange tells the lessor what the log did to a lease.
type leaseChange struct {
	id          int64
	ttl         int64 // granted TTL, for a grant
	revoked     bool
	checkpoint  bool
	remainingMs int64 // for a checkpoint
}

// applyCommand applies one command entry. It fails only for an entry that does not match its
// checksum, which must not be applied.
func (f *fsm) applyCommand(l *raft.Log) (*wire.Result, []mvcc.Event, []leaseChange, error) {
	cmd, err := wire.UnmarshalCommand(l.Data)
	if errors.Is(err, wire.ErrChecksum) {
		return nil, nil, nil, err
	}
	if err != nil {
		// Intact but undecodable: only members append to the log and they validate what they
		// propose, so this is a bug. Failing the one entry keeps every member identical.
		f.log.Error("undecodable log entry", "index", l.Index, "error", err)
		return &wire.Result{Code: wire.CodeMalformed, Revision: f.st.Rev()}, nil, nil, nil
	}
	if !cmd.ID.IsZero() {
		if e, ok := f.st.Remembered(cmd.ID); ok {
			res, err := wire.UnmarshalResult(e.Result)
			if err != nil {
				// Encoded by remember or checked by Restore: this is a bug. The same answer on
				// every member keeps them identical.
				f.log.Error("undecodable remembered result", "index", l.Index, "error", err)
				res = &wire.Result{Code: wire.CodeMalformed, Revision: f.st.Rev()}
			}
			return res, nil, nil, nil
		}
	}
	if cmd.RetryFloor > 0 && l.Index >= cmd.RetryFloor+dedupWindow {
		// The first attempt, if it was applied, is no longer remembered: refuse the retry so
		// that the command never applies twice. The proposer reports an unknown outcome.
		res := &wire.Result{Code: wire.CodeTimeout, Revision: f.st.Rev()}
		f.remember(cmd.ID, l.Index, res)
		return res, nil, nil, nil
	}
	res, evs, lc := f.execute(cmd)
	if !cmd.ID.IsZero() {
		f.remember(cmd.ID, l.Index, res)
	}
	return res, evs, lc, nil
}

func (f *fsm) execute(cmd *wire.Command) (*wire.Result, []mvcc.Event, []leaseChange) {
	st := f.st
	switch cmd.Kind {
	case wire.KindTxn:
		if code := mvcc.ValidateTxn(cmd.Txn, 0); code != wire.CodeOK {
			return &wire.Result{Code: code, Revision: st.Rev()}, nil, nil
		}
		res, evs := st.ApplyTxn(cmd.Txn)
		return res, evs, nil
	case wire.KindCompact:
		code := st.Compact(cmd.Revision)
		if code == wire.CodeOK {
			select {
			case f.compactWake <- struct{}{}:
			default: // already woken: it runs until nothing is pending
			}
		}
		return &wire.Result{Code: code, Revision: st.Rev()}, nil, nil
	case wire.KindLeaseGrant:
		code := st.GrantLease(cmd.LeaseID, cmd.LeaseTTL)
		res := &wire.Result{Code: code, Revision: st.Rev(), LeaseID: cmd.LeaseID, LeaseTTL: cmd.LeaseTTL}
		if code != wire.CodeOK {
			return res, nil, nil
		}
		return res, nil, []leaseChange{{id: cmd.LeaseID, ttl: cmd.LeaseTTL}}
	case wire.KindLeaseRevoke:
		code, evs := st.RevokeLease(cmd.LeaseID)
		res := &wire.Result{Code: code, Revision: st.Rev()}
		if code != wire.CodeOK {
			return res, nil, nil
		}
		return res, evs, []leaseChange{{id: cmd.LeaseID, revoked: true}}
	case wire.KindLeaseCheckpoint:
		applied := st.CheckpointLeases(cmd.Checkpoints)
		lcs := make([]leaseChange, len(applied))
		for i, cp := range applied {
			lcs[i] = leaseChange{id: cp.ID, checkpoint: true, remainingMs: cp.RemainingMs}
		}
		return &wire.Result{Revision: st.Rev()}, nil, lcs
	default: // wire.KindLeaderStart: a marker; its apply tells the new leader the log is caught up
		return &wire.Result{Revision: st.Rev()}, nil, nil
	}
}

// remember stores a result for deduplication, expires entries older than the window, and keeps
// the long results within the budget.
func (f *fsm) remember(id wire.RequestID, index uint64, res *wire.Result) {
	b := res.Marshal(nil)
	if len(b) > dedupShortResult && int64(len(b)) > f.dedupBudget {
		// Held, it would push every other long result out and then itself.
		b = shortResult(res.Code, res.Revision)
	}
	f.st.Remember(&mvcc.DedupEntry{ID: id, Index: index, Result: b})
	f.count(b, 1)
	f.dedupOrder = append(f.dedupOrder, dedupRef{index: index, id: id})
	for f.dedupHead < len(f.dedupOrder) && f.dedupOrder[f.dedupHead].index+dedupWindow < index {
		if e, ok := f.st.Forget(f.dedupOrder[f.dedupHead].id); ok {
			f.count(e.Result, -1)
		}
		f.dedupHead++
	}
	f.dedupFull = max(f.dedupFull, f.dedupHead)
	f.trimResults()
	// Expired refs are dropped from the front in bulk once they are half the slice: shifting
	// the live ones on every apply would copy the whole window (100k refs) per write.
	if f.dedupHead > 0 && 2*f.dedupHead >= len(f.dedupOrder) {
		f.dedupOrder = f.dedupOrder[:copy(f.dedupOrder, f.dedupOrder[f.dedupHead:])]
		f.dedupFull -= f.dedupHead
		f.dedupHead = 0
	}
}

// count adds (sign 1) or removes (sign -1) one remembered result from the table's byte counts.
func (f *fsm) count(result []byte, sign int64) {
	n := int64(len(result))
	f.dedupBytes += sign * (dedupRecordBytes + n)
	if n > dedupShortResult {
		f.dedupLong += sign * n
	}
}

// trimResults replaces the oldest long results by short ones until the long ones fit the
// budget. Every entry before dedupFull holds a short result, so each entry is looked at once.
func (f *fsm) trimResults() {
	for f.dedupLong > f.dedupBudget && f.dedupFull < len(f.dedupOrder) {
		e, ok := f.st.Remembered(f.dedupOrder[f.dedupFull].id)
		f.dedupFull++
		if !ok || len(e.Result) <= dedupShortResult {
			continue
		}
		code, rev, err := wire.ResultHead(e.Result)
		if err != nil {
			// Encoded by remember or checked by readSnapshot: this is a bug. CodeMalformed, as
			// applyCommand answers such an entry, is the same on every member.
			f.log.Error("undecodable remembered result", "index", e.Index, "error", err)
			code, rev = wire.CodeMalformed, f.st.Rev()
		}
		short := shortResult(code, rev)
		// A new entry, not e changed in place: read views and snapshots share e.
		f.st.Remember(&mvcc.DedupEntry{ID: e.ID, Index: e.Index, Result: short})
		f.count(e.Result, -1)
		f.count(short, 1)
	}
}

// shortResult is what is held of a result that is not held in full: a failure keeps its code,
// which says all there is (failures carry no payload); a success becomes CodeResultNotHeld at
// its revision, so that a retry learns it was applied but never gets a made-up response.
func shortResult(code wire.Code, rev int64) []byte {
	if code == wire.CodeOK {
		code = wire.CodeResultNotHeld
	}
	return (&wire.Result{Code: code, Revision: rev}).Marshal(nil)
}

// compactStepRecords bounds the changes one compaction step visits, each removing at most two
// versions, and so how long it holds mu (a few milliseconds at most): that is the most a
// compaction delays an apply or a read.
const compactStepRecords = 500

// runCompactor does the removals that applied compactions leave pending, one step at a time,
// until ctx is done. Being off the apply goroutine, it also finishes when no writes come.
func (f *fsm) runCompactor(ctx context.Context) {
	for {
		select {
		case <-f.compactWake:
		case <-ctx.Done():
			return
		}
		for ctx.Err() == nil && f.compactStep() {
			runtime.Gosched() // let a waiting apply or reader take mu between steps
		}
	}
}

// compactStep runs one step of the pending removal under mu and reports whether more remains.
func (f *fsm) compactStep() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.st.CompactPending() {
		return false
	}
	more := f.st.CompactStep(compactStepRecords)
	f.sizeInUse.Store(f.st.Size())
	if !more {
		// Read views taken since are as current but still hold the removed records; drop
		// the cached one so that Status shows the size the removal freed.
		f.current.Store(nil)
		f.compactedSig.fire()
	}
	return more
}

// waitCompacted blocks until no removal is pending, as WithCompactPhysical asks.
func (f *fsm) waitCompacted(ctx context.Context) error {
	for {
		ch := f.compactedSig.wait()
		f.mu.Lock()
		pending := f.st.CompactPending()
		f.mu.Unlock()
		if !pending {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// view returns a read view at least as new as the last applied batch.
func (f *fsm) view() *readView {
	if v := f.current.Load(); v != nil && v.applied == f.applied.Load() {
		return v
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	applied := f.applied.Load()
	if v := f.current.Load(); v != nil && v.applied == applied {
		return v
	}
	v := &readView{st: f.st.Clone(), applied: applied}
	f.current.Store(v)
	return v
}

// waitApplied blocks until the state has applied index idx. A cancelled ctx abandons the wait.
func (f *fsm) waitApplied(ctx context.Context, idx uint64) error {
	for {
		ch := f.appliedSig.wait()
		if f.applied.Load() >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// setState replaces the state, rebuilds the expiry order of its request IDs and their byte
// counts, and trims the results to this member's budget (a snapshot from a member with a larger
// one may hold more). Callers hold f.mu (or own f alone); st must be f's own.
func (f *fsm) setState(st *mvcc.State) {
	f.st = st
	f.dedupOrder, f.dedupHead, f.dedupFull = f.dedupOrder[:0], 0, 0
	f.dedupBytes, f.dedupLong = 0, 0
	st.ScanRemembered(func(e *mvcc.DedupEntry) bool {
		f.dedupOrder = append(f.dedupOrder, dedupRef{index: e.Index, id: e.ID})
		f.count(e.Result, 1)
		return true
	})
	sortDedup(f.dedupOrder)
	f.trimResults()
	f.dedupSize.Store(f.dedupBytes)
}

// Snapshot captures the state in O(1); Persist writes it while applies go on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &fsmSnapshot{st: f.st.Clone(), applied: f.applied.Load(), metrics: f.metrics}, nil
}

// Restore replaces the whole state with a snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, applied, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.setState(st)
	f.applied.Store(applied)
	f.sizeInUse.Store(st.Size())
	f.current.Store(nil)
	f.watch.restored(st)
	f.mu.Unlock()
	f.lessor.restored()
	f.appliedSig.fire()
	f.compactedSig.fire() // a snapshot holds no pending removal
	return nil
}

type fsmSnapshot struct {
	st      *mvcc.State
	applied uint64

	metrics *metrics
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	defer s.metrics.snapshotPersisted(s.metrics.start())
	if err := mvcc.WriteSnapshot(sink, s.st, s.applied); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// sortDedup orders dedup references by apply index, the order they expire in.
func sortDedup(refs []dedupRef) {
	slices.SortFunc(refs, func(a, b dedupRef) int {
		switch {
		case a.index < b.index:
			return -1
		case a.index > b.index:
			return 1
		}
		return 0
	})
}

// readSnapshot decodes a snapshot stream (raft's, or a backup) into a fresh state; a damaged one
// is refused with ErrCorrupt.
func readSnapshot(r io.Reader) (*mvcc.State, uint64, error) {
	st, applied, err := mvcc.ReadSnapshot(r)
	if errors.Is(err, mvcc.ErrCorrupt) {
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return st, applied, err
}
