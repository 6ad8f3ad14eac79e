package ember_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

func TestStore_SnapshotRestore(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	l := c.Leader().Store()
	for i := 0; i < 50; i++ {
		if _, err := l.Put(ctx, "b/"+string(rune('a'+i%26)), "v"); err != nil {
			t.Fatal(err)
		}
	}
	lease, err := l.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Put(ctx, "b/leased", "v", ember.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Compact(ctx, 20); err != nil {
		t.Fatal(err)
	}
	want, err := l.Get(ctx, "", ember.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if err := l.Snapshot(ctx, &backup); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "restored")
	if err := ember.Restore(bytes.NewReader(backup.Bytes()), dir, ember.WithNodeID("solo")); err != nil {
		t.Fatal(err)
	}
	s, err := ember.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "", ember.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	if kvString(got.Kvs) != kvString(want.Kvs) || got.Header.Revision != want.Header.Revision {
		t.Fatalf("restored: rev %d %d keys; backup: rev %d %d keys", got.Header.Revision, len(got.Kvs), want.Header.Revision, len(want.Kvs))
	}
	if s.ID() != "solo" {
		t.Fatalf("restored member ID %q", s.ID())
	}
	if ms, err := s.Members(ctx); err != nil || len(ms) != 1 || ms[0].ID != "solo" {
		t.Fatalf("restored membership: %+v %v", ms, err)
	}
	// History and compaction carry over; so does the lease, which can be revoked.
	if _, err := s.Get(ctx, "b/a", ember.WithRev(19)); !errors.Is(err, ember.ErrCompacted) {
		t.Fatalf("read below the compaction: %v", err)
	}
	if _, err := s.Get(ctx, "b/a", ember.WithRev(21)); err != nil {
		t.Fatalf("history after the compaction: %v", err)
	}
	if _, err := s.Revoke(ctx, lease.ID); err != nil {
		t.Fatalf("revoke restored lease: %v", err)
	}
	// The restored member takes new writes at the next revision.
	p, err := s.Put(ctx, "after", "v")
	if err != nil || p.Header.Revision != want.Header.Revision+2 {
		t.Fatalf("put after restore: %v at %d", err, p.Header.Revision)
	}
	// And it restarts from its dir.
	s.Close()
	s2, err := ember.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if g, err := s2.Get(ctx, "after"); err != nil || len(g.Kvs) != 1 {
		t.Fatalf("after restart: %v %+v", err, g)
	}
}

func TestRestore_RefusesBadInput(t *testing.T) {
	s := openMemStore(t)
	ctx := ctxFor(t, 30*time.Second)
	for i := 0; i < 20; i++ {
		s.Put(ctx, "k", "v")
	}
	var backup bytes.Buffer
	if err := s.Snapshot(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	b := backup.Bytes()
	corrupt := bytes.Clone(b)
	corrupt[len(corrupt)/2] ^= 0x40
	tests := []struct {
		name string
		data []byte
	}{
		{"flipped byte", corrupt},
		{"truncated", b[:len(b)-3]},
		{"empty", nil},
		{"not a backup", []byte("hello, world")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "r")
			err := ember.Restore(bytes.NewReader(tc.data), dir)
			if !errors.Is(err, ember.ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("a refused restore left %s behind", dir)
			}
		})
	}
	// A dir that already holds data is refused.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ember.Restore(bytes.NewReader(b), dir); err == nil {
		t.Fatal("restore into a non-empty dir succeeded")
	}
}
