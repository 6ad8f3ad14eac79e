package ember

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/mvcc"
)

// backendFile is the backend's name in a data dir: the state on disk (internal/mvcc's Backend).
const backendFile = "state.db"

// The backend is committed, synced, when commitInterval has passed since the last commit or
// commitVersions versions wait, as etcd batches its backend: the raft log is what makes a write
// durable; the backend only has to be as recent as the raft snapshot that lets raft drop its
// log (Snapshot commits it first). A commit is written outside the apply lock (commit), but a
// large one still delays the next; the compactor, which removes versions far faster than writes
// add them, commits every commitRemovals itself (see runCompactor).
const (
	commitInterval = 100 * time.Millisecond
	commitVersions = 10_000
	commitRemovals = 4 * compactStepRecords
)

// newFSM returns a state machine whose long dedup results share dedupBudget bytes
// (WithDedupResultBytes), on the state of the backend at backendPath (created empty if there is
// none; "" = an empty state in memory only) whose values longer than inlineMax are read from the
// file. A damaged backend fails with ErrCorrupt.
func newFSM(log hclog.Logger, watch *watchHub, lessor *lessor, dedupBudget int64, backendPath string, inlineMax int) (*fsm, error) {
	f := &fsm{log: log, app: mvcc.NewApplier(log, dedupBudget), watch: watch, lessor: lessor,
		compactWake: make(chan struct{}, 1), commitWake: make(chan struct{}, 1),
		backendPath: backendPath, inlineMax: inlineMax}
	if backendPath == "" {
		return f, nil
	}
	b, err := mvcc.OpenBackend(backendPath, inlineMax)
	if err != nil {
		return nil, fmt.Errorf("ember: %w", err)
	}
	st, applied, err := mvcc.Load(b)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("ember: %w", err)
	}
	f.app.SetState(st)
	f.applied.Store(applied)
	f.skipThrough = applied
	f.sizeInUse.Store(st.Size())
	f.dedupSize.Store(f.app.DedupBytes())
	f.lastCommit = time.Now()
	if st.CompactPending() {
		f.compactWake <- struct{}{}
	}
	return f, nil
}

// loaded tells the watch hub and the lessor about the state newFSM loaded; the Store's fsm is
// set.
func (f *fsm) loaded() {
	f.watch.restored(f.app.State())
	f.lessor.restored()
}

// restoreNewerSnapshot brings the state up to the newest raft snapshot when the backend is
// behind it: a data dir made by Restore from a backup, or by a version that kept the state in
// raft snapshots only, or a crash between a received snapshot's write and its install. The
// snapshot then holds the state; a marker (markerSnapshot) does not, and a backend behind one
// has lost writes: ErrCorrupt.
func (f *fsm) restoreNewerSnapshot(snaps *snapshotStore) error {
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("ember: list snapshots: %w", err)
	}
	if len(metas) == 0 || metas[0].Index <= f.applied.Load() {
		return nil
	}
	_, rc, err := snaps.SnapshotStore.Open(metas[0].ID)
	if err != nil {
		return fmt.Errorf("%w: open snapshot %s: %w", ErrCorrupt, metas[0].ID, err)
	}
	br := bufio.NewReader(rc)
	if isMarker(br) {
		rc.Close()
		return fmt.Errorf("%w: the state (%s, at raft index %d) is behind raft snapshot %s (index %d), which holds no state: restore a backup, or empty the data dir and join the member again",
			ErrCorrupt, backendFile, f.applied.Load(), metas[0].ID, metas[0].Index)
	}
	return f.Restore(readCloser{br, rc})
}

type readCloser struct {
	io.Reader
	io.Closer
}

// restoreState builds the state a raft snapshot stream holds (a backend stream, or ember's
// snapshot format: a backup or an earlier version's raft snapshot): into a new backend that
// replaces the one at backendPath, or in memory without one.
func (f *fsm) restoreState(r io.Reader) (*mvcc.State, uint64, error) {
	if f.backendPath == "" {
		return mvcc.RestoreToMemory(r)
	}
	st, applied, err := mvcc.RestoreStream(r, f.backendPath+".restore", f.inlineMax)
	if err != nil {
		return nil, 0, err
	}
	if err := st.Backend().Rename(f.backendPath); err != nil {
		st.Backend().Discard()
		return nil, 0, err
	}
	return st, applied, nil
}

