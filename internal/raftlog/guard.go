package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// hashicorp/raft v1.7.3 panics in its own goroutines on some storage errors: when it cannot
// persist a new term (setCurrentTerm, raft.go:2144) and when it cannot read a committed entry
// back (processLogs, raft.go:1329). A panic in a raft goroutine takes the whole host process
// down, and ember cannot recover it from outside that goroutine. The guard below sits outermost
// around the log and stable stores and turns those two errors into a fail-stop of this member
// only: it hands the cause to Options.FailStop, which records it and starts the member's Close,
// and ends the raft goroutine with runtime.Goexit (which runs its deferred bookkeeping, so
// raft's shutdown completes). Writes that raft handles itself (StoreLogs on leader or follower,
// votes) keep returning errors to raft.

// failStop stops the member once, on the first storage error raft cannot survive.
type failStop struct {
	stop  func(cause error) // Options.FailStop
	log   hclog.Logger
	armed atomic.Bool // set once raft runs (Log.Arm); during Open, errors go back to Open instead
	once  sync.Once
}

var keyCurrentTerm = []byte("CurrentTerm") // raft's stable-store key for the current term

func (fs *failStop) fail(op string, err error) {
	if !fs.armed.Load() {
		return
	}
	fs.once.Do(func() {
		fs.log.Error("storage failed; stopping this member to keep the host process alive", "op", op, "error", err)
		fs.stop(fmt.Errorf("storage failure in %s: %w", op, err))
	})
	runtime.Goexit()
}

// Arm makes the guard stop the member on the storage errors raft cannot survive; call it once
// raft runs. Before, such errors go back to the caller (ember's Open). It needs
// Options.FailStop.
func (l *Log) Arm() { l.guard.armed.Store(true) }

// Halt stops the member, as the guard does, when a committed entry fails its checksum in its
// own log: it hands err to Options.FailStop (if nothing stopped the member before) and ends the
// calling goroutine, raft's apply goroutine, whose end keeps raft from counting the entry as
// applied. It needs Options.FailStop and does not return.
func (l *Log) Halt(err error) {
	l.guard.once.Do(func() { l.guard.stop(err) })
	runtime.Goexit()
}

type guardedStable struct {
	raft.StableStore
	fs *failStop
}

func (g guardedStable) SetUint64(key []byte, v uint64) error {
	err := g.StableStore.SetUint64(key, v)
	if err != nil && bytes.Equal(key, keyCurrentTerm) {
		g.fs.fail("persisting the raft term", err)
	}
	return err
}

// guardedLog also covers a gap in raft's follower path (raft.go:1524-1544): a follower that
// truncates a conflicting suffix and then fails to append the leader's entries keeps the
// truncated index as its last index, so every later append looks up an entry that is gone and
// fails; the member falls behind silently for good. Its state is only right again after a
// restart, which rereads the last index from disk, so a failed append right after a truncation
// is made a fail-stop: the host sees the member stop with the cause and reopens it.
type guardedLog struct {
	raft.LogStore
	fs *failStop
	// tailCut is set when DeleteRange removed the log's last entry and cleared by the next
	// append. Only raft's own goroutine deletes and appends, but GetLog readers run elsewhere,
	// hence the atomic.
	tailCut *atomic.Bool
}

func (g guardedLog) DeleteRange(min, max uint64) error {
	last, err := g.LogStore.LastIndex()
	if err != nil {
		return err
	}
	if err := g.LogStore.DeleteRange(min, max); err != nil {
		return err
	}
	// Compaction deletes a prefix and leaves the tail; a conflict truncation (or a snapshot
	// install that drops the whole log) takes the tail, and raft's idea of its last index is
	// only right if the append that follows succeeds.
	if max >= last {
		g.tailCut.Store(true)
	}
	return nil
}

func (g guardedLog) IsMonotonic() bool { return IsMonotonic(g.LogStore) }

func (g guardedLog) StoreLog(l *raft.Log) error { return g.StoreLogs([]*raft.Log{l}) }

func (g guardedLog) StoreLogs(ls []*raft.Log) error {
	err := g.LogStore.StoreLogs(ls)
	if g.tailCut.Swap(false) && err != nil {
		g.fs.fail("appending raft log entries after truncating a conflicting suffix", err)
	}
	return err
}

func (g guardedLog) GetLog(index uint64, l *raft.Log) error {
	err := g.LogStore.GetLog(index, l)
	// A missing entry is normal (compacted: the follower gets a snapshot); any other read
	// error is a disk failure that raft's apply path would panic on.
	if err != nil && !errors.Is(err, raft.ErrLogNotFound) {
		g.fs.fail(fmt.Sprintf("reading raft log entry %d", index), err)
	}
	return err
}
