package ember

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ember-kv/ember/internal/freeport"
	"github.com/hashicorp/raft"
)

// failingStable fails every write once failing is set.
type failingStable struct {
	raft.StableStore
	failing *atomic.Bool
}

func (f failingStable) SetUint64(k []byte, v uint64) error {
	if f.failing.Load() {
		return fmt.Errorf("write %s: %w", k, syscall.EIO)
	}
	return f.StableStore.SetUint64(k, v)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	a, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// raft panics when it cannot persist a new term; ember stops the member instead, and the host
// process (this test) goes on, as does the rest of the cluster.
func TestStorageGuard_TermWriteFailureStopsMemberNotProcess(t *testing.T) {
	ids := []string{"g1", "g2", "g3"}
	peers := map[string]string{}
	for _, id := range ids {
		peers[id] = freeAddr(t)
	}
	var failing atomic.Bool
	stores := map[string]*Store{}
	for _, id := range ids {
		opts := []Option{WithNodeID(id), WithBindAddr(peers[id]), WithInitialCluster(peers),
			WithHeartbeatTimeout(500 * time.Millisecond), WithElectionTimeout(500 * time.Millisecond)}
		if id == "g3" {
			opts = append(opts, func(c *config) error {
				c.wrapStores = func(l raft.LogStore, s raft.StableStore) (raft.LogStore, raft.StableStore) {
					return l, failingStable{s, &failing}
				}
				return nil
			})
		}
		s, err := Open(t.TempDir(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		stores[id] = s
		t.Cleanup(func() { s.Close() })
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range stores {
		if err := s.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var leader *Store
	for _, s := range stores {
		if s.IsLeader() {
			leader = s
		}
	}
	if leader == nil || leader.ID() == "g3" {
		if err := stores["g3"].TransferLeadership(ctx, "g1"); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, func() bool { return stores["g1"].IsLeader() })
		leader = stores["g1"]
	}
	if _, err := leader.Put(ctx, "before", "v"); err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	// A new term reaches g3 with the next leader's first append: g3 must persist it, and fails.
	other := "g1"
	if leader.ID() == "g1" {
		other = "g2"
	}
	if err := leader.TransferLeadership(ctx, other); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return stores["g3"].stopped() })
	_, err := stores["g3"].Put(ctx, "k", "v")
	if !errors.Is(err, ErrStopped) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("put on the failed member: %v, want ErrStopped wrapping EIO", err)
	}
	// The other two still form a quorum.
	if _, err := stores[other].Put(ctx, "after", "v"); err != nil {
		t.Fatalf("cluster after a member's storage failed: %v", err)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
