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
	"go.etcd.io/bbolt"
)

// raftStores holds raft's log, stable and snapshot stores: bbolt and snapshot files under dir,
// or memory when dir is "".
type raftStores struct {
	log    raft.LogStore
	stable raft.StableStore
	snaps  raft.SnapshotStore
	bolt   *raftboltdb.BoltStore // nil in memory
	path   string                // bolt file, "" in memory
}

// logCacheSize is how many recent entries are served from memory: followers catching up and the
// FSM read from it instead of bbolt.
const logCacheSize = 512

// existing says the dir held a member before this open (its member-id file was there).
func openRaftStores(dir string, retain int, log hclog.Logger, existing bool) (*raftStores, error) {
	if dir == "" {
		mem := raft.NewInmemStore()
		return &raftStores{log: mem, stable: mem, snaps: raft.NewInmemSnapshotStore()}, nil
	}
	path := filepath.Join(dir, "raft.db")
	// A dir that already belongs to a member but has lost its log would open as a brand-new,
	// empty log (bbolt creates it), and the member would serve stale or no data.
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
	cache, err := raft.NewLogCache(logCacheSize, bolt)
	if err != nil {
		bolt.Close()
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, retain, log.Named("snapshot"))
	if err != nil {
		bolt.Close()
		return nil, fmt.Errorf("ember: open snapshot store: %w", err)
	}
	return &raftStores{log: cache, stable: bolt, snaps: snaps, bolt: bolt, path: path}, nil
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

func (r *raftStores) close() error {
	if r.bolt == nil {
		return nil
	}
	return r.bolt.Close()
}
