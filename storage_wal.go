package ember

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/hashicorp/go-hclog"
	wal "github.com/hashicorp/raft-wal"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
	"go.etcd.io/bbolt"
)

const (
	walDir = "wal"
	// walLockFile is held, through bbolt's file lock, for as long as the WAL is open: raft-wal
	// opens its own metadata file without a timeout, so a second process would otherwise hang
	// on that file's lock instead of being told the dir is in use.
	walLockFile = "ember.lock"
)

// openWALStores opens (or creates) the raft-wal log under dir/wal; it serves as both the log
// and the stable store.
func openWALStores(dir string, log hclog.Logger) (*raftStores, error) {
	path := filepath.Join(dir, walDir)
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("ember: create raft WAL dir: %w", err)
	}
	lock, err := bbolt.Open(filepath.Join(path, walLockFile), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("ember: data dir %s is in use by another process", dir)
		}
		return nil, fmt.Errorf("ember: lock raft WAL %s: %w", path, err)
	}
	meta := filepath.Join(path, metadb.FileName)
	if fi, err := os.Stat(meta); err == nil && fi.Size() > 0 {
		if err := checkBoltFile(meta); err != nil {
			lock.Close()
			return nil, err
		}
	}
	// raft-wal's Close leaves the metadata file it opened open (and locked), so ember hands it
	// the metadata store and closes that itself.
	metaDB := &metadb.BoltMetaDB{}
	w, err := openWAL(path, metaDB, log)
	if err != nil {
		metaDB.Close()
		lock.Close()
		return nil, err
	}
	return &raftStores{
		log: w, stable: w, kind: LogStoreWAL, files: path,
		closer: func() error { return errors.Join(w.Close(), metaDB.Close(), lock.Close()) },
	}, nil
}

// openWAL opens raft-wal, which recovers the tail segment (dropping a torn last write) and
// checks segment headers. Damage it detects, or that makes it panic on this goroutine, is
// reported as ErrCorrupt.
func openWAL(path string, metaDB *metadb.BoltMetaDB, log hclog.Logger) (_ *wal.WAL, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s: opening the raft WAL: %v", ErrCorrupt, path, p)
		}
	}()
	w, err := wal.Open(path, wal.WithMetaStore(metaDB), wal.WithLogger(log.Named("wal")),
		wal.WithSegmentFiler(walFiler{segment.NewFiler(path, walfs.New())}))
	switch {
	case err == nil:
		return w, nil
	case errors.Is(err, wal.ErrCorrupt), errors.Is(err, fs.ErrNotExist),
		errors.Is(err, bbolt.ErrInvalid), errors.Is(err, bbolt.ErrChecksum), errors.Is(err, bbolt.ErrVersionMismatch):
		// A segment the metadata lists but the dir lacks is a lost file, not a fresh start.
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	return nil, fmt.Errorf("ember: open raft WAL %s: %w", path, err)
}

// walFiler works around raft-wal v0.4.0's tail truncation (hashicorp/raft-wal#31, fixed after
// the last release): truncating the log's tail marks the tail segment sealed in the metadata
// without writing the index block a sealed segment is read through, so the running member
// reads it fine from memory but after a restart every read of it fails ("sealed segment has no
// index block") and the member cannot start. Such a segment is opened the way an unsealed tail
// is recovered, by scanning its frames, which needs no index block and writes nothing; the
// metadata's MaxIndex still hides the entries the truncation removed.
type walFiler struct{ *segment.Filer }

func (f walFiler) Open(info types.SegmentInfo) (types.SegmentReader, error) {
	if info.IndexStart == 0 && !info.SealTime.IsZero() {
		return f.Filer.RecoverTail(info)
	}
	return f.Filer.Open(info)
}

// dirSize sums the sizes of the regular files under path; -1 if it cannot be read.
func dirSize(path string) int64 {
	var n int64
	err := filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		return -1
	}
	return n
}
