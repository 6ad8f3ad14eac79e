package etcdapi

import (
	"context"
	"errors"
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/ember-kv/ember"
)

func TestLease_GrantTimeToLiveRevoke(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		ctx := testCtx(t)
		g, err := cli.Grant(ctx, 60)
		if err != nil {
			t.Fatalf("Grant: %v", err)
		}
		if g.ID == 0 || g.TTL != 60 {
			t.Errorf("grant = ID %x TTL %d, want a non-zero ID and TTL 60", g.ID, g.TTL)
		}
		mustPut(t, cli, "l/1", "v", clientv3.WithLease(g.ID))
		mustPut(t, cli, "l/2", "v", clientv3.WithLease(g.ID))

		ttl, err := cli.TimeToLive(ctx, g.ID, clientv3.WithAttachedKeys())
		if err != nil {
			t.Fatalf("TimeToLive: %v", err)
		}
		var keys []string
		for _, k := range ttl.Keys {
			keys = append(keys, string(k))
		}
		slices.Sort(keys)
		if ttl.GrantedTTL != 60 || ttl.TTL <= 0 || ttl.TTL > 60 || !slices.Equal(keys, []string{"l/1", "l/2"}) {
			t.Errorf("TimeToLive = TTL %d granted %d keys %v", ttl.TTL, ttl.GrantedTTL, keys)
		}
		leases, err := cli.Leases(ctx)
		if err != nil {
			t.Fatalf("Leases: %v", err)
		}
		if len(leases.Leases) != 1 || leases.Leases[0].ID != g.ID {
			t.Errorf("Leases = %v, want [%x]", leases.Leases, g.ID)
		}
		if _, err := cli.Revoke(ctx, g.ID); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		if r, err := cli.Get(ctx, "l/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || r.Count != 0 {
			t.Errorf("after revoke: count %v, err %v; want 0 keys", r, err)
		}
		ttl, err = cli.TimeToLive(ctx, g.ID)
		if err != nil || ttl.TTL != -1 {
			t.Errorf("TimeToLive of a revoked lease = %v, %v; want TTL -1", ttl, err)
		}
	})
}

func TestLease_Grant_Errors(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		ctx := testCtx(t)
		if _, err := cli.Grant(ctx, 1<<40); !errors.Is(err, rpctypes.ErrLeaseTTLTooLarge) {
			t.Errorf("huge TTL: %v, want %v", err, rpctypes.ErrLeaseTTLTooLarge)
		}
		lc := pb.NewLeaseClient(cli.ActiveConnection())
		if r, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 42, TTL: 60}); err != nil || r.ID != 42 {
			t.Errorf("client-chosen ID: %v, %v; want lease 42", r, err)
		}
		_, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 42, TTL: 60})
		if !errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseExist) || status.Code(err) != codes.FailedPrecondition {
			t.Errorf("client-chosen ID in use: %v, want %v", err, rpctypes.ErrGRPCLeaseExist)
		}
	})
}

func TestLease_KeepAlive(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		g, err := cli.Grant(ctx, 60)
		if err != nil {
			t.Fatalf("Grant: %v", err)
		}
		once, err := cli.KeepAliveOnce(ctx, g.ID)
		if err != nil || once.TTL != 60 || once.ID != g.ID {
			t.Fatalf("KeepAliveOnce = %v, %v; want TTL 60", once, err)
		}
		ch, err := cli.KeepAlive(ctx, g.ID)
		if err != nil {
			t.Fatalf("KeepAlive: %v", err)
		}
		if r := <-ch; r == nil || r.ID != g.ID || r.TTL != 60 {
			t.Errorf("first keepalive = %v, want TTL 60", r)
		}
		if _, err := cli.Revoke(ctx, g.ID); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		// clientv3 closes the channel once a renewal answers TTL 0 (lease gone), or the next
		// renewal, due in a third of the TTL, finds it gone; KeepAliveOnce shows the answer now.
		if _, err := cli.KeepAliveOnce(ctx, g.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			t.Errorf("KeepAliveOnce of a revoked lease: %v, want %v", err, rpctypes.ErrLeaseNotFound)
		}
	})
}
