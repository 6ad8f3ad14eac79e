package ember_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/internal/peer"
	"github.com/ember-kv/ember/internal/testcerts"
)

// Distinctive tokens, so that a log line or error holding one is easy to spot.
const (
	clusterToken  = "cluster-token-7f3c9a1d2b4e6f8091a2"
	strangerToken = "stranger-token-0c4b8e2f6a1d395746"
)

// debugLogger sends everything, Debug and up, to b: a token must not show at any level.
func (b *logBuffer) debugLogger() ember.Option {
	return ember.WithLogger(hclog.New(&hclog.LoggerOptions{Output: b, Level: hclog.Debug}))
}

// noTokenIn fails if any of texts holds either token.
func noTokenIn(t *testing.T, texts ...string) {
	t.Helper()
	for _, s := range texts {
		for _, tok := range []string{clusterToken, strangerToken} {
			if strings.Contains(s, tok) {
				t.Fatalf("a token leaked into:\n%s", s)
			}
		}
	}
}

// wireTap records every byte members send and receive on the connections they dial.
type wireTap struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (w *wireTap) add(p []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
}

func (w *wireTap) size() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Len()
}

func (w *wireTap) contains(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Contains(w.buf.Bytes(), []byte(s))
}

func (w *wireTap) dialer() ember.Option {
	return ember.WithDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return &tappedConn{Conn: c, tap: w}, nil
	})
}

type tappedConn struct {
	net.Conn
	tap *wireTap
}

func (c *tappedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.tap.add(p[:n])
	return n, err
}

func (c *tappedConn) Write(p []byte) (int, error) {
	c.tap.add(p)
	return c.Conn.Write(p)
}

// keyAbsent fails unless key has no value, read linearizably on s.
func keyAbsent(t *testing.T, s *ember.Store, key string) {
	t.Helper()
	g, err := s.Get(tlsCtx(t, 10*time.Second), key)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	if len(g.Kvs) != 0 {
		t.Fatalf("%s = %q: a refused request was applied", key, g.Kvs[0].Value)
	}
}