// commitDue wakes the committer once commitInterval has passed since the last commit or enough
// changes wait, and returns whether so many wait that the caller should commit itself (the
// disk is slower than the writes: applying waits for it instead of holding ever more changes
// in memory). Callers hold mu.
func (f *fsm) commitDue(st *mvcc.State) (mustWait bool) {
	if st.Backend() == nil {
		return false
	}
	n := st.Uncommitted()
	if n >= commitVersions || time.Since(f.lastCommit) >= commitInterval && st.Dirty() {
		select {
		case f.commitWake <- struct{}{}:
		default:
		}
	}
	return st.Unwritten() >= maxUnwritten
}

// maxUnwritten bounds the versions held in memory until the backend has them.
const maxUnwritten = 8 * commitVersions

// commit writes what changed to the backend, synced, at the applied index: it takes a batch
// under mu and writes it without mu, so that applies and reads go on meanwhile. Callers hold
// neither mu nor commitMu. A failure loses nothing (the changes stay in memory, the raft log has
// them, and the next commit retries); it is logged when it starts and when it ends.
func (f *fsm) commit() error {
	f.commitMu.Lock()
	defer f.commitMu.Unlock()
	f.mu.Lock()
	st := f.app.State()
	if st.Backend() == nil || !st.Dirty() {
		f.mu.Unlock()
		return nil
	}
	b := st.TakeBatch(f.applied.Load())
	f.lastCommit = time.Now()
	f.mu.Unlock()
	err := b.Write()
	f.mu.Lock()
	defer f.mu.Unlock()
	st.BatchDone(b, err) // a restored snapshot may have replaced st meanwhile: nothing to do then
	switch {
	case err != nil && !f.commitFailing:
		f.log.Error("cannot commit the state to its backend; holding the changes in memory", "error", err)
	case err == nil && f.commitFailing:
		f.log.Info("backend writable again")
	}
	f.commitFailing = err != nil
	return err
}

// runCommitter commits when the apply path or a compaction step says a commit is due, and when
// commitInterval passes with changes uncommitted, until ctx is done.
func (f *fsm) runCommitter(ctx context.Context) {
	t := time.NewTicker(commitInterval)
	defer t.Stop()
	for {
		select {
		case <-f.commitWake:
		case <-t.C:
			f.mu.Lock()
			due := time.Since(f.lastCommit) >= commitInterval
			f.mu.Unlock()
			if !due {
				continue
			}
		case <-ctx.Done():
			return
		}
		f.commit()
	}
}

// retireBackend closes a replaced state's backend once the reads still open on it end; reads
// after that find no values and retry on the current state. Its file was replaced by rename.
func (f *fsm) retireBackend(b *mvcc.Backend) {
	if b == nil {
		return
	}
	f.retiring.Add(1)
	go func() {
		defer f.retiring.Done()
		if err := b.Close(); err != nil {
			f.log.Warn("closing a replaced backend", "error", err)
		}
	}()
}

// streamBackend is the current backend as a raft snapshot stream (snapshotStore.Open).
func (f *fsm) streamBackend() (int64, io.ReadCloser, error) {
	f.mu.Lock()
	b := f.app.State().Backend()
	f.mu.Unlock()
	return b.StreamBackend()
}

