package peer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/ember-kv/ember/internal/syncbuf"
	"github.com/ember-kv/ember/internal/testcerts"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startMux serves a Mux on a fresh loopback port and closes it when the test ends, checking
// that Serve returned nil.
func startMux(t testing.TB, tlsConf *tls.Config, logger hclog.Logger) *Mux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveMux(t, NewMux(ln, tlsConf, nil, logger))
}

func serveMux(t testing.TB, m *Mux) *Mux {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- m.Serve() }()
	t.Cleanup(func() {
		m.Close()
		if err := <-errc; err != nil {
			t.Errorf("Mux.Serve: %v", err)
		}
	})
	return m
}

// rpcServer is a Server behind its own Mux on loopback.
type rpcServer struct {
	addr     string
	mux      *Mux
	srv      *Server
	accepted *atomic.Int64 // RPC connections accepted
	errc     chan error
}

// startRPC serves h on addr ("127.0.0.1:0" for a fresh port). setup, if non-nil, adjusts the
// Server before Serve.
func startRPC(t testing.TB, addr string, h Handler, setup func(*Server)) *rpcServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m := serveMux(t, NewMux(ln, nil, nil, nil))
	cl := &countingListener{Listener: m.Listen(ProtoRPC), n: new(atomic.Int64)}
	s := &rpcServer{addr: ln.Addr().String(), mux: m, srv: NewServer(cl, h, nil), accepted: cl.n, errc: make(chan error, 1)}
	if setup != nil {
		setup(s.srv)
	}
	go func() { s.errc <- s.srv.Serve() }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop closes the server and its mux; it may be called more than once.
func (s *rpcServer) stop(t testing.TB) {
	t.Helper()
	s.srv.Close()
	s.mux.Close()
	if s.errc == nil {
		return
	}
	if err := <-s.errc; err != nil {
		t.Errorf("Server.Serve: %v", err)
	}
	s.errc = nil
}

// startRPCOnHandler serves h on m's RPC sub-listener until the test ends.
func startRPCOnHandler(t *testing.T, m *Mux, h Handler) {
	srv := NewServer(m.Listen(ProtoRPC), h, nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-errc; err != nil {
			t.Errorf("Server.Serve: %v", err)
		}
	})
}

func newClient(t testing.TB, cfg ClientConfig) *Client {
	t.Helper()
	c := NewClient(cfg)
	t.Cleanup(func() { c.Close() })
	return c
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func echo(_ context.Context, method uint8, req []byte) ([]byte, error) {
	return append([]byte{method}, req...), nil
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func bufferLogger(b *syncbuf.Buffer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: b, Level: hclog.Debug})
}

// testPKI is a throwaway CA with a server certificate for 127.0.0.1 and a client certificate.
type testPKI struct {
	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca := testcerts.NewCA(t, "ember test CA")
	return &testPKI{
		pool:   ca.Pool,
		server: ca.Leaf(t, "member", x509.ExtKeyUsageServerAuth),
		client: ca.Leaf(t, "member-client", x509.ExtKeyUsageClientAuth),
	}
}

func (p *testPKI) serverConf() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientCAs:    p.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

func (p *testPKI) clientConf(withCert bool) *tls.Config {
	c := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS12}
	if withCert {
		c.Certificates = []tls.Certificate{p.client}
	}
	return c
}
