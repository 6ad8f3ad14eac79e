package raftlog

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
	"go.etcd.io/bbolt"
)

// walLockFile is held, through bbolt's file lock, for as long as the WAL is open: raft-wal opens
// its own metadata file without a timeout, so a second process would otherwise hang on that
// file's lock instead of being told the dir is in use.
const walLockFile = "ember.lock"

// openWALLog opens (or creates) the raft-wal log under dir/wal, with raft-wal's segment files
// opened through vfs and new segments of segSize bytes (0: raft-wal's default, 64 MiB); it
// serves as both the log and the stable store.
func openWALLog(dir string, vfs types.VFS, log hclog.Logger, segSize int) (*Log, error) {
	path := filepath.Join(dir, WALDir)
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
	w, err := openWAL(path, vfs, metaDB, log, segSize)
	if err != nil {
		metaDB.Close()
		lock.Close()
		return nil, err
	}
	return &Log{
		Logs: w, Stable: w, Kind: WAL, files: path,
		closer: func() error { return errors.Join(w.Close(), metaDB.Close(), lock.Close()) },
	}, nil
}

// openWAL checks the WAL's segment list and opens raft-wal through walFiler, which verifies
// every segment before raft-wal reads it (wal_verify.go). Damage found, or that makes
// raft-wal panic on this goroutine, is reported as ErrCorrupt.
func openWAL(path string, vfs types.VFS, metaDB *metadb.BoltMetaDB, log hclog.Logger, segSize int) (_ *wal.WAL, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s: opening the raft WAL: %v", ErrCorrupt, path, p)
		}
	}()
	persisted, err := metaDB.Load(path)
	if err == nil {
		err = checkWALSegmentList(persisted.Segments)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	size := wal.WithSegmentSize(segSize)
	if segSize <= 0 {
		size = wal.WithMetaStore(metaDB) // raft-wal's default size
	}
	w, err := wal.Open(path, wal.WithMetaStore(metaDB), wal.WithLogger(log.Named("wal")),
		wal.WithSegmentFiler(newWALFiler(path, vfs, log.Named("wal"))), size)
	switch {
	case err == nil:
		return w, nil
	case errors.Is(err, ErrCorrupt):
		return nil, err
	case errors.Is(err, wal.ErrCorrupt), errors.Is(err, fs.ErrNotExist),
		errors.Is(err, bbolt.ErrInvalid), errors.Is(err, bbolt.ErrChecksum), errors.Is(err, bbolt.ErrVersionMismatch):
		// A segment the metadata lists but the dir lacks is a lost file, not a fresh start.
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	return nil, fmt.Errorf("ember: open raft WAL %s: %w", path, err)
}

// checkWALSegmentList refuses a segment list with a gap or overlap in its indexes, or an
// unsealed segment before the last: raft-wal would serve such a log with entries missing.
func checkWALSegmentList(segs []types.SegmentInfo) error {
	for i := 1; i < len(segs); i++ {
		prev, seg := segs[i-1], segs[i]
		if prev.SealTime.IsZero() {
			return fmt.Errorf("segment %d is not sealed but segment %d follows it", prev.ID, seg.ID)
		}
		if seg.BaseIndex != prev.MaxIndex+1 {
			return fmt.Errorf("segment %d ends at index %d but segment %d starts at %d", prev.ID, prev.MaxIndex, seg.ID, seg.BaseIndex)
		}
	}
	return nil
}

// walFiler works around raft-wal v0.4.0's tail truncation (hashicorp/raft-wal#31, fixed after
// the last release): truncating the log's tail marks the tail segment sealed in the metadata
// without writing the index block a sealed segment is read through, so the running member
// reads it fine from memory but after a restart every read of it fails ("sealed segment has no
// index block") and the member cannot start. Such a segment is opened the way an unsealed tail
// is recovered, by scanning its frames, which needs no index block and writes nothing; the
// metadata's MaxIndex still hides the entries the truncation removed.
//
// It also hands out tail segment writers that survive a failed append (walSegment).
type walFiler struct {
	*segment.Filer
	dir string
	vfs *walVFS
	log hclog.Logger

	// mu serializes opening segment files for writing, so that vfs.last is the file the call
	// under way opened.
	mu sync.Mutex
}

func newWALFiler(path string, vfs types.VFS, log hclog.Logger) *walFiler {
	v := &walVFS{VFS: vfs}
	return &walFiler{Filer: segment.NewFiler(path, v), dir: path, vfs: v, log: log}
}

// Open opens a sealed segment, which is verified first (verifySealedWALSegment). raft-wal
// opens sealed segments only when it opens the WAL.
func (f *walFiler) Open(info types.SegmentInfo) (types.SegmentReader, error) {
	if err := f.verify(info, func(r io.ReaderAt) error { return verifySealedWALSegment(r, info) }); err != nil {
		return nil, err
	}
	if info.IndexStart == 0 && !info.SealTime.IsZero() {
		w, _, err := f.openWriter(info, f.Filer.RecoverTail)
		return w, err
	}
	return f.Filer.Open(info)
}

func (f *walFiler) Create(info types.SegmentInfo) (types.SegmentWriter, error) {
	return f.segment(info, f.Filer.Create)
}

// RecoverTail opens the tail segment when raft-wal opens the WAL. The segment is verified
// first (verifyWALTail): a torn last write is overwritten with zeros, which raft-wal reads as
// the end of the segment, and other damage is refused; raft-wal's own recovery must then come to
// the same last index.
func (f *walFiler) RecoverTail(info types.SegmentInfo) (types.SegmentWriter, error) {
	var sc walScan
	err := f.verify(info, func(r io.ReaderAt) error {
		var from, to int64
		var err error
		if sc, from, to, err = verifyWALTail(r, info); err != nil || from == to {
			return err
		}
		f.log.Warn("cutting a torn write off the end of the raft log", "segment", segment.FileName(info), "offset", from, "bytes", to-from)
		return f.zero(info, from, to)
	})
	if err != nil {
		return nil, err
	}
	w, err := f.segment(info, f.Filer.RecoverTail)
	if err != nil {
		return nil, err
	}
	want := uint64(0)
	if sc.entries > 0 {
		want = info.BaseIndex + uint64(sc.entries) - 1
	}
	if got := w.LastIndex(); got != want && !sc.sealed {
		w.Close()
		return nil, fmt.Errorf("%w: raft WAL segment %s: recovered up to index %d, verified up to %d", ErrCorrupt, segment.FileName(info), got, want)
	}
	return w, nil
}

// verify runs check on the segment's file. A missing file is returned as raft-wal's filer
// returns it, so that raft-wal handles it as it does.
func (f *walFiler) verify(info types.SegmentInfo, check func(io.ReaderAt) error) error {
	r, err := f.vfs.OpenReader(f.dir, segment.FileName(info))
	if err != nil {
		return err
	}
	defer r.Close()
	return check(r)
}

// zero overwrites [from, to) of the segment's file with zeros and syncs it.
func (f *walFiler) zero(info types.SegmentInfo, from, to int64) error {
	w, err := f.vfs.VFS.OpenWriter(f.dir, segment.FileName(info))
	if err != nil {
		return fmt.Errorf("ember: cut a torn raft WAL write: %w", err)
	}
	_, err = w.WriteAt(make([]byte, to-from), from)
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("ember: cut a torn raft WAL write: %w", err)
	}
	return nil
}

