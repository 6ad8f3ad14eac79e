package ember

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/raftlog"
)

// Snapshot writes a consistent backup of this member's state to w: every key with its history
// since the last compaction, the leases and the revision counters, at one applied index, ending
// with a CRC-32C of the whole stream. It is served from this member's copy without blocking
// writes (the copy is a copy-on-write snapshot of the state); take it on the leader, or after
// WaitReady, to include the latest writes. Restore turns a backup into a new data dir.
func (s *Store) Snapshot(ctx context.Context, w io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.stopped() {
		return ErrStopped
	}
	// Immutable, its state the one applied through v.applied, and pinned: compactions that run
	// while it is written remove none of its values.
	v, release, err := s.fsm.pinnedView()
	if err != nil {
		return err
	}
	defer release()
	// Writing may take a while for a large state; ctx ends it between writes.
	return mvcc.WriteSnapshot(ctxWriter{ctx, w}, v.st, v.applied)
}

// ctxWriter fails writes once ctx has ended.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// Restore creates a new data dir at dir, holding a single-member cluster whose state is the
// backup read from r (written by Store.Snapshot). Open(dir, opts...) then starts that member;
// more members join it with WithJoin. opts give the member's ID (WithNodeID) and, for a member
// with a listener, its address (WithBindAddr, WithAdvertiseAddr): the new cluster's configuration
// names them. WithLogStore picks the restored dir's raft log store.
//
// The backup is checked in full before anything is written: a corrupted or truncated backup is
// refused with an error wrapping ErrCorrupt and leaves no data dir behind. dir must not hold
// ember data already.
func Restore(r io.Reader, dir string, opts ...Option) (err error) {
	if dir == "" {
		return errors.New("ember: Restore: a data dir is required")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return err
		}
	}
	if cfg.advertiseAddr == "" {
		cfg.advertiseAddr = cfg.bindAddr
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("ember: Restore: %s is not empty", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ember: Restore: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir) // never leave a half-restored dir that Open would accept
		}
	}()

	// Keep the bytes while checking them: they go into the snapshot store unchanged.
	tmp, err := os.CreateTemp(dir, "restore-*.tmp")
	if err != nil {
		return fmt.Errorf("ember: Restore: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	st, applied, err := mvcc.ReadSnapshot(io.TeeReader(r, tmp))
	if err != nil {
		return fmt.Errorf("ember: Restore: %w", err)
	}
	if applied == 0 {
		applied = 1 // raft needs a snapshot at a real index
	}

	id, err := memberID(dir, cfg.nodeID)
	if err != nil {
		return err
	}
	log := cfg.log()
	stores, err := openRaftStores(dir, &cfg, log, raftlog.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := stores.Close(); err == nil {
			err = cerr
		}
	}()
	addr := raft.ServerAddress(cfg.advertiseAddr)
	if addr == "" {
		addr = "restored" // a member without a listener never dials itself
	}
	conf := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(id), Address: addr, Suffrage: raft.Voter}}}
	_, trans := raft.NewInmemTransport(addr) // only encodes the configuration into the metadata
	sink, err := stores.snaps.Create(raft.SnapshotVersionMax, applied, 1, conf, applied, trans)
	if err != nil {
		return fmt.Errorf("ember: Restore: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		sink.Cancel()
		return err
	}
	if _, err := io.Copy(sink, bufio.NewReader(tmp)); err != nil {
		sink.Cancel()
		return fmt.Errorf("ember: Restore: write snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("ember: Restore: write snapshot: %w", err)
	}
	// raft refuses a snapshot from a term later than the one it has stored.
	if err := stores.Stable.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		return fmt.Errorf("ember: Restore: %w", err)
	}
	log.Info("restored backup", "dir", dir, "member", id, "revision", st.Rev(), "keys", st.Keys(),
		"index", applied)
	return nil
}
