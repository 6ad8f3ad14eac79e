// Package raftlog opens the raft log of an ember data dir: raft's log and stable stores on
// hashicorp/raft-boltdb (bolt.go) or hashicorp/raft-wal (wal.go, every segment verified on open
// by wal_verify.go), and the layers raft sees in front of them: a cache of recent entries, the
// tests' fault injection, the append timing behind ember's WAL fsync metric (timing.go) and,
// outermost, the guard that turns the storage failures raft would panic on into a fail-stop of
// the member (guard.go). Open assembles that chain; nothing else does.
//
// Damage found on disk is reported wrapping ErrCorrupt, which is ember.ErrCorrupt.
// Nothing here registers metrics or knows ember's Store: the member's side comes in through
// Options.
package raftlog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/ember-kv/ember/internal/corrupt"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/types"
	"go.etcd.io/bbolt"
)

// ErrCorrupt is wrapped by every error that reports damage to a log on disk: it is
// ember.ErrCorrupt (internal/corrupt).
var ErrCorrupt = corrupt.Err

// Kind is the store a data dir keeps its raft log in; ember.LogStore documents the trade-off.
type Kind int

const (
	// Bolt keeps the log with raft's term and vote in one bbolt file, BoltFile
	// (hashicorp/raft-boltdb/v2).
	Bolt Kind = iota + 1
	// WAL keeps the log in hashicorp/raft-wal's segment files under WALDir, and the term and
	// vote in a small bbolt file beside them.
	WAL
)

func (k Kind) String() string {
	switch k {
	case Bolt:
		return "bolt"
	case WAL:
		return "wal"
	}
	return fmt.Sprintf("LogStore(%d)", int(k)) // ember's name for a Kind
}

const (
	// BoltFile is where a Bolt log lives in its data dir.
	BoltFile = "raft.db"
	// WALDir is where a WAL log lives in its data dir.
	WALDir = "wal"
)

// logCacheSize is how many recent entries are served from memory: followers catching up and the
// FSM read from it instead of the disk.
const logCacheSize = 512

// Options are what a member adds to its log; the zero value opens the bare log (a restore).
type Options struct {
	// Existing says the dir held a member before this open: its log must be there.
	Existing bool
	// Logger receives the WAL's warnings and the guard's error; nil discards them.
	Logger hclog.Logger
	// VFS is what raft-wal opens its segment files through; nil is the OS. Tests inject faults.
	VFS types.VFS
	// Wrap, if set, wraps the log and stable stores inside the timing and the guard; tests use
	// it to inject disk faults.
	Wrap func(raft.LogStore, raft.StableStore) (raft.LogStore, raft.StableStore)
	// ObserveAppend, if set, is told how long each append to a log on disk took: a bbolt commit
	// or a WAL write, and so an fsync.
	ObserveAppend func(time.Duration)
	// FailStop, if set, puts the guard in front of the stores: once the log is armed (Arm), a
	// storage error raft would panic on calls FailStop once with the cause and ends raft's
	// goroutine. FailStop must stop the member without waiting for raft.
	FailStop func(cause error)
}

// Log is an open raft log: what raft is given as its log and stable stores.
type Log struct {
	// Logs and Stable are the whole chain; raft and everything else reads and writes them.
	Logs   raft.LogStore
	Stable raft.StableStore
	Kind   Kind // 0 in memory

	// files are where the log lives on disk, for its size: the bolt file, or the WAL's dir.
	files  string
	closer func() error // closes the log and stable stores; nil in memory
	guard  *failStop    // nil without Options.FailStop
}

// Open opens the log of the data dir dir, or an in-memory one when dir is "". want is the
// configured kind (0 = none configured); a dir keeps the kind it was created with.
func Open(dir string, want Kind, opts Options) (*Log, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	l, err := openStores(dir, want, opts)
	if err != nil {
		return nil, err
	}
	if opts.Wrap != nil {
		l.Logs, l.Stable = opts.Wrap(l.Logs, l.Stable)
	}
	if opts.ObserveAppend != nil && l.Kind != 0 {
		// Timing the whole log store, raft's write-through cache and any test wrapper
		// included: the cache adds only a memory copy to the disk write timed.
		l.Logs = &timedLog{LogStore: l.Logs, observe: opts.ObserveAppend}
	}
	if opts.FailStop != nil {
		l.guard = &failStop{stop: opts.FailStop, log: opts.Logger}
		l.Logs = guardedLog{l.Logs, l.guard, new(atomic.Bool)}
		l.Stable = guardedStable{l.Stable, l.guard}
	}
	return l, nil
}

