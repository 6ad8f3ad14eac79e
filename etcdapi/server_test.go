package etcdapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/internal/testcerts"
)

func TestServe_Health(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		r, err := healthpb.NewHealthClient(cli.ActiveConnection()).Check(testCtx(t), &healthpb.HealthCheckRequest{})
		if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health = %v, %v; want SERVING", r, err)
		}
	})
}

// gatewayTLS returns a server configuration for 127.0.0.1 and a pool that trusts it.
func gatewayTLS(t testing.TB) (*tls.Config, *x509.CertPool) {
	ca := testcerts.NewCA(t, "etcdapi test CA")
	return &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, "gateway", x509.ExtKeyUsageServerAuth)}}, ca.Pool
}

func TestServe_TLS(t *testing.T) {
	st := openStore(t)
	serverTLS, pool := gatewayTLS(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, st, l, WithTLS(serverTLS)) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v", err)
		}
	}()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{"https://" + l.Addr().String()}, TLS: &tls.Config{RootCAs: pool},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("clientv3.New: %v", err)
	}
	defer cli.Close()
	mustPut(t, cli, "tls", "v")
	members, err := cli.MemberList(testCtx(t))
	if err != nil {
		t.Fatalf("MemberList: %v", err)
	}
	if w := "https://" + l.Addr().String(); len(members.Members[0].ClientURLs) != 1 || members.Members[0].ClientURLs[0] != w {
		t.Errorf("client URLs %v, want [%s]", members.Members[0].ClientURLs, w)
	}
}

func TestServe_ListenerError(t *testing.T) {
	st := openStore(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := Serve(testCtx(t), st, l); err == nil {
		t.Error("Serve on a closed listener returned nil")
	}
}

// TestWatch_Progress_NoWatches checks etcd's stream-wide answer to a progress request on a
// stream without watches.
func TestWatch_Progress_NoWatches(t *testing.T) {
	st := openStore(t)
	cli := inProcClient(t, st)
	rev := mustPut(t, cli, "k", "v").Header.Revision
	ws := rawWatch(t, cli)
	if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if r := rawRecv(t, ws); r.WatchId != invalidWatchID || r.Header.Revision != rev || len(r.Events) != 0 {
		t.Errorf("progress = %v, want watch ID -1 at revision %d", r, rev)
	}
}
