package ember

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	walfs "github.com/hashicorp/raft-wal/fs"

	"github.com/ember-kv/ember/internal/raftlog"
	"github.com/ember-kv/ember/internal/raftlog/raftlogtest"
)

// walPuts opens a single member on dir with the WAL, puts n keys and closes it; it returns the
// revision of the last put.
func walPuts(t *testing.T, dir string, n int, opts ...Option) int64 {
	t.Helper()
	s := dfOpenSingle(t, dir, &dfFault{}, append([]Option{WithLogStore(LogStoreWAL)}, opts...)...)
	ctx := dfCtx(t, 30*time.Second)
	var rev int64
	for i := range n {
		r, err := s.Put(ctx, fmt.Sprintf("k/%03d", i), fmt.Sprintf("v%d", i))
		if err != nil {
			t.Fatal(err)
		}
		rev = r.Header.Revision
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return rev
}

func TestStore_LogStoreWAL_RestartReplaysLog(t *testing.T) {
	dir := t.TempDir()
	wRev := walPuts(t, dir, 100)
	if fileExists(filepath.Join(dir, raftlog.BoltFile)) {
		t.Fatalf("a WAL member created %s", raftlog.BoltFile)
	}
	if snaps := dfSnapshots(t, dir); len(snaps) != 0 {
		t.Fatalf("snapshots %v: the restart must replay the log, not a snapshot", snaps)
	}
	for round := range 2 {
		// No WithLogStore: the dir's own log store is used.
		s := dfOpenSingle(t, dir, &dfFault{})
		ctx := dfCtx(t, 30*time.Second)
		resp, err := s.Get(ctx, "k/0", WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 100 || string(resp.Kvs[99].Value) != "v99" || resp.Header.Revision < wRev {
			t.Fatalf("round %d: %d keys at revision %d, want 100 at >= %d", round, len(resp.Kvs), resp.Header.Revision, wRev)
		}
		st, err := s.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.DBSize < 1<<20 {
			t.Errorf("DBSize = %d, want the preallocated segment's size", st.DBSize)
		}
		if s.stores.Kind != raftlog.WAL || !raftlog.IsMonotonic(s.stores.Logs) {
			t.Fatalf("store kind %v, monotonic %v: raft must see the WAL's IsMonotonic through every wrapper",
				s.stores.Kind, raftlog.IsMonotonic(s.stores.Logs))
		}
		if _, err := s.Put(ctx, "k/round", fmt.Sprint(round)); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A new data dir opened with no options gets the WAL; a dir an older ember created with bbolt
// keeps it.
func TestOpen_DefaultLogStore(t *testing.T) {
	dir := t.TempDir()
	s := dfOpenSingle(t, dir, &dfFault{})
	if got := s.stores.Kind; got != raftlog.WAL {
		t.Errorf("a new dir got the %v log store, want wal", got)
	}
	s.Close()
	if fileExists(filepath.Join(dir, raftlog.BoltFile)) || !fileExists(filepath.Join(dir, raftlog.WALDir)) {
		t.Fatal("a new dir opened with no options holds no WAL, or a raft.db")
	}

	dir = t.TempDir()
	dfOpenSingle(t, dir, &dfFault{}, WithLogStore(LogStoreBolt)).Close()
	s = dfOpenSingle(t, dir, &dfFault{})
	defer s.Close()
	if got := s.stores.Kind; got != raftlog.Bolt {
		t.Errorf("a bolt dir reopened with no options got the %v log store", got)
	}
}

func TestOpen_LogStore_Mismatch(t *testing.T) {
	tests := []struct {
		name          string
		created, open LogStore
		wErr          bool
	}{
		{"bolt dir, no option", LogStoreBolt, 0, false},
		{"wal dir, no option", LogStoreWAL, 0, false},
		{"bolt dir, wal asked", LogStoreBolt, LogStoreWAL, true},
		{"wal dir, bolt asked", LogStoreWAL, LogStoreBolt, true},
		{"wal dir, wal asked", LogStoreWAL, LogStoreWAL, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			dfOpenSingle(t, dir, &dfFault{}, WithLogStore(tt.created)).Close()
			var opts []Option
			if tt.open != 0 {
				opts = append(opts, WithLogStore(tt.open))
			}
			s, err := Open(dir, opts...)
			if err == nil {
				defer s.Close()
			}
			if gotErr := err != nil; gotErr != tt.wErr {
				t.Fatalf("Open: %v, want error %v", err, tt.wErr)
			}
			if tt.wErr && !strings.Contains(err.Error(), "WithLogStore applies to new data dirs") {
				t.Errorf("error %q does not say why", err)
			}
			if fileExists(filepath.Join(dir, raftlog.BoltFile)) && fileExists(filepath.Join(dir, raftlog.WALDir)) {
				t.Fatal("the refused Open left both log stores in the dir")
			}
		})
	}
	if _, err := Open(t.TempDir(), WithLogStore(LogStore(7))); err == nil {
		t.Error("an unknown log store was accepted")
	}
}

func TestOpen_LogStoreWAL_InUse(t *testing.T) {
	dir := t.TempDir()
	dfOpenSingle(t, dir, &dfFault{}, WithLogStore(LogStoreWAL))
	done := make(chan error, 1)
	go func() {
		s, err := Open(dir)
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("second Open of a running WAL member's dir: %v, want an in-use error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second Open of a running WAL member's dir hangs")
	}
}

// segmentFiles lists the WAL's segment files, oldest first.
func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, raftlog.WALDir, "*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("segment files %v, %v", segs, err)
	}
	return segs
}

func TestOpen_LogStoreWAL_Damage(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"wal dir removed", func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, raftlog.WALDir)); err != nil {
				t.Fatal(err)
			}
		}},
		{"metadata overwritten", func(t *testing.T, dir string) {
			meta := filepath.Join(dir, raftlog.WALDir, "wal-meta.db")
			if err := os.WriteFile(meta, []byte(strings.Repeat("not bolt ", 2000)), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"tail batch damaged before later ones", func(t *testing.T, dir string) {
			// A flipped bit in the first batch of the tail, with every later put intact after
			// it: not a torn write, and cutting there would forget acknowledged puts.
			segs := segmentFiles(t, dir)
			b, err := os.ReadFile(segs[len(segs)-1])
			if err != nil {
				t.Fatal(err)
			}
			// Inside the first entry's payload: past raft-wal's 32-byte segment header and the
			// entry's 8-byte frame header.
			b[32+8+4] ^= 0x04
			if err := os.WriteFile(segs[len(segs)-1], b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"metadata truncated", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, raftlog.WALDir, "wal-meta.db"), 6000); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			walPuts(t, dir, 20)
			tt.damage(t, dir)
			s, err := Open(dir)
			if err == nil {
				s.Close()
				t.Fatal("a damaged WAL was opened")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
		})
	}
}

