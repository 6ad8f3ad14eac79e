package ember

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

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

	// auth is the applied auth state (immutable), which the etcd gateway checks every request
	// against without taking a read view; nil until the first batch or restore.
	auth atomic.Pointer[mvcc.Auth]

	// sizeInUse is st.Size() after the last batch or compaction step: the space quota reads it on
	// every write.
	sizeInUse atomic.Int64

	compactWake  chan struct{} // capacity 1: a compaction was applied and its removal is pending
	compactedSig signal        // fired when a pending removal completes, and on Restore

	// The backend (backend.go): the state on disk at backendPath, "" for a member without a
	// data dir, whose state is in memory only. skipThrough is the raft index the backend was
	// at when loaded or restored: raft replays entries from its last snapshot, and those at or
	// below it are in the state already. It is set before raft starts, then only by Restore, on
	// raft's FSM goroutine. lastCommit, commitFailing and defragmenting are guarded by mu.
	// commitMu serializes commits (one batch written at a time, in order); lock order:
	// defragMu, commitMu, mu. commitWake (capacity 1) tells the committer a commit is due.
	backendPath   string
	inlineMax     int // mvcc.InlineValueMax; tests keep no value inline with 0
	skipThrough   uint64
	lastCommit    time.Time
	commitFailing bool // the last commit failed; logged once until one succeeds
	commitMu      sync.Mutex
	commitWake    chan struct{}
	retiring      sync.WaitGroup // backends of replaced states, closing once their readers are done
	// defragMu serializes Defragment calls. Lock order: defragMu, then mu.
	defragMu      sync.Mutex
	defragmenting bool // compaction steps wait, so that the backend being copied loses nothing

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
		if l.Type != raft.LogCommand || l.Index <= f.skipThrough {
			// Configuration entries only advance the applied index; entries at or below
			// skipThrough are in the state already (raft replays from its last snapshot).
			continue
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
	if len(logs) > 0 {
		f.applied.Store(max(f.applied.Load(), logs[len(logs)-1].Index))
	}
	mustWait := f.commitDue(st)
	f.sizeInUse.Store(st.Size())
	f.dedupSize.Store(f.app.DedupBytes())
	f.auth.Store(st.Auth())
	if len(revs) > 0 {
		f.watch.notify(revs, st.Rev(), st)
	}
	f.mu.Unlock()
	if len(leaseChanges) > 0 {
		f.lessor.observe(leaseChanges)
	}
	f.metrics.appliedBatch(start)
	f.appliedSig.fire()
	if mustWait {
		f.commit() // the backend is far behind: let it catch up before applying more
	}
	if damaged != nil {
		f.log.Error("cannot apply a raft log entry; stopping this member", "error", damaged)
		f.corrupt(damaged)
	}
	return out
}

// compactStepRecords bounds the keys one compaction step visits plus the versions it removes,
// and so how long it holds mu (a millisecond or so): that is the most a compaction delays an
// apply or a read.
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
		for ctx.Err() == nil {
			start := time.Now()
			more, commitDue := f.compactStep()
			if commitDue {
				// Commit the removals here, not by waking the committer: a removal far
				// faster than the disk would otherwise grow each commit, and the raft
				// log's syncs would queue behind ever larger writes of the file. A failure
				// is logged by commit; the removals stay for the next one.
				f.commit()
			}
			if !more {
				break
			}
			// Rest as long as the step took: applies and reads get mu at least half the
			// time (a mutex is not fair: a loop that retakes it at once starves them), and
			// the removal, far faster than etcd's, takes at most twice as long.
			select {
			case <-time.After(time.Since(start)):
			case <-ctx.Done():
			}
		}
	}
}

// compactStep runs one step of the pending removal under mu and reports whether more remains,
// and whether the removals not yet committed are due to be.
func (f *fsm) compactStep() (more, commitDue bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.app.State()
	if !st.CompactPending() || f.defragmenting {
		return false, false // Defragment wakes the compactor when it is done
	}
	more = st.CompactStep(compactStepRecords)
	commitDue = st.Backend() != nil && st.Uncommitted() >= commitRemovals
	f.sizeInUse.Store(st.Size())
	if !more {
		// Read views taken since are as current but still hold the removed records; drop
		// the cached one so that Status shows the size the removal freed.
		f.current.Store(nil)
		f.compactedSig.fire()
	}
	return more, commitDue
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

// pinnedView returns a view that reads its values through one read transaction of the backend,
// so that no compaction step removes a value from under it: for reads that must see every value
// of one state (backups, HashKV, Defragment). Call release when done; until then the file keeps
// the pages compaction frees.
func (f *fsm) pinnedView() (v *readView, release func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.app.State().Pin()
	if err != nil {
		return nil, nil, err
	}
	return &readView{st: st, applied: f.applied.Load()}, st.Unpin, nil
}

// Snapshot captures the state for raft. With a backend the backend is the state: Snapshot
// commits it, and the snapshot is a marker of the index it is at (markerSnapshot); a member
// that needs the state is sent the backend (snapshotStore). Without one, the snapshot is a
// pinned clone, written by Persist while applies go on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if f.backendPath != "" {
		// On raft's FSM goroutine: nothing applies meanwhile, so the commit is at applied.
		if err := f.commit(); err != nil {
			return nil, err
		}
		return &markerSnapshot{applied: f.applied.Load(), metrics: f.metrics}, nil
	}
	v, release, err := f.pinnedView()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{st: v.st, applied: v.applied, release: release, metrics: f.metrics}, nil
}

// Restore replaces the whole state with a snapshot's (restoreState).
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, applied, err := f.restoreState(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	old := f.app.State().Backend()
	f.app.SetState(st)
	f.dedupSize.Store(f.app.DedupBytes())
	f.applied.Store(applied)
	// Raft goes on from the snapshot's index; a backend stream may be further on.
	f.skipThrough = applied
	f.lastCommit = time.Now()
	f.sizeInUse.Store(st.Size())
	f.current.Store(nil)
	f.auth.Store(st.Auth())
	f.watch.restored(st)
	f.mu.Unlock()
	if old != st.Backend() {
		f.retireBackend(old)
	}
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