func (f *walFiler) segment(info types.SegmentInfo, open func(types.SegmentInfo) (types.SegmentWriter, error)) (types.SegmentWriter, error) {
	w, file, err := f.openWriter(info, open)
	if err != nil {
		return nil, err
	}
	return &walSegment{filer: f, info: info, w: w, file: file}, nil
}

// openWriter opens a segment writer with raft-wal's filer and returns it with its file.
func (f *walFiler) openWriter(info types.SegmentInfo, open func(types.SegmentInfo) (types.SegmentWriter, error)) (types.SegmentWriter, *walFile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vfs.last = nil
	w, err := open(info)
	if err != nil {
		// raft-wal leaves the file open when it fails to read it; a repair retried on every
		// append would leak one each time.
		if f.vfs.last != nil {
			f.vfs.last.Close()
		}
		return nil, nil, err
	}
	return w, f.vfs.last, nil
}

// walSegment works around raft-wal v0.4.0's handling of a failed append
// (hashicorp/raft-wal#32, fixed after the last release): when writing or syncing a batch
// fails, the segment writer keeps the batch's entries in its in-memory index (and, for a failed
// write, its bytes in the buffer the next write sends), so every later append, raft's retry of
// the same entries included, fails as "non-monotonic": the member can never append again until
// it restarts. After a failed append walSegment overwrites whatever the batch wrote since the
// last successful sync with zeros, which raft-wal reads as the end of the segment, and rebuilds
// the writer from the file the way raft-wal recovers a tail at startup: the segment is exactly
// as it was before the batch, and the retry succeeds. If that repair fails too (the disk is
// still failing), the append returns the error and the next one tries the repair again.
type walSegment struct {
	filer *walFiler
	info  types.SegmentInfo

	// mu guards w and file: reads hold it shared, a repair exclusively to swap them. Only
	// Append writes or repairs, and raft-wal never runs two at once. Lock order: raft-wal's
	// write lock, then mu, then walFiler.mu.
	mu      sync.RWMutex
	w       types.SegmentWriter
	file    *walFile
	damaged bool // an append failed and the repair has not succeeded yet; used only by Append
}

