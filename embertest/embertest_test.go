package embertest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ember-kv/ember/embertest"
)

func TestCluster_StopRestartPartitionHeal(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := c.Leader()
	if _, err := l.Store().Put(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	f := c.Followers()[0]
	c.Stop(f.ID)
	if f.Store() != nil || len(c.Running()) != 2 {
		t.Fatal("stopped member still running")
	}
	if s := c.Restart(f.ID); s == nil || f.Store() != s {
		t.Fatal("restart did not reopen the member")
	}
	c.WaitReady()

	c.Partition(f.ID)
	rctx, rcancel := context.WithTimeout(ctx, time.Second)
	_, err := f.Store().Get(rctx, "k")
	rcancel()
	if err == nil {
		t.Fatal("a partitioned follower served a linearizable read")
	}
	if _, err := c.Network().Dialer(f.ID)(ctx, l.Addr); !errors.Is(err, embertest.ErrCut) {
		t.Fatalf("dial across a cut: %v, want ErrCut", err)
	}
	c.Heal()
	deadline := time.Now().Add(20 * time.Second)
	for {
		g, err := f.Store().Get(ctx, "k")
		if err == nil && len(g.Kvs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healed member does not serve: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
