package ember_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/internal/syncbuf"
	"github.com/ember-kv/ember/internal/testcerts"
)

// mutualTLS returns ember.WithTLS configs for mutual TLS: cert is presented on both sides, the
// listener demands a client certificate signed by clientCAs, and the dialer trusts serverCAs.
func mutualTLS(cert tls.Certificate, clientCAs, serverCAs *x509.CertPool) (server, client *tls.Config) {
	server = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    clientCAs,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: serverCAs}
	return server, client
}

// logBuffer collects log output written from many goroutines while the test reads it.
type logBuffer struct{ syncbuf.Buffer }

// warnLogger logs warnings and errors only, as an operator would run, so a refusal must be
// visible at that level.
func (b *logBuffer) warnLogger() ember.Option {
	return ember.WithLogger(hclog.New(&hclog.LoggerOptions{Output: b, Level: hclog.Warn}))
}

// waitLogLine waits until a warning line of the log contains every one of parts.
func (b *logBuffer) waitLogLine(t *testing.T, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for line := range strings.Lines(b.String()) {
			if strings.Contains(line, "[WARN]") && tlsContainsAll(line, parts) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no warning containing %q in the log:\n%s", parts, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tlsContainsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func tlsCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// tlsMemberIDs lists the IDs the cluster's configuration holds, as s sees it.
func tlsMemberIDs(t *testing.T, s *ember.Store) []string {
	t.Helper()
	ms, err := s.Members(tlsCtx(t, 10*time.Second))
	if err != nil {
		t.Fatalf("Members: %v", err)
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	return ids
}

// TestTLSCluster runs every kind of peer traffic over mutual TLS: raft replication and elections
// (the cluster forms), forwarded writes and read-index requests (writes and linearizable reads on
// followers), and a join (the join RPC, then raft catching the new member up).
func TestTLSCluster(t *testing.T) {
	ca := testcerts.NewCA(t, "ember test CA")
	srv, cli := mutualTLS(ca.Leaf(t, "member"), ca.Pool, ca.Pool)
	var logs logBuffer
	c := embertest.NewCluster(t, 3, ember.WithTLS(srv, cli), logs.warnLogger())
	ctx := tlsCtx(t, 60*time.Second)

	leader := c.Leader()
	followers := c.Followers()
	if _, err := followers[0].Store().Put(ctx, "k", "from-follower"); err != nil {
		t.Fatalf("Put on follower %s (forwarded to the leader): %v", followers[0].ID, err)
	}
	if _, err := leader.Store().Put(ctx, "k2", "from-leader"); err != nil {
		t.Fatalf("Put on leader: %v", err)
	}
	// A linearizable read on a follower asks the leader for its commit index, so it must see the
	// write just acknowledged by the leader.
	for _, f := range followers {
		for key, want := range map[string]string{"k": "from-follower", "k2": "from-leader"} {
			r, err := f.Store().Get(ctx, key)
			if err != nil {
				t.Fatalf("linearizable Get(%q) on follower %s: %v", key, f.ID, err)
			}
			if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != want {
				t.Fatalf("Get(%q) on follower %s = %v, want %q", key, f.ID, r.Kvs, want)
			}
		}
	}

	m4 := c.Join("m4") // the cluster's options, WithTLS included, apply to it too
	if got, want := tlsMemberIDs(t, leader.Store()), []string{"m1", "m2", "m3", "m4"}; !slices.Equal(got, want) {
		t.Fatalf("members after join = %v, want %v", got, want)
	}
	if _, err := m4.Store().Put(ctx, "k4", "from-joiner"); err != nil {
		t.Fatalf("Put on joined member: %v", err)
	}
	r, err := m4.Store().Get(ctx, "k")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "from-follower" {
		t.Fatalf("linearizable Get on joined member = %v, %v", r, err)
	}
	if got := logs.String(); strings.Contains(got, "handshake failed") {
		t.Fatalf("a peer with a valid certificate was refused:\n%s", got)
	}
}

// TestTLSRefusesPeers shows that the peer port of a mutual-TLS cluster serves nobody without a
// certificate from the cluster's CA, and that each refusal is logged as a warning.
func TestTLSRefusesPeers(t *testing.T) {
	ca := testcerts.NewCA(t, "ember test CA")
	srv, cli := mutualTLS(ca.Leaf(t, "member"), ca.Pool, ca.Pool)
	var logs logBuffer
	c := embertest.NewCluster(t, 3, ember.WithTLS(srv, cli), logs.warnLogger())
	target := c.Members()[0]
	// The RPC protocol byte and a status request (length 9 | call ID 1 | method 6), as a peer
	// sends them once connected.
	statusRPC := []byte{'E', 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 6}

	t.Run("no client certificate", func(t *testing.T) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", target.Addr,
			&tls.Config{RootCAs: ca.Pool})
		if err == nil {
			defer conn.Close()
			// Under TLS 1.3 the client finishes its side of the handshake before the server
			// checks the client's certificate; the refusal arrives as an alert on the first read.
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err = conn.Write(statusRPC); err == nil {
				var b [64]byte
				var n int
				n, err = conn.Read(b[:])
				if n > 0 {
					t.Fatalf("a client without a certificate got %d bytes back: %q", n, b[:n])
				}
			}
		}
		if err == nil {
			t.Fatal("a TLS client without a certificate was served")
		}
		if errors.Is(err, io.EOF) || tlsIsTimeout(err) {
			t.Fatalf("refusal came without a TLS alert: %v", err)
		}
		t.Logf("client sees: %v", err)
		logs.waitLogLine(t, "peer: handshake failed", "tls:", "didn't provide a certificate")
	})

	t.Run("plaintext", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", target.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(statusRPC); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(conn)
		if len(b) > 0 {
			t.Fatalf("a plaintext client got %d bytes back: %q", len(b), b)
		}
		if tlsIsTimeout(err) {
			t.Fatal("the member kept a plaintext connection open instead of closing it")
		}
		logs.waitLogLine(t, "peer: handshake failed", "first record does not look like a TLS handshake")
	})

	t.Run("certificate from another CA", func(t *testing.T) {
		// The intruder trusts the cluster's CA, so it accepts the members' certificates; the
		// refusal must come from the members checking its own certificate. It presents that
		// certificate even though the members ask for one from their CA (crypto/tls would
		// otherwise send none, the case above).
		rogueCA := testcerts.NewCA(t, "rogue CA")
		rogueCert := rogueCA.Leaf(t, "rogue")
		rsrv, rcli := mutualTLS(rogueCert, rogueCA.Pool, ca.Pool)
		rcli.Certificates = nil
		rcli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &rogueCert, nil
		}
		var seeds []string
		for _, m := range c.Members() {
			seeds = append(seeds, m.Addr)
		}
		var rogueLogs logBuffer
		rogue, err := ember.Open(t.TempDir(), ember.WithNodeID("rogue"),
			ember.WithBindAddr(embertest.FreeAddr(t)), ember.WithJoin(seeds...),
			ember.WithTLS(rsrv, rcli), rogueLogs.warnLogger(),
			ember.WithHeartbeatTimeout(500*time.Millisecond), ember.WithElectionTimeout(500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer rogue.Close()
		if err := rogue.WaitReady(tlsCtx(t, 3*time.Second)); err == nil {
			t.Fatal("a member with a certificate from another CA joined the cluster")
		}
		logs.waitLogLine(t, "peer: handshake failed", "tls:", "certificate signed by unknown authority")
		rogueLogs.waitLogLine(t, "join through seed failed")
		if got, want := tlsMemberIDs(t, c.Leader().Store()), []string{"m1", "m2", "m3"}; !slices.Equal(got, want) {
			t.Fatalf("members after the refused join = %v, want %v", got, want)
		}
	})
}

func tlsIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