// openStranger opens a member that belongs to no cluster but its own, with a peer listener, so
// that its peer client can send raw requests to another cluster.
func openStranger(t *testing.T, logs *logBuffer, opts ...ember.Option) *ember.Store {
	t.Helper()
	opts = append([]ember.Option{ember.WithNodeID("stranger"), ember.WithBindAddr(embertest.FreeAddr(t)), logs.debugLogger()}, opts...)
	s, err := ember.Open(t.TempDir(), opts...)
	if err != nil {
		t.Fatalf("open stranger: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// peerRequest is one raw peer request a stranger tries.
type peerRequest struct {
	name   string
	method uint8
	req    []byte
}

// strangerRequests are the requests that would let a stranger in, write, read or reshape the
// cluster, and the key a forwarded write would create.
func strangerRequests(victim string) ([]peerRequest, string) {
	const key = "stranger/written"
	return []peerRequest{
		{"join", ember.PeerJoin, ember.JoinRequest("stranger", "127.0.0.1:1")},
		{"forward", ember.PeerForward, ember.ForwardedPut(key, "v")},
		{"forward batch", ember.PeerForwardBatch, ember.ForwardedBatch(key, "v")},
		{"read index", ember.PeerReadIndex, nil},
		{"remove", ember.PeerRemove, ember.MemberRequest(victim)},
		{"promote", ember.PeerPromote, ember.MemberRequest(victim)},
		{"update", ember.PeerUpdate, ember.UpdateRequest(victim, "127.0.0.1:1")},
		{"transfer", ember.PeerTransfer, ember.MemberRequest(victim)},
		{"status", ember.PeerStatus, nil},
		{"confirm", ember.PeerConfirm, ember.ConfirmRequest("stranger", 1, 1)},
	}, key
}

// TestClusterToken_ServesAndEncrypts: a cluster whose members share a token forms, takes writes
// on followers (forwarded), serves linearizable reads on followers (read index), fails over
// when its leader stops, and nothing it sends between members is readable on the wire.
func TestClusterToken_ServesAndEncrypts(t *testing.T) {
	var logs logBuffer
	tap := &wireTap{}
	c := embertest.NewCluster(t, 3, ember.WithClusterToken(clusterToken), tap.dialer(), logs.debugLogger())
	ctx := tlsCtx(t, 60*time.Second)
	canary := "plaintext-canary-" + strconv.FormatUint(rand.Uint64(), 16)

	followers := c.Followers()
	if _, err := followers[0].Store().Put(ctx, "canary", canary); err != nil {
		t.Fatalf("Put on follower %s: %v", followers[0].ID, err)
	}
	for _, f := range followers {
		g, err := f.Store().Get(ctx, "canary")
		if err != nil || len(g.Kvs) != 1 || string(g.Kvs[0].Value) != canary {
			t.Fatalf("Get on follower %s = %v, %v", f.ID, g, err)
		}
	}

	old := c.Leader()
	c.Stop(old.ID)
	leader := c.Leader()
	if leader == old {
		t.Fatalf("leader %s stopped but still leads", old.ID)
	}
	after := c.Followers()[0]
	if _, err := after.Store().Put(ctx, "after-failover", canary); err != nil {
		t.Fatalf("Put on follower %s after failover: %v", after.ID, err)
	}
	if g, err := after.Store().Get(ctx, "after-failover"); err != nil || len(g.Kvs) != 1 {
		t.Fatalf("Get after failover = %v, %v", g, err)
	}
	if got := tlsMemberIDs(t, leader.Store()); !slices.Equal(got, []string{"m1", "m2", "m3"}) {
		t.Fatalf("members %v", got)
	}

	if tap.size() == 0 || tap.contains(canary) {
		t.Fatal("a written value crossed the wire in plaintext")
	}
	noTokenIn(t, logs.String())
}

// TestClusterToken_RefusesStrangers: whoever lacks the token gets nothing done by the cluster:
// no join, forwarded write, read index or membership change, whether it holds another token,
// none, skips the proof or sends plaintext. Members log each refusal at Warn, and no token
// shows in any log or error.
func TestClusterToken_RefusesStrangers(t *testing.T) {
	var logs logBuffer
	c := embertest.NewCluster(t, 3, ember.WithClusterToken(clusterToken), logs.debugLogger())
	leader := c.Leader()
	victim := c.Followers()[0].ID
	requests, key := strangerRequests(victim)

	for _, tc := range []struct {
		name string
		opts []ember.Option
		// definite: the refusal comes before the request is sent, so the stranger knows it
		// had no effect. A stranger without TLS has written its request when the member hangs
		// up; it cannot know, but nothing was applied either.
		definite bool
		warning  string
	}{
		{"wrong token", []ember.Option{ember.WithClusterToken(strangerToken)}, true, "wrong proof"},
		{"no token", nil, false, "TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var strangerLogs logBuffer
			s := openStranger(t, &strangerLogs, tc.opts...)
			for _, r := range requests {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := ember.PeerCall(ctx, s, leader.Addr, r.method, r.req)
				cancel()
				if err == nil {
					t.Fatalf("%s: served", r.name)
				}
				if tc.definite && (!errors.Is(err, peer.ErrNotSent) || !errors.Is(err, peer.ErrAdmission)) {
					t.Fatalf("%s: %v; want a refusal before anything was sent", r.name, err)
				}
				noTokenIn(t, err.Error())
			}
			logs.waitLogLine(t, "handshake failed", tc.warning)
			noTokenIn(t, strangerLogs.String())
		})
	}

	// Raw clients that speak the peer protocol but skip the proof: the member hangs up without
	// a byte, and the requests they sent are not acted on.
	reqs := append(rawFrame(0, 0, []byte("m1")), rawFrame(1, ember.PeerForward, ember.ForwardedPut(key, "raw"))...)
	for _, tc := range []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"raw plaintext", func() (net.Conn, error) { return net.Dial("tcp", leader.Addr) }},
		{"raw TLS without proof", func() (net.Conn, error) {
			return tls.Dial("tcp", leader.Addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tc.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(append([]byte{peer.ProtoRPC}, reqs...)); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := conn.Read(make([]byte, 64))
			var ne net.Error
			if n != 0 || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
				t.Fatalf("Read = %d, %v; want the member to hang up without answering", n, err)
			}
		})
	}

	if got := tlsMemberIDs(t, leader.Store()); !slices.Equal(got, []string{"m1", "m2", "m3"}) {
		t.Fatalf("members %v after the strangers' requests", got)
	}
	keyAbsent(t, leader.Store(), key)
	noTokenIn(t, logs.String())
}

