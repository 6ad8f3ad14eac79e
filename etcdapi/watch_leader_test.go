package etcdapi

import (
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ember-kv/ember/embertest"
)

// clientv3.WithRequireLeader through the gateway of a member cut off from the leader: the watch
// stream ends with etcd's "no leader", which clientv3 delivers as a canceled response whose Err
// is rpctypes.ErrNoLeader; a new one is refused the same way; a watch without it stays open and
// resumes after the heal.
func TestWatch_RequireLeader_CutOff(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := testCtx(t)
	l, f := c.Leader().Store(), c.Followers()[0]
	cli := serveTCP(t, f.Store())
	cut := cli.Watch(clientv3.WithRequireLeader(ctx), "k", clientv3.WithCreatedNotify())
	plain := cli.Watch(ctx, "k", clientv3.WithCreatedNotify())
	for _, wc := range []clientv3.WatchChan{cut, plain} {
		if wr := nextWatch(t, wc); !wr.Created {
			t.Fatalf("first response %+v, want created", wr)
		}
	}

	c.Partition(f.ID)
	if _, err := l.Put(ctx, "k", "while cut off"); err != nil {
		t.Fatal(err)
	}
	wr := nextWatch(t, cut)
	if !wr.Canceled || !errors.Is(wr.Err(), rpctypes.ErrNoLeader) {
		t.Fatalf("require-leader watch: %+v (err %v), want canceled with %v", wr, wr.Err(), rpctypes.ErrNoLeader)
	}
	wr = nextWatch(t, cli.Watch(clientv3.WithRequireLeader(ctx), "k"))
	if !wr.Canceled || !errors.Is(wr.Err(), rpctypes.ErrNoLeader) {
		t.Fatalf("require-leader watch opened without a leader: %+v (err %v)", wr, wr.Err())
	}
	select {
	case wr := <-plain:
		t.Fatalf("plain watch on the cut-off member got %+v", wr)
	default:
	}

	c.Heal()
	wr = nextWatch(t, plain)
	if len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != "while cut off" {
		t.Fatalf("plain watch after the heal: %+v", wr)
	}
}
