package etcdapi_test

import (
	"context"
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/status"
)

// With authentication disabled, ember's gateway answers etcd's Auth service as etcd does: a
// client configured with a user and password (clientv3 authenticates when it connects) connects
// and works, AuthStatus says disabled, enabling is refused for want of a root user, disabling is
// a no-op. Before, every Auth call was Unimplemented, so such a client could not connect.
func TestAuth_Disabled_AsEtcd(t *testing.T) {
	type target struct {
		endpoint string
		cli      *clientv3.Client
	}
	targets := map[string]target{}
	for name, ep := range map[string]string{"ember": startEmber(t), "etcd": startEtcd(t)} {
		targets[name] = target{endpoint: ep, cli: newClient(t, ep)}
	}
	errText := func(err error) string {
		s, _ := status.FromError(err)
		return fmt.Sprintf("error %v: %s", s.Code(), s.Message())
	}
	steps := []asEtcdStep[target]{
		{"a client with credentials connects and writes", func(ctx context.Context, tg target) string {
			c, err := clientv3.New(clientv3.Config{Endpoints: []string{tg.endpoint}, DialTimeout: ctlTimeout,
				Username: "alice", Password: "secret", Logger: zap.NewNop()})
			if err != nil {
				return "connect: " + errText(err)
			}
			defer c.Close()
			if _, err := c.Put(ctx, "k", "v"); err != nil {
				return "put: " + errText(err)
			}
			g, err := c.Get(ctx, "k")
			if err != nil {
				return "get: " + errText(err)
			}
			return fmt.Sprintf("ok: %d kvs", len(g.Kvs))
		}},
		{"auth status", func(ctx context.Context, tg target) string {
			r, err := tg.cli.AuthStatus(ctx)
			if err != nil {
				return errText(err)
			}
			return fmt.Sprintf("enabled=%v revision=%d", r.Enabled, r.AuthRevision)
		}},
		{"authenticate", func(ctx context.Context, tg target) string {
			_, err := tg.cli.Authenticate(ctx, "alice", "secret")
			return errText(err)
		}},
		{"enable without a root user", func(ctx context.Context, tg target) string {
			_, err := tg.cli.AuthEnable(ctx)
			return errText(err)
		}},
		{"disable while disabled", func(ctx context.Context, tg target) string {
			if _, err := tg.cli.AuthDisable(ctx); err != nil {
				return errText(err)
			}
			return "ok"
		}},
	}
	sameAsEtcd(t, targets, steps)
}
