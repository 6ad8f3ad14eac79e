package etcdapi

import (
	"context"
	"fmt"
	"net"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/ember-kv/ember"
)

// inProcessBuffer is the size of the in-memory pipe between NewClient's client and server.
const inProcessBuffer = 1 << 20

// NewClient returns an etcd client served by st inside this process, without sockets: a gRPC
// server with the gateway's services listens on an in-memory pipe that only this client dials.
// Code written against clientv3, go.etcd.io/etcd/client/v3/concurrency included, runs on it
// unchanged. Closing the client stops that server. The client is safe for concurrent use, as
// every clientv3.Client. As the in-process ember API, it is not authenticated: with etcd's auth
// enabled (through a gateway's Auth service) it may still do anything.
func NewClient(st *ember.Store) *clientv3.Client {
	cfg := newConfig(nil)
	lis := bufconn.Listen(inProcessBuffer)
	srv := newServer(cfg)
	g := newGateway(st, cfg)
	g.trusted = true
	register(srv, g)
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(lis) // returns when srv stops
	}()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{"ember"},
		Logger:    zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return lis.DialContext(ctx)
		})},
	})
	if err != nil {
		// clientv3.New fails only on a bad configuration (TLS, auth, logger), and this one is fixed.
		panic(fmt.Sprintf("etcdapi: NewClient: %v", err))
	}
	go func() {
		<-cli.Ctx().Done()
		srv.Stop()
		<-served
	}()
	return cli
}