// rawFrame is a peer RPC request frame: length, call ID, method, payload (internal/peer).
func rawFrame(id uint64, method uint8, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(9+len(payload)))
	b = binary.BigEndian.AppendUint64(b, id)
	return append(append(b, method), payload...)
}

// TestPeerRPC_NonMemberRefused: a peer that holds the cluster's credentials (the token, or
// none on loopback) but is not a member may ask to join and send the read-only probes (status,
// a leader's confirmation round), and nothing else: no forwarded write, read index, promotion,
// removal or leadership transfer.
func TestPeerRPC_NonMemberRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []ember.Option
	}{
		{"token", []ember.Option{ember.WithClusterToken(clusterToken)}},
		{"no token on loopback", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logBuffer
			c := embertest.NewCluster(t, 3, append([]ember.Option{logs.debugLogger()}, tc.opts...)...)
			leader := c.Leader()
			victim := c.Followers()[0].ID
			s := openStranger(t, &logs, tc.opts...)
			requests, key := strangerRequests(victim)
			for _, r := range requests {
				if r.method == ember.PeerJoin {
					continue // allowed: TestClusterToken_JoinWithToken
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := ember.PeerCall(ctx, s, leader.Addr, r.method, r.req)
				cancel()
				switch {
				case r.method == ember.PeerStatus && err != nil:
					t.Fatalf("status probe from a non-member: %v", err)
				case r.method == ember.PeerConfirm && (err == nil || errors.Is(err, ember.ErrNotMember)):
					// Served, and answered that the member follows no leader called "stranger".
					t.Fatalf("confirmation round from a non-member: %v; want it served and refused on its merits", err)
				case r.method != ember.PeerStatus && r.method != ember.PeerConfirm && !errors.Is(err, ember.ErrNotMember):
					t.Fatalf("%s from a non-member: %v; want ErrNotMember", r.name, err)
				}
			}
			if got := tlsMemberIDs(t, leader.Store()); !slices.Equal(got, []string{"m1", "m2", "m3"}) {
				t.Fatalf("members %v after the non-member's requests", got)
			}
			if !leader.Store().IsLeader() {
				t.Fatalf("leadership moved on a non-member's request")
			}
			keyAbsent(t, leader.Store(), key)

			// A member's own request over the same path is served.
			ctx := tlsCtx(t, 10*time.Second)
			if _, err := ember.PeerCall(ctx, c.Followers()[0].Store(), leader.Addr, ember.PeerReadIndex, nil); err != nil {
				t.Fatalf("read index from a member: %v", err)
			}
		})
	}
}

// TestClusterToken_JoinWithToken: a new member with the cluster's token joins, is promoted and
// serves; with WithTLS as well, a peer needs both the certificate and the token.
func TestClusterToken_JoinWithToken(t *testing.T) {
	ca := testcerts.NewCA(t, "ember test CA")
	srv, cli := mutualTLS(ca.Leaf(t, "member"), ca.Pool, ca.Pool)
	var logs logBuffer
	c := embertest.NewCluster(t, 3, ember.WithTLS(srv, cli), ember.WithClusterToken(clusterToken), logs.debugLogger())
	ctx := tlsCtx(t, 60*time.Second)

	m4 := c.Join("m4")
	if _, err := m4.Store().Put(ctx, "from-m4", "v"); err != nil {
		t.Fatalf("Put on the joined member: %v", err)
	}
	if g, err := m4.Store().Get(ctx, "from-m4"); err != nil || len(g.Kvs) != 1 {
		t.Fatalf("Get on the joined member = %v, %v", g, err)
	}

	// The cluster's certificate without its token is not enough.
	s := openStranger(t, &logs, ember.WithTLS(srv, cli), ember.WithClusterToken(strangerToken))
	_, err := ember.PeerCall(ctx, s, c.Leader().Addr, ember.PeerJoin, ember.JoinRequest("stranger", "127.0.0.1:1"))
	if !errors.Is(err, peer.ErrNotSent) || !errors.Is(err, peer.ErrAdmission) {
		t.Fatalf("join with the certificate and another token = %v; want refused before sending", err)
	}
	if got := tlsMemberIDs(t, m4.Store()); !slices.Equal(got, []string{"m1", "m2", "m3", "m4"}) {
		t.Fatalf("members %v", got)
	}
	noTokenIn(t, logs.String())
}