func (s *walSegment) Append(entries []types.LogEntry) error {
	if s.damaged {
		if err := s.repair(); err != nil {
			return err
		}
	}
	s.mu.RLock()
	err := s.w.Append(entries)
	s.mu.RUnlock()
	if err != nil {
		s.damaged = true
		if rerr := s.repair(); rerr != nil {
			return fmt.Errorf("%w (and %w)", err, rerr)
		}
	}
	return err
}

// repair puts the segment back as it was after the last successful append.
func (s *walSegment) repair() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.file.discardUnsynced(); err != nil {
		return fmt.Errorf("ember: discard a failed raft WAL append: %w", err)
	}
	w, file, err := s.filer.openWriter(s.info, s.filer.Filer.RecoverTail)
	if err != nil {
		return fmt.Errorf("ember: reopen the raft WAL tail after a failed append: %w", err)
	}
	s.w.Close() // its state is the broken one; the file is already reopened
	s.w, s.file, s.damaged = w, file, false
	return nil
}

func (s *walSegment) Sealed() (bool, uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.w.Sealed()
}

func (s *walSegment) LastIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.w.LastIndex()
}

func (s *walSegment) GetLog(idx uint64) (*types.PooledBuffer, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.w.GetLog(idx)
}

func (s *walSegment) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Close()
}

// walVFS wraps the segment files raft-wal opens for writing in walFiles, and keeps the latest
// one for the walFiler call that opened it (under walFiler.mu).
type walVFS struct {
	types.VFS
	last *walFile
}

func (v *walVFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := v.VFS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	v.last = &walFile{WritableFile: f}
	return v.last, nil
}

func (v *walVFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	f, err := v.VFS.OpenWriter(dir, name)
	if err != nil {
		return nil, err
	}
	v.last = &walFile{WritableFile: f}
	return v.last, nil
}

// walFile remembers the bytes written since the last successful sync: what a failed append may
// have left beyond the last commit. Only the segment's appends write and sync it.
type walFile struct {
	types.WritableFile
	dirtyFrom, dirtyTo int64 // equal when nothing is unsynced
}

func (f *walFile) WriteAt(p []byte, off int64) (int, error) {
	if f.dirtyFrom == f.dirtyTo {
		f.dirtyFrom, f.dirtyTo = off, off
	}
	f.dirtyFrom, f.dirtyTo = min(f.dirtyFrom, off), max(f.dirtyTo, off+int64(len(p)))
	return f.WritableFile.WriteAt(p, off)
}

func (f *walFile) Sync() error {
	if err := f.WritableFile.Sync(); err != nil {
		return err
	}
	f.dirtyFrom, f.dirtyTo = 0, 0
	return nil
}

// discardUnsynced overwrites the unsynced bytes with zeros and syncs them.
func (f *walFile) discardUnsynced() error {
	if f.dirtyFrom == f.dirtyTo {
		return nil
	}
	if _, err := f.WritableFile.WriteAt(make([]byte, f.dirtyTo-f.dirtyFrom), f.dirtyFrom); err != nil {
		return err
	}
	if err := f.WritableFile.Sync(); err != nil {
		return err
	}
	f.dirtyFrom, f.dirtyTo = 0, 0
	return nil
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