// A write torn by a crash leaves a partial batch at the end of the tail segment: the WAL drops
// it on open and keeps everything before it.
func TestOpen_LogStoreWAL_TornTail(t *testing.T) {
	dir := t.TempDir()
	walPuts(t, dir, 50)
	segs := segmentFiles(t, dir)
	tail := segs[len(segs)-1]
	b, err := os.ReadFile(tail)
	if err != nil {
		t.Fatal(err)
	}
	end := len(b)
	for end > 0 && b[end-1] == 0 {
		end--
	}
	// Damage the last frames written: the final batch (the last put) no longer checks out.
	for i := end - 12; i < end-4; i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(tail, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s := dfOpenSingle(t, dir, &dfFault{})
	ctx := dfCtx(t, 30*time.Second)
	resp, err := s.Get(ctx, "k/", WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.Kvs); n < 48 || n > 50 {
		t.Fatalf("%d keys after a torn tail, want all but the last write or two", n)
	}
	if _, err := s.Put(ctx, "after", "repair"); err != nil {
		t.Fatalf("put after the tail was repaired: %v", err)
	}
}

func TestStore_LogStoreWAL_SnapshotInstall(t *testing.T) {
	// A follower that falls behind the leader's trailing logs gets a snapshot; raft then clears
	// the follower's whole log, which a WAL (it refuses gaps) needs, and appends after it.
	peers := map[string]string{"a": freeAddr(t), "b": freeAddr(t), "c": freeAddr(t)}
	dirs := map[string]string{}
	open := func(id string) *Store {
		if dirs[id] == "" {
			dirs[id] = t.TempDir()
		}
		s, err := Open(dirs[id], WithNodeID(id), WithBindAddr(peers[id]), WithInitialCluster(peers),
			WithLogStore(LogStoreWAL), WithSnapshotThreshold(64),
			WithRaftConfig(func(c *raft.Config) { c.TrailingLogs = 16; c.SnapshotInterval = 50 * time.Millisecond }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	stores := map[string]*Store{}
	for id := range peers {
		stores[id] = open(id)
	}
	ctx := dfCtx(t, time.Minute)
	leader := func() *Store {
		for {
			for _, s := range stores {
				if s != nil && s.IsLeader() {
					return s
				}
			}
			if ctx.Err() != nil {
				t.Fatal("no leader")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	l := leader()
	var lagging string
	for id, s := range stores {
		if s != l {
			lagging = id
			break
		}
	}
	stores[lagging].Close()
	stores[lagging] = nil
	for i := range 300 {
		if _, err := l.Put(ctx, fmt.Sprintf("k/%03d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	walWait(t, ctx, "a leader snapshot past the lagging member's log", func() bool {
		first, _ := l.stores.Logs.FirstIndex()
		return first > 100
	})
	s := open(lagging)
	stores[lagging] = s
	r, err := l.Put(ctx, "after", "snapshot")
	if err != nil {
		t.Fatal(err)
	}
	walWait(t, ctx, "the lagging member to catch up", func() bool {
		resp, err := s.Get(ctx, "after", WithSerializable())
		return err == nil && len(resp.Kvs) == 1 && resp.Header.Revision >= r.Header.Revision
	})
	resp, err := s.Get(ctx, "k/", WithPrefix(), WithSerializable(), WithCountOnly())
	if err != nil || resp.Count != 300 {
		t.Fatalf("lagging member has %v keys (%v), want 300", resp, err)
	}
	// Its log took the appends after the snapshot: a restart replays them.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(lagging)
	stores[lagging] = s
	walWait(t, ctx, "the restarted member to serve the write after the snapshot", func() bool {
		resp, err := s.Get(ctx, "after", WithSerializable())
		return err == nil && len(resp.Kvs) == 1
	})
}

func walWait(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A backup restores into a WAL dir, which then opens, serves the data and takes writes.
func TestRestore_LogStoreWAL(t *testing.T) {
	src := dfOpenSingle(t, t.TempDir(), &dfFault{})
	ctx := dfCtx(t, 30*time.Second)
	for i := range 20 {
		if _, err := src.Put(ctx, fmt.Sprintf("k/%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	want, err := src.Get(ctx, "k/", WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if err := src.Snapshot(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if err := Restore(&backup, dir, WithLogStore(LogStoreWAL)); err != nil {
		t.Fatal(err)
	}
	if !fileExists(filepath.Join(dir, raftlog.WALDir)) || fileExists(filepath.Join(dir, raftlog.BoltFile)) {
		t.Fatal("the restored dir does not hold a WAL only")
	}
	s := dfOpenSingle(t, dir, &dfFault{})
	got, err := s.Get(ctx, "k/", WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != len(want.Kvs) || got.Header.Revision != want.Header.Revision {
		t.Fatalf("restored: %d keys at revision %d, backup: %d at %d", len(got.Kvs), got.Header.Revision, len(want.Kvs), want.Header.Revision)
	}
	if _, err := s.Put(ctx, "after", "restore"); err != nil {
		t.Fatal(err)
	}
}

// A member on the WAL whose disk fails one append (a full disk, a failed fsync) serves writes
// again once the disk does: raft steps down, retries the entries in its next term, and the log
// takes them. With raft-wal v0.4.0 alone, every append after the failure was refused and the
// member never wrote again until restarted.
func TestStore_LogStoreWAL_ServesAfterFailedAppend(t *testing.T) {
	for _, tt := range []struct {
		name string
		arm  func(*raftlogtest.FaultyVFS)
	}{
		{"write", func(v *raftlogtest.FaultyVFS) { v.FailWrites.Store(1) }},
		{"sync", func(v *raftlogtest.FaultyVFS) { v.FailSync.Store(true) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vfs := &raftlogtest.FaultyVFS{VFS: walfs.New()}
			dir := t.TempDir()
			s := dfOpenSingle(t, dir, &dfFault{}, WithLogStore(LogStoreWAL), func(c *config) error {
				c.walVFS = vfs
				return nil
			})
			ctx := dfCtx(t, time.Minute)
			if _, err := s.Put(ctx, "k", "before"); err != nil {
				t.Fatal(err)
			}
			tt.arm(vfs)
			s.Put(ctx, "k", "during") // fails (outcome unknown), or succeeds on a retry
			if vfs.FailWrites.Load() != 0 || vfs.FailSync.Load() {
				t.Fatal("the injected failure did not happen")
			}
			var err error
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err = s.Put(pctx, "k", "after")
				cancel()
				if err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("no write succeeded for 20 s after one failed append: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = dfOpenSingle(t, dir, &dfFault{}, WithLogStore(LogStoreWAL))
			if r, err := s.Get(ctx, "k"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "after" {
				t.Fatalf("after restart: %+v, %v", r, err)
			}
		})
	}
}
