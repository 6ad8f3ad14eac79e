package ember

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/types"
	"go.etcd.io/bbolt"
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

func (k LogStore) String() string {
	switch k {
	case LogStoreBolt:
		return "bolt"
	case LogStoreWAL:
		return "wal"
	}
	return fmt.Sprintf("LogStore(%d)", int(k))
}

// raftStores holds raft's log, stable and snapshot stores: on disk under dir, or in memory when
// dir is "".
type raftStores struct {
	log    raft.LogStore
	stable raft.StableStore
	snaps  raft.SnapshotStore
	kind   LogStore // 0 in memory
	// files are where the log lives on disk, for the size reported by Status and metrics: the
	// bolt file, or the WAL's dir.
	files  string
	closer func() error // closes the log and stable stores; nil in memory
}

// logCacheSize is how many recent entries are served from memory: followers catching up and the
// FSM read from it instead of the disk.
const logCacheSize = 512

// openRaftStores opens the stores of the data dir dir. want is the configured log store (0 =
// none configured); existing says the dir held a member before this open (its member-id file
// was there).
func openRaftStores(dir string, want LogStore, retain int, walVFS types.VFS, log hclog.Logger, existing bool) (*raftStores, error) {
	if dir == "" {
		mem := raft.NewInmemStore()
		return &raftStores{log: mem, stable: mem, snaps: raft.NewInmemSnapshotStore()}, nil
	}
	kind, err := dirLogStore(dir, want, existing)
	if err != nil {
		return nil, err
	}
	var st *raftStores
	switch kind {
	case LogStoreWAL:
		if walVFS == nil {
			walVFS = walfs.New()
		}
		st, err = openWALStoresOn(dir, walVFS, log, 0)
	default:
		st, err = openBoltStores(dir, existing)
	}
	if err != nil {
		return nil, err
	}
	cache, err := raft.NewLogCache(logCacheSize, st.log)
	if err != nil {
		st.close()
		return nil, err
	}
	st.log = cache
	st.snaps, err = raft.NewFileSnapshotStoreWithLogger(dir, retain, log.Named("snapshot"))
	if err != nil {
		st.close()
		return nil, fmt.Errorf("ember: open snapshot store: %w", err)
	}
	return st, nil
}

// dirLogStore decides which log store the dir uses: the one it already holds, else the one
// configured, else the WAL. A configured store that differs from the one on disk is refused, as
// is a member's dir that holds no log at all (it would start empty and serve stale or no data).
func dirLogStore(dir string, want LogStore, existing bool) (LogStore, error) {
	hasBolt := fileExists(filepath.Join(dir, boltFileName))
	hasWAL := fileExists(filepath.Join(dir, walDir))
	var have LogStore
	switch {
	case hasBolt && hasWAL:
		return 0, fmt.Errorf("%w: %s holds both a bbolt raft log (%s) and a WAL (%s)", ErrCorrupt, dir, boltFileName, walDir)
	case hasBolt:
		have = LogStoreBolt
	case hasWAL:
		have = LogStoreWAL
	case existing:
		return 0, fmt.Errorf("%w: %s: the raft log is missing from a member's data dir", ErrCorrupt, dir)
	}
	switch {
	case have == 0 && want == 0:
		return LogStoreWAL, nil
	case have == 0:
		return want, nil
	case want != 0 && want != have:
		return 0, fmt.Errorf("ember: data dir %s holds a %s raft log, not the %s one configured: "+
			"WithLogStore applies to new data dirs (to change it, remove the member, empty its dir and add it again)", dir, have, want)
	}
	return have, nil
}

const boltFileName = "raft.db"

func openBoltStores(dir string, existing bool) (*raftStores, error) {
	path := filepath.Join(dir, boltFileName)
	// bbolt would create a missing or empty file afresh and the member would start from nothing.
	if existing {
		if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
			return nil, fmt.Errorf("%w: %s: the raft log is missing or empty in a member's data dir", ErrCorrupt, path)
		}
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		if err := checkBoltFile(path); err != nil {
			return nil, err
		}
	}
	bolt, err := openBolt(path)
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("ember: data dir %s is in use by another process", dir)
		}
		if errors.Is(err, ErrCorrupt) {
			return nil, err
		}
		return nil, fmt.Errorf("ember: open raft log %s: %w", path, err)
	}
	return &raftStores{log: bolt, stable: bolt, kind: LogStoreBolt, files: path, closer: bolt.Close}, nil
}

// openBolt opens raft's bbolt file. checkBoltFile has vetted its structure; a fault or panic
// that still comes out of bbolt's open on this goroutine (a page damaged in a way the check
// does not model) is reported as corruption rather than crashing the host.
func openBolt(path string) (_ *raftboltdb.BoltStore, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s: opening the raft log: %v", ErrCorrupt, path, p)
		}
	}()
	return raftboltdb.New(raftboltdb.Options{
		Path: path,
		BoltOptions: &bbolt.Options{
			// The freelist is rebuilt on open instead of written on every commit: appends stay
			// fast after log truncation leaves many free pages.
			NoFreelistSync: true,
			FreelistType:   bbolt.FreelistMapType,
			// A second Open of the same dir fails instead of blocking forever on the file lock.
			Timeout: time.Second,
		},
	})
}

// diskSize is the size of the raft log on disk, or -1 in memory or when it cannot be read.
func (r *raftStores) diskSize() int64 {
	switch r.kind {
	case LogStoreBolt:
		if fi, err := os.Stat(r.files); err == nil {
			return fi.Size()
		}
	case LogStoreWAL:
		return dirSize(r.files)
	}
	return -1
}

func (r *raftStores) close() error {
	if r.closer == nil {
		return nil
	}
	return r.closer()
}

// isMonotonic says whether the log store refuses gaps between indexes, which raft asks of a
// raft.MonotonicLogStore to clear the whole log after installing a snapshot; store wrappers
// pass the answer through.
func isMonotonic(l raft.LogStore) bool {
	m, ok := l.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}
