package etcdapi

import (
	"context"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ember-kv/ember"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 30 * time.Second

// openStore opens a single-member store with fast raft timings, closed in t.Cleanup.
func openStore(t testing.TB, opts ...ember.Option) *ember.Store {
	t.Helper()
	opts = append([]ember.Option{
		ember.WithHeartbeatTimeout(100 * time.Millisecond),
		ember.WithElectionTimeout(100 * time.Millisecond),
	}, opts...)
	st, err := ember.Open(t.TempDir(), opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := st.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	return st
}

// serveTCP serves st with Serve on a loopback listener and returns a clientv3 client for it.
// Both stop in t.Cleanup, and Serve must then return nil.
func serveTCP(t testing.TB, st *ember.Store, opts ...Option) *clientv3.Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, st, l, opts...) }()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{l.Addr().String()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		cancel()
		t.Fatalf("clientv3.New: %v", err)
	}
	t.Cleanup(func() {
		cli.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v", err)
		}
	})
	return cli
}

// inProcClient returns NewClient(st), closed in t.Cleanup.
func inProcClient(t testing.TB, st *ember.Store) *clientv3.Client {
	t.Helper()
	cli := NewClient(st)
	t.Cleanup(func() { cli.Close() })
	return cli
}

// transports are the two ways a client reaches the gateway; API tests run over both.
var transports = []struct {
	name   string
	client func(testing.TB, *ember.Store) *clientv3.Client
}{
	{"tcp", func(t testing.TB, st *ember.Store) *clientv3.Client { return serveTCP(t, st) }},
	{"inproc", inProcClient},
}

// forEachTransport runs fn as a subtest per transport, each with a fresh store.
func forEachTransport(t *testing.T, fn func(t *testing.T, st *ember.Store, cli *clientv3.Client)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			st := openStore(t)
			fn(t, st, tr.client(t, st))
		})
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t testing.TB, cli *clientv3.Client, key, val string, opts ...clientv3.OpOption) *clientv3.PutResponse {
	t.Helper()
	r, err := cli.Put(testCtx(t), key, val, opts...)
	if err != nil {
		t.Fatalf("Put %q: %v", key, err)
	}
	return r
}
