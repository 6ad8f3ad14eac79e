package etcdapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"

	"github.com/ember-kv/ember"
)

// checkRestored opens the data dir a snapshot was restored into and checks it holds key=val.
func checkRestored(t testing.TB, dir, key, val string) {
	t.Helper()
	st, err := ember.Open(dir)
	if err != nil {
		t.Fatalf("Open restored: %v", err)
	}
	defer st.Close()
	ctx := testCtx(t)
	if err := st.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	r, err := st.Get(ctx, key)
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != val {
		t.Errorf("restored %s = %v, %v; want %q", key, r, err, val)
	}
}

func TestMaintenance_Snapshot(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		mustPut(t, cli, "snap", "shot")
		rc, err := cli.Snapshot(testCtx(t))
		if err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("read snapshot: %v", err)
		}
		// etcdctl's check: the data is a multiple of 512 bytes followed by its SHA-256.
		if len(b)%512 != sha256.Size {
			t.Fatalf("snapshot of %d bytes has no trailing checksum", len(b))
		}
		if sum := sha256.Sum256(b[:len(b)-sha256.Size]); !bytes.Equal(sum[:], b[len(b)-sha256.Size:]) {
			t.Fatal("snapshot checksum mismatch")
		}
		dir := filepath.Join(t.TempDir(), "restored")
		if err := Restore(bytes.NewReader(b), dir); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		checkRestored(t, dir, "snap", "shot")

		b[10] ^= 1
		if err := Restore(bytes.NewReader(b), filepath.Join(t.TempDir(), "bad")); !errors.Is(err, ember.ErrCorrupt) {
			t.Errorf("Restore of a corrupted snapshot: %v, want %v", err, ember.ErrCorrupt)
		}
	})
}

// TestMaintenance_Snapshot_EtcdctlSave takes a snapshot the way `etcdctl snapshot save` does.
func TestMaintenance_Snapshot_EtcdctlSave(t *testing.T) {
	st := openStore(t)
	cli := serveTCP(t, st)
	mustPut(t, cli, "snap", "saved")
	path := filepath.Join(t.TempDir(), "snap.db")
	cfg := clientv3.Config{Endpoints: cli.Endpoints(), Logger: zap.NewNop()}
	if _, err := snapshot.SaveWithVersion(context.Background(), zap.NewNop(), cfg, path); err != nil {
		t.Fatalf("SaveWithVersion: %v", err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := filepath.Join(t.TempDir(), "restored")
	if err := Restore(f, dir); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	checkRestored(t, dir, "snap", "saved")
}
