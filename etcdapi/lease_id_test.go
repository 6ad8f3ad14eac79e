package etcdapi_test

import (
	"context"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/status"
)

// A lease granted with a client-chosen ID, through ember's gateway and through etcd: the same
// answers, step by step (duplicates refused with "lease already exists", negative IDs accepted,
// keys attachable, revocable).
func TestLeaseGrant_ClientChosenID_AsEtcd(t *testing.T) {
	ember, etcd := startEmber(t), startEtcd(t)
	grant := func(id, ttl int64) func(context.Context, *clientv3.Client) string {
		return func(ctx context.Context, cli *clientv3.Client) string {
			r, err := pb.NewLeaseClient(cli.ActiveConnection()).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: ttl})
			if err != nil {
				s, _ := status.FromError(err)
				return fmt.Sprintf("error %v: %s", s.Code(), s.Message())
			}
			return fmt.Sprintf("ID %d TTL %d", r.ID, r.TTL)
		}
	}
	steps := []asEtcdStep[*clientv3.Client]{
		{"grant 0x1234", grant(0x1234, 60)},
		{"grant 0x1234 again", grant(0x1234, 30)},
		{"grant -7", grant(-7, 60)},
		{"grant -7 again", grant(-7, 60)},
		{"grant TTL too large", grant(99, 9_000_000_001)},
		{"put on 0x1234 and -7", func(ctx context.Context, cli *clientv3.Client) string {
			_, err1 := cli.Put(ctx, "a", "1", clientv3.WithLease(0x1234))
			_, err2 := cli.Put(ctx, "b", "2", clientv3.WithLease(-7))
			return fmt.Sprint(err1, err2)
		}},
		{"time to live -7", func(ctx context.Context, cli *clientv3.Client) string {
			r, err := cli.TimeToLive(ctx, -7, clientv3.WithAttachedKeys())
			if err != nil {
				return err.Error()
			}
			return fmt.Sprintf("ID %d granted %d keys %q", r.ID, r.GrantedTTL, r.Keys)
		}},
		{"leases", func(ctx context.Context, cli *clientv3.Client) string {
			r, err := cli.Leases(ctx)
			if err != nil {
				return err.Error()
			}
			ids := map[clientv3.LeaseID]bool{}
			for _, l := range r.Leases {
				ids[l.ID] = true
			}
			return fmt.Sprint(len(ids), ids[0x1234], ids[-7])
		}},
		{"revoke -7", func(ctx context.Context, cli *clientv3.Client) string {
			_, err := cli.Revoke(ctx, -7)
			r, gerr := cli.Get(ctx, "b")
			if gerr != nil {
				return gerr.Error()
			}
			return fmt.Sprint(err, " keys left ", r.Count)
		}},
		{"grant -7 after its revoke", grant(-7, 60)},
	}
	sameAsEtcd(t, map[string]*clientv3.Client{"ember": newClient(t, ember), "etcd": newClient(t, etcd)}, steps)
}