// defragment rewrites the backend without the pages compaction freed, and returns the bytes it
// gave back. Reads and writes go on while the versions are copied from a pinned state, then the
// ones written meanwhile; the last of those copies, a rewrite of the leases and the dedup table,
// and the switch to the new file hold mu. Compaction steps wait meanwhile.
func (f *fsm) defragment(ctx context.Context) (freed int64, err error) {
	if f.backendPath == "" {
		return 0, nil
	}
	f.defragMu.Lock()
	defer f.defragMu.Unlock()
	f.mu.Lock()
	old := f.app.State().Backend()
	f.defragmenting = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.defragmenting = false
		f.mu.Unlock()
		select {
		case f.compactWake <- struct{}{}:
		default:
		}
	}()
	nb, err := mvcc.CreateBackend(f.backendPath+".defrag", f.inlineMax)
	if err != nil {
		return 0, fmt.Errorf("ember: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			nb.Discard()
		}
	}()
	copied := int64(0)
	for range 2 {
		v, release, err := f.pinnedView()
		if err != nil {
			return 0, err
		}
		err = v.st.CopyTo(nb, copied, v.applied)
		copied = v.st.Rev()
		release()
		if err != nil {
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	// The last copy: commits wait (commitMu), and so do applies (mu), until the switch.
	f.commitMu.Lock()
	defer f.commitMu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.app.State()
	if st.Backend() != old {
		return 0, nil // a restored snapshot replaced the backend with a new, compact one
	}
	// What the old backend lacks is in memory and copied from there; the batches not yet
	// written go to the new one.
	if err := st.CopyTo(nb, copied, f.applied.Load()); err != nil {
		return 0, err
	}
	if err := nb.Rename(f.backendPath); err != nil {
		return 0, err
	}
	freed = old.Size() - nb.Size()
	st.ReplaceBackend(nb)
	f.current.Store(nil) // the cached view reads the old file
	keep = true
	f.retireBackend(old)
	return freed, nil
}

// backendSize is the size of the backend file; 0 without one.
func (f *fsm) backendSize() int64 {
	f.mu.Lock()
	b := f.app.State().Backend()
	f.mu.Unlock()
	if b == nil {
		return 0
	}
	return b.Size()
}

// close commits what is uncommitted and closes the backend; raft and the committer have
// stopped.
func (f *fsm) close() error {
	f.retiring.Wait()
	err := f.commit()
	f.mu.Lock()
	b := f.app.State().Backend()
	f.mu.Unlock()
	if b == nil {
		return nil
	}
	return errors.Join(err, b.Close())
}

// markerMagic starts a raft snapshot taken with a backend: the backend is the state, so the
// snapshot records only the raft index the committed backend is at ("EMBERMK1", uint64
// index). A member that needs the state is sent the backend instead (snapshotStore.Open).
const markerMagic = "EMBERMK1"

func isMarker(br *bufio.Reader) bool {
	magic, _ := br.Peek(len(markerMagic))
	return string(magic) == markerMagic
}

type markerSnapshot struct {
	applied uint64
	metrics *metrics
}

func (m *markerSnapshot) Persist(sink raft.SnapshotSink) error {
	defer m.metrics.snapshotPersisted(m.metrics.start())
	if _, err := sink.Write(binary.BigEndian.AppendUint64([]byte(markerMagic), m.applied)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (m *markerSnapshot) Release() {}

// snapshotStore is raft's file snapshot store of a member with a backend. Opening a marker
// (which raft does to send a snapshot to a member that is behind) streams the backend as it is
// now instead: its committed index is at least the marker's, since Snapshot commits before it
// takes one and commits only move forward, and the receiving member skips the entries it holds
// (fsm.skipThrough).
type snapshotStore struct {
	raft.SnapshotStore
	fsm     *fsm          // set before raft starts
	sending func() func() // Store.snapshotSending; set before raft starts
}

func (s *snapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(rc)
	if !isMarker(br) {
		return meta, readCloser{br, rc}, nil
	}
	rc.Close()
	size, stream, err := s.fsm.streamBackend()
	if err != nil {
		return nil, nil, err
	}
	m := *meta
	m.Size = size
	if s.sending == nil {
		return &m, stream, nil
	}
	return &m, sendingStream{stream, s.sending()}, nil
}

// sendingStream is a backend stream that tells when it is closed (logHold).
type sendingStream struct {
	io.ReadCloser
	done func()
}

func (s sendingStream) Close() error {
	s.done()
	return s.ReadCloser.Close()
}
