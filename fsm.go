package ember

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/mvcc"
)

// fsm is the raft state machine: it applies commands to the MVCC state, keeps its own applied
// index (raft's AppliedIndex runs ahead of the FSM), and hands out read views.
//
// Concurrency: raft calls ApplyBatch, Snapshot and Restore from one goroutine. Readers call view
// and waitApplied from any goroutine.
type fsm struct {
	log hclog.Logger

	// mu guards app (the state and its dedup table), and is held for a whole apply batch or
	// one compaction step.
	// Lock order: fsm.mu, then watchHub.mu.
	mu        sync.Mutex
	app       *mvcc.Applier
	dedupSize atomic.Int64 // app.DedupBytes() after the last batch, for Status and metrics

	applied    atomic.Uint64 // index of the last entry applied to st
	appliedSig signal        // fired after every batch

	current atomic.Pointer[readView]

	// sizeInUse is st.Size() after the last batch or compaction step: the space quota reads it on
	// every write.
	sizeInUse atomic.Int64

	compactWake  chan struct{} // capacity 1: a compaction was applied and its removal is pending
	compactedSig signal        // fired when a pending removal completes, and on Restore

	// valuesDir holds the file of the state's large values (mvcc.Values): one per state, a new
	// one for each restored snapshot. "" keeps every value in memory (a member without a data
	// dir). valuesFailing and defragmenting are guarded by mu.
	valuesDir     string
	inlineMax     int            // mvcc.InlineValueMax; tests store every value with 0
	valuesGen     atomic.Int64   // numbers the files
	valuesFailing bool           // the last SyncValues failed; logged once until one succeeds
	retiring      sync.WaitGroup // files of replaced states, closing once their readers are done
	// defragMu serializes Defragment calls. Lock order: defragMu, then mu.
	defragMu      sync.Mutex
	defragmenting bool // compaction steps wait, so that the file being copied loses nothing

	// Observers, set before raft starts and never changed.
	watch  *watchHub
	lessor *lessor

	metrics *metrics // nil without WithMetricsRegisterer; set before raft starts

	// corrupt stops the member when an entry fails its checksum: this member's copy of the
	// log is damaged, and applying anything, or skipping the entry, would make its state
	// diverge. It does not return (it ends raft's apply goroutine). Set before raft starts.
	corrupt func(err error)
}

// readView is an immutable copy of the state at an applied index. Any number of goroutines read
// it without locks.
type readView struct {
	st      *mvcc.State
	applied uint64
}

// newFSM returns a state machine on an empty state whose long dedup results share dedupBudget
// bytes (WithDedupResultBytes), with its values longer than inlineMax in a file in valuesDir
// ("" = in memory). What valuesDir held is removed: the raft log and snapshots rebuild it.
func newFSM(log hclog.Logger, watch *watchHub, lessor *lessor, dedupBudget int64, valuesDir string, inlineMax int) (*fsm, error) {
	f := &fsm{log: log, app: mvcc.NewApplier(log, dedupBudget), watch: watch, lessor: lessor,
		compactWake: make(chan struct{}, 1), valuesDir: valuesDir, inlineMax: inlineMax}
	if valuesDir == "" {
		return f, nil
	}
	if err := os.RemoveAll(valuesDir); err != nil {
		return nil, fmt.Errorf("ember: clear the values dir: %w", err)
	}
	if err := os.MkdirAll(valuesDir, 0o700); err != nil {
		return nil, fmt.Errorf("ember: create the values dir: %w", err)
	}
	vals, err := f.createValues()
	if err != nil {
		return nil, err
	}
	f.app.SetState(mvcc.NewOnDisk(vals))
	return f, nil
}

// createValues creates the next values file, for a new state or a defragmented copy.
func (f *fsm) createValues() (*mvcc.Values, error) {
	gen := f.valuesGen.Add(1)
	vals, err := mvcc.CreateValues(filepath.Join(f.valuesDir, fmt.Sprintf("values-%d.db", gen)), f.inlineMax)
	if err != nil {
		return nil, fmt.Errorf("ember: %w", err)
	}
	return vals, nil
}

// syncValues writes the values of the last batch or compaction step to the file. Callers hold
// mu. A failure loses nothing (the values stay in memory until a later call succeeds); it is
// logged when it starts and when it ends.
func (f *fsm) syncValues(st *mvcc.State) {
	err := st.SyncValues()
	switch {
	case err != nil && !f.valuesFailing:
		f.log.Error("cannot write values to the values file; holding them in memory", "error", err)
	case err == nil && f.valuesFailing:
		f.log.Info("values file writable again")
	}
	f.valuesFailing = err != nil
}

// retireValues removes a replaced state's file once the reads still open on it end; reads after
// that find no values and retry on the current state.
func (f *fsm) retireValues(vals *mvcc.Values) {
	if vals == nil {
		return
	}
	f.retiring.Add(1)
	go func() {
		defer f.retiring.Done()
		if err := vals.Discard(); err != nil {
			f.log.Warn("removing a replaced values file", "path", vals.Path(), "error", err)
		}
	}()
}

