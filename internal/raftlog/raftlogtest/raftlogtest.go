// Package raftlogtest injects disk faults under a raft-wal log, for the tests of internal/raftlog
// and of the ember members that run on it.
package raftlogtest

import (
	"errors"
	"sync/atomic"

	"github.com/hashicorp/raft-wal/types"
)

// ErrInjectedIO is the error of an injected fault.
var ErrInjectedIO = errors.New("injected I/O error")

// FaultyVFS fails the next writes of segment files (after writing half of each, as a full disk
// would) or the next sync.
type FaultyVFS struct {
	types.VFS
	FailWrites atomic.Int32 // how many of the next writes fail
	FailSync   atomic.Bool  // whether the next sync fails
}

func (v *FaultyVFS) takeWriteFault() bool {
	for {
		n := v.FailWrites.Load()
		if n == 0 {
			return false
		}
		if v.FailWrites.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (v *FaultyVFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := v.VFS.Create(dir, name, size)
	return &faultyFile{f, v}, err
}

func (v *FaultyVFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	f, err := v.VFS.OpenWriter(dir, name)
	return &faultyFile{f, v}, err
}

type faultyFile struct {
	types.WritableFile
	vfs *FaultyVFS
}

func (f *faultyFile) WriteAt(p []byte, off int64) (int, error) {
	if f.vfs.takeWriteFault() {
		n, _ := f.WritableFile.WriteAt(p[:len(p)/2], off)
		return n, ErrInjectedIO
	}
	return f.WritableFile.WriteAt(p, off)
}

func (f *faultyFile) Sync() error {
	if f.vfs.FailSync.Swap(false) {
		return ErrInjectedIO
	}
	return f.WritableFile.Sync()
}
