package etcdapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ember-kv/ember"
)

func TestServe_Health(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		r, err := healthpb.NewHealthClient(cli.ActiveConnection()).Check(testCtx(t), &healthpb.HealthCheckRequest{})
		if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health = %v, %v; want SERVING", r, err)
		}
	})
}

// selfSignedTLS returns a server configuration for 127.0.0.1 and a pool that trusts it.
func selfSignedTLS(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

func TestServe_TLS(t *testing.T) {
	st := openStore(t)
	serverTLS, pool := selfSignedTLS(t)
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
