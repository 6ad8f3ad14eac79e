package ember

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/raftlog"
)

// LogStore selects how a member keeps its raft log, term and vote on disk. It applies when a
// data dir is created; a dir keeps the log store it was created with.
type LogStore int

const (
	// LogStoreBolt keeps the raft log with raft's term and vote in one bbolt file, raft.db, as
	// hashicorp/raft-boltdb/v2 does: the default of data dirs created before LogStoreWAL was.
	// Each append is one bbolt commit, two fdatasyncs; raft.db is vetted page by page before it
	// is opened.
	LogStoreBolt LogStore = iota + 1
	// LogStoreWAL keeps the raft log in hashicorp/raft-wal's preallocated segment files under
	// wal/, each batch of entries with a checksum, and the term and vote in a small bbolt file
	// beside them. The default for a new data dir. Each append is one fdatasync and no page
	// rewrites: on 3 members, 2.8× the put rate of LogStoreBolt at one client and 2× at 16
	// (bench/RESULTS.md, run 8). Segments are preallocated (64 MiB each), so a member takes that
	// much disk from its first write.
	//
	// Damage is handled as etcd handles its WAL: on open every segment is read and every
	// checksum verified; a write torn by a crash at the very end of the last segment is cut, and
	// any other damage (a checksum failure followed by valid data, a damaged sealed segment, a
	// gap in the indexes) refuses the open with ErrCorrupt. Opening reads the whole log once.
	LogStoreWAL
)

func (k LogStore) String() string { return raftlog.Kind(k).String() }

// raftStores holds raft's log and stable stores (internal/raftlog opens the whole chain) and its
// snapshot store: on disk under dir, or in memory when dir is "".
type raftStores struct {
	*raftlog.Log
	snaps raft.SnapshotStore
}

// openRaftStores opens the stores of the data dir dir with the log store cfg configures. opts
// are what a running member adds to its log (see logOptions); Restore opens the bare log.
func openRaftStores(dir string, cfg *config, log hclog.Logger, opts raftlog.Options) (*raftStores, error) {
	opts.Logger, opts.VFS = log, cfg.walVFS
	l, err := raftlog.Open(dir, raftlog.Kind(cfg.logStore), opts)
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return &raftStores{Log: l, snaps: raft.NewInmemSnapshotStore()}, nil
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, cfg.snapshotRetain, log.Named("snapshot"))
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("ember: open snapshot store: %w", err)
	}
	return &raftStores{Log: l, snaps: &snapshotStore{SnapshotStore: snaps}}, nil
}

// logOptions are the member's hooks in its raft log: the guard's fail-stop, the append timing
// when metrics are on, and the tests' fault injection. existing says the dir held a member
// before this open.
func (s *Store) logOptions(existing bool) raftlog.Options {
	opts := raftlog.Options{Existing: existing, Wrap: s.cfg.wrapStores, FailStop: s.storageFailed}
	if s.cfg.metrics != nil {
		// s.metrics is set before the first append (instrument runs before bootstrap).
		opts.ObserveAppend = func(d time.Duration) { s.metrics.logAppended(d) }
	}
	return opts
}

// storageFailed stops the member on a storage failure raft cannot survive (or a damaged entry
// in its own log), so that calls on it return ErrStopped wrapping the cause.
func (s *Store) storageFailed(cause error) {
	err := fmt.Errorf("%w: %w", ErrStopped, cause)
	s.failure.Store(&err)
	go s.Close()
}

// newRaftGuarded calls raft.NewRaft, which reads the log on the caller's goroutine and panics on
// a read error there: on Open's goroutine the panic can be recovered and reported.
func newRaftGuarded(conf *raft.Config, fsm raft.FSM, logs raft.LogStore, stable raft.StableStore,
	snaps raft.SnapshotStore, trans raft.Transport) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: reading the raft log: %v", ErrCorrupt, p)
		}
	}()
	return raft.NewRaft(conf, fsm, logs, stable, snaps, trans)
}