// openStores opens the disk store of dir's kind behind raft's log cache.
func openStores(dir string, want Kind, opts Options) (*Log, error) {
	if dir == "" {
		mem := raft.NewInmemStore()
		return &Log{Logs: mem, Stable: mem}, nil
	}
	kind, err := dirKind(dir, want, opts.Existing)
	if err != nil {
		return nil, err
	}
	var l *Log
	switch kind {
	case WAL:
		vfs := opts.VFS
		if vfs == nil {
			vfs = walfs.New()
		}
		l, err = openWALLog(dir, vfs, opts.Logger, 0)
	default:
		l, err = openBoltLog(dir, opts.Existing)
	}
	if err != nil {
		return nil, err
	}
	cache, err := raft.NewLogCache(logCacheSize, l.Logs)
	if err != nil {
		l.Close()
		return nil, err
	}
	l.Logs = cache
	return l, nil
}

// dirKind decides which log store the dir uses: the one it already holds, else the one
// configured, else the WAL. A configured store that differs from the one on disk is refused, as
// is a member's dir that holds no log at all (it would start empty and serve stale or no data).
func dirKind(dir string, want Kind, existing bool) (Kind, error) {
	hasBolt := exists(filepath.Join(dir, BoltFile))
	hasWAL := exists(filepath.Join(dir, WALDir))
	var have Kind
	switch {
	case hasBolt && hasWAL:
		return 0, fmt.Errorf("%w: %s holds both a bbolt raft log (%s) and a WAL (%s)", ErrCorrupt, dir, BoltFile, WALDir)
	case hasBolt:
		have = Bolt
	case hasWAL:
		have = WAL
	case existing:
		return 0, fmt.Errorf("%w: %s: the raft log is missing from a member's data dir", ErrCorrupt, dir)
	}
	switch {
	case have == 0 && want == 0:
		return WAL, nil
	case have == 0:
		return want, nil
	case want != 0 && want != have:
		return 0, fmt.Errorf("ember: data dir %s holds a %s raft log, not the %s one configured: "+
			"WithLogStore applies to new data dirs (to change it, remove the member, empty its dir and add it again)", dir, have, want)
	}
	return have, nil
}

// OpenReadOnly opens dir's log for offline reading (ember's Dump), bare: no cache, no guard. A
// bolt log is opened read-only. bbolt takes a shared lock for that, which a running member's
// exclusive lock refuses; the timeout turns the wait into an error. A WAL is opened as a
// member's open would (verified, a torn tail cut) and is locked the same way by the member that
// runs it.
func OpenReadOnly(dir string) (*Log, error) {
	if exists(filepath.Join(dir, WALDir)) {
		return openWALLog(dir, walfs.New(), hclog.NewNullLogger(), 0)
	}
	path := filepath.Join(dir, BoltFile)
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("ember: dump: %s is not an ember data dir (no %s or %s)", dir, BoltFile, WALDir)
		}
		return nil, fmt.Errorf("ember: dump: %w", err)
	}
	logs, err := raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bbolt.Options{ReadOnly: true, Timeout: time.Second},
	})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("ember: dump: data dir %s in use by a running member; stop it first", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("ember: dump: open raft log %s: %w", path, err)
	}
	return &Log{Logs: logs, Stable: logs, Kind: Bolt, files: path, closer: logs.Close}, nil
}

// DiskSize is the size of the log on disk, or -1 in memory or when it cannot be read.
func (l *Log) DiskSize() int64 {
	switch l.Kind {
	case Bolt:
		if fi, err := os.Stat(l.files); err == nil {
			return fi.Size()
		}
	case WAL:
		return dirSize(l.files)
	}
	return -1
}

// Close closes the log and stable stores.
func (l *Log) Close() error {
	if l.closer == nil {
		return nil
	}
	return l.closer()
}

// IsMonotonic says whether the log store refuses gaps between indexes, which raft asks of a
// raft.MonotonicLogStore to clear the whole log after installing a snapshot; store wrappers
// pass the answer through.
func IsMonotonic(l raft.LogStore) bool {
	m, ok := l.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
