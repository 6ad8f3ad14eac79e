package raftlog

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/ember-kv/ember/internal/boltcheck"
)

// openBoltLog opens (or creates) dir's bbolt raft log; it serves as both the log and the stable
// store.
func openBoltLog(dir string, existing bool) (*Log, error) {
	path := filepath.Join(dir, BoltFile)
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
	return &Log{Logs: bolt, Stable: bolt, Kind: Bolt, files: path, closer: bolt.Close}, nil
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

// checkBoltFile validates the structure of a bbolt file (raft.db, or raft-wal's metadata)
// before bbolt opens it: bbolt crashes the host process on a damaged file, and this refuses it
// with ErrCorrupt instead (see package boltcheck).
func checkBoltFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := boltcheck.Check(f, fi.Size()); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	return nil
}