// TestClusterToken_MemberWithTokenCannotReachClusterWithout: the token is not optional on
// either side; a member that proves it cannot talk to members that expect plaintext.
func TestClusterToken_MemberWithTokenCannotReachClusterWithout(t *testing.T) {
	var logs logBuffer
	c := embertest.NewCluster(t, 1, logs.debugLogger())
	s := openStranger(t, &logs, ember.WithClusterToken(clusterToken))
	ctx := tlsCtx(t, 10*time.Second)
	_, err := ember.PeerCall(ctx, s, c.Leader().Addr, ember.PeerStatus, nil)
	if !errors.Is(err, peer.ErrNotSent) {
		t.Fatalf("status from a member with a token to one without = %v; want refused before sending", err)
	}
	logs.waitLogLine(t, "unknown protocol byte")
	noTokenIn(t, logs.String())
}

// TestOpen_PeerListenerSecurity: a peer listener other hosts can reach needs WithTLS,
// WithClusterToken or an explicit WithInsecurePeers; a loopback one needs nothing.
func TestOpen_PeerListenerSecurity(t *testing.T) {
	ca := testcerts.NewCA(t, "ember test CA")
	srv, cli := mutualTLS(ca.Leaf(t, "member"), ca.Pool, ca.Pool)
	tests := []struct {
		name     string
		wildcard bool
		opts     []ember.Option
		wantErr  error
	}{
		{"all interfaces, nothing", true, nil, ember.ErrInsecurePeers},
		{"all interfaces, WithInsecurePeers", true, []ember.Option{ember.WithInsecurePeers()}, nil},
		{"all interfaces, WithClusterToken", true, []ember.Option{ember.WithClusterToken(clusterToken)}, nil},
		{"all interfaces, WithTLS", true, []ember.Option{ember.WithTLS(srv, cli)}, nil},
		{"loopback, nothing", false, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := embertest.FreeAddr(t)
			bind := addr
			if tc.wildcard {
				_, port, _ := net.SplitHostPort(addr)
				bind = net.JoinHostPort("0.0.0.0", port)
			}
			opts := append([]ember.Option{ember.WithBindAddr(bind), ember.WithAdvertiseAddr(addr)}, tc.opts...)
			s, err := ember.Open(t.TempDir(), opts...)
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Open = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestWithClusterToken_Empty(t *testing.T) {
	_, err := ember.Open("", ember.WithClusterToken(""))
	if err == nil || !strings.Contains(err.Error(), "empty token") {
		t.Fatalf("Open with an empty token = %v; want an error", err)
	}
}

// BenchmarkPut_PeerSecurity measures a Put sent to a follower, which forwards it to the leader,
// which replicates it: every step crosses a peer connection, in plaintext, under the cluster
// token (TLS 1.3 with ephemeral certificates plus the proof), or under mutual TLS. Run with
//
//	go test -run xxx -bench PeerSecurity -benchtime 3s
func BenchmarkPut_PeerSecurity(b *testing.B) {
	ca := testcerts.NewCA(b, "ember test CA")
	srv, cli := mutualTLS(ca.Leaf(b, "member"), ca.Pool, ca.Pool)
	modes := []struct {
		name string
		opts []ember.Option
	}{
		{"plain", nil},
		{"token", []ember.Option{ember.WithClusterToken(clusterToken)}},
		{"mtls", []ember.Option{ember.WithTLS(srv, cli)}},
	}
	for _, mode := range modes {
		for _, clients := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/clients=%d", mode.name, clients), func(b *testing.B) {
				opts := append([]ember.Option{ember.WithHeartbeatTimeout(time.Second), ember.WithElectionTimeout(time.Second)}, mode.opts...)
				s := embertest.NewCluster(b, 3, opts...).Followers()[0].Store()
				ctx := context.Background()
				runClients(b, clients, func(i int64) error {
					_, err := s.Put(ctx, fmt.Sprintf("key-%010d", i%100000), benchValue)
					return err
				})
			})
		}
	}
}
