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
	endpoints := map[string]string{"ember": startEmber(t), "etcd": startEtcd(t)}
	errText := func(err error) string {
		s, _ := status.FromError(err)
		return fmt.Sprintf("error %v: %s", s.Code(), s.Message())
	}
	steps := []struct {
		name string
		run  func(ctx context.Context, endpoint string, cli *clientv3.Client) string
	}{
		{"a client with credentials connects and writes", func(ctx context.Context, endpoint string, _ *clientv3.Client) string {
			c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: ctlTimeout,
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
		{"auth status", func(ctx context.Context, _ string, cli *clientv3.Client) string {
			r, err := cli.AuthStatus(ctx)
			if err != nil {
				return errText(err)
			}
			return fmt.Sprintf("enabled=%v revision=%d", r.Enabled, r.AuthRevision)
		}},
		{"authenticate", func(ctx context.Context, _ string, cli *clientv3.Client) string {
			_, err := cli.Authenticate(ctx, "alice", "secret")
			return errText(err)
		}},
		{"enable without a root user", func(ctx context.Context, _ string, cli *clientv3.Client) string {
			_, err := cli.AuthEnable(ctx)
			return errText(err)
		}},
		{"disable while disabled", func(ctx context.Context, _ string, cli *clientv3.Client) string {
			if _, err := cli.AuthDisable(ctx); err != nil {
				return errText(err)
			}
			return "ok"
		}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
	defer cancel()
	clients := map[string]*clientv3.Client{}
	for name, ep := range endpoints {
		clients[name] = newClient(t, ep)
	}
	for _, s := range steps {
		got := map[string]string{}
		for name, ep := range endpoints {
			got[name] = s.run(ctx, ep, clients[name])
		}
		if got["ember"] != got["etcd"] {
			t.Errorf("%s:\n ember: %s\n  etcd: %s", s.name, got["ember"], got["etcd"])
		} else {
			t.Logf("%s: %s", s.name, got["etcd"])
		}
	}
}