// defragment rewrites the values file without the pages compaction freed, and returns the bytes
// it gave back. Reads and writes go on: the values are copied from a pinned state, then the ones
// written meanwhile, and only the last of those copies and the switch to the new file hold mu.
// Compaction steps wait meanwhile.
func (f *fsm) defragment(ctx context.Context) (freed int64, err error) {
	if f.valuesDir == "" {
		return 0, nil
	}
	f.defragMu.Lock()
	defer f.defragMu.Unlock()
	f.mu.Lock()
	old := f.app.State().Values()
	f.defragmenting = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.defragmenting = false
		f.mu.Unlock()
		select {
		case f.compactWake <- struct{}{}:
		default:
		}
	}()
	vals, err := f.createValues()
	if err != nil {
		return 0, err
	}
	keep := false
	defer func() {
		if !keep {
			vals.Discard()
		}
	}()
	// Two passes outside mu (everything, then what was written during the first), so that
	// the pass under mu copies only the writes of the second.
	copied := int64(0)
	for range 2 {
		v, release, err := f.pinnedView()
		if err != nil {
			return 0, err
		}
		err = v.st.CopyValues(vals, copied)
		copied = v.st.Rev()
		release()
		if err != nil {
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	f.mu.Lock()
	st := f.app.State()
	if st.Values() != old {
		f.mu.Unlock()
		return 0, nil // a restored snapshot replaced the file with a new, compact one
	}
	f.syncValues(st)
	if err := st.CopyValues(vals, copied); err != nil {
		f.mu.Unlock()
		return 0, err
	}
	freed = old.Size() - vals.Size()
	st.ReplaceValues(vals)
	f.current.Store(nil) // the cached view reads the old file
	f.mu.Unlock()
	keep = true
	f.retireValues(old)
	return freed, nil
}

// valuesSize is the size of the values file; 0 without one.
func (f *fsm) valuesSize() int64 {
	f.mu.Lock()
	vals := f.app.State().Values()
	f.mu.Unlock()
	if vals == nil {
		return 0
	}
	return vals.Size()
}

// close closes the values file, leaving it for the next start to replace; raft has shut down.
func (f *fsm) close() error {
	f.mu.Lock()
	vals := f.app.State().Values()
	f.mu.Unlock()
	f.retiring.Wait()
	if vals == nil {
		return nil
	}
	return vals.Close()
}

// Apply applies one entry; raft calls ApplyBatch instead, but the interface requires it.
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies a batch of committed entries. It never blocks on a consumer: watch events
// go into bounded per-watcher queues, and lease changes into the lessor's queue.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	start := f.metrics.start()
	out := make([]any, len(logs))
	var revs []revEvents
	var leaseChanges []mvcc.LeaseChange
	var damaged error
	f.mu.Lock()
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue // configuration entries only advance the applied index
		}
		a, err := f.app.Apply(l.Index, l.Data)
		if err != nil {
			// Publish what came before the damaged entry, then stop.
			logs, damaged = logs[:i], fmt.Errorf("%w: raft log entry %d: %w", ErrCorrupt, l.Index, err)
			// An entry that failed its checksum changed nothing; one that found the values
			// file damaged may have changed the state, which is why the member stops.
			break
		}
		out[i] = a.Result
		if len(a.Events) > 0 {
			revs = append(revs, revEvents{rev: a.Result.Revision, events: a.Events})
		}
		leaseChanges = append(leaseChanges, a.Leases...)
		if a.Compacted {
			select {
			case f.compactWake <- struct{}{}:
			default: // already woken: it runs until nothing is pending
			}
		}
	}
	st := f.app.State()
	f.syncValues(st)
	if len(logs) > 0 {
		f.applied.Store(logs[len(logs)-1].Index)
	}
	f.sizeInUse.Store(st.Size())
	f.dedupSize.Store(f.app.DedupBytes())
	if len(revs) > 0 {
		f.watch.notify(revs, st.Rev())
	}
	f.mu.Unlock()
	if len(leaseChanges) > 0 {
		f.lessor.observe(leaseChanges)
	}
	f.metrics.appliedBatch(start)
	f.appliedSig.fire()
	if damaged != nil {
		f.log.Error("cannot apply a raft log entry; stopping this member", "error", damaged)
		f.corrupt(damaged)
	}
	return out
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
	st := f.app.State()
	if !st.CompactPending() || f.defragmenting {
		return false // Defragment wakes the compactor when it is done
	}
	more := st.CompactStep(compactStepRecords)
	f.syncValues(st)
	f.sizeInUse.Store(st.Size())
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
		pending := f.app.State().CompactPending()
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
	v := &readView{st: f.app.State().Clone(), applied: applied}
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

// pinnedView returns a view that reads its values through one read transaction of the values
// file, so that no compaction step removes a value from under it: for reads that must see every
// value of one state (backups, HashKV). Call release when done; until then the file keeps the
// pages compaction frees.
func (f *fsm) pinnedView() (v *readView, release func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.app.State().Pin()
	if err != nil {
		return nil, nil, err
	}
	return &readView{st: st, applied: f.applied.Load()}, st.Unpin, nil
}

// Snapshot captures the state in O(1) (a pinned clone); Persist writes it while applies go on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	v, release, err := f.pinnedView()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{st: v.st, applied: v.applied, release: release, metrics: f.metrics}, nil
}

// Restore replaces the whole state with a snapshot's, its values in a new file.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var vals *mvcc.Values
	if f.valuesDir != "" {
		var err error
		if vals, err = f.createValues(); err != nil {
			return err
		}
	}
	st, applied, err := mvcc.ReadSnapshotTo(rc, vals)
	if err != nil {
		if vals != nil {
			vals.Discard()
		}
		return err
	}
	f.mu.Lock()
	old := f.app.State().Values()
	f.app.SetState(st)
	f.dedupSize.Store(f.app.DedupBytes())
	f.applied.Store(applied)
	f.sizeInUse.Store(st.Size())
	f.current.Store(nil)
	f.watch.restored(st)
	f.mu.Unlock()
	f.retireValues(old)
	f.lessor.restored()
	f.appliedSig.fire()
	f.compactedSig.fire() // a snapshot holds no pending removal
	return nil
}

type fsmSnapshot struct {
	st      *mvcc.State // pinned
	applied uint64
	release func()

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

func (s *fsmSnapshot) Release() { s.release() }
