package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ember-kv/ember/internal/syncbuf"
	"github.com/ember-kv/ember/internal/wire"
)

const (
	testToken  = "correct-horse-battery-staple-token"
	otherToken = "another-clusters-token-0123456789"
)

// ephemeralTLS returns EphemeralTLS's configs or fails the test.
func ephemeralTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	server, client, err := EphemeralTLS()
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

// startAdmissionMux serves a Mux that demands proof of token over ephemeral TLS, and returns it
// with the client TLS config its members would dial with.
func startAdmissionMux(t testing.TB, token string, logger hclog.Logger) (*Mux, *tls.Config) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server, client := ephemeralTLS(t)
	return serveMux(t, NewMux(ln, server, NewAdmission(token), logger)), client
}

// noDelivery fails if the mux hands a connection to the sub-listener within a short while.
func noDelivery(t *testing.T, ch <-chan net.Conn) {
	t.Helper()
	select {
	case c, ok := <-ch:
		if ok {
			c.Close()
			t.Fatal("the mux handed over a connection that did not prove the token")
		}
	case <-time.After(100 * time.Millisecond):
	}
}

func TestAdmission_SameTokenConnects(t *testing.T) {
	m, clientTLS := startAdmissionMux(t, testToken, nil)
	rpcL := m.Listen(ProtoRPC)
	ch := acceptOne(rpcL)
	c, err := Dial(ctxTimeout(t, 5*time.Second), nil, m.Addr().String(), ProtoRPC, clientTLS, NewAdmission(testToken))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*tls.Conn); !ok {
		t.Fatalf("dialed connection is a %T, want TLS", c)
	}
	exchange(t, c, recvConn(t, ch), "admitted")
}

// TestAdmission_Refusals: a dialer without the token gets nothing through, whatever it skips,
// and the refusing member says so at Warn without ever writing the token into its log.
func TestAdmission_Refusals(t *testing.T) {
	var logs syncbuf.Buffer
	m, clientTLS := startAdmissionMux(t, testToken, hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Trace}))
	rpcL := m.Listen(ProtoRPC)
	addr := m.Addr().String()
	// A request frame longer than a proof, so the server has all the bytes it reads as one.
	frame := appendHeader(nil, 40, 1, 1)
	frame = append(frame, bytes.Repeat([]byte("k"), 40)...)

	tests := []struct {
		name string
		// dial returns the connection as the dialer leaves it, or the error it got.
		dial func(ctx context.Context) (net.Conn, error)
	}{
		{"wrong token", func(ctx context.Context) (net.Conn, error) {
			return Dial(ctx, nil, addr, ProtoRPC, clientTLS, NewAdmission(otherToken))
		}},
		{"TLS but no proof", func(ctx context.Context) (net.Conn, error) {
			return Dial(ctx, nil, addr, ProtoRPC, clientTLS, nil)
		}},
		{"plaintext", func(ctx context.Context) (net.Conn, error) {
			return Dial(ctx, nil, addr, ProtoRPC, nil, nil)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := acceptOne(rpcL)
			c, err := tc.dial(ctxTimeout(t, 5*time.Second))
			if err == nil {
				// The dialer believes it is connected; what it sends must go nowhere.
				defer c.Close()
				if _, err := c.Write(frame); err != nil {
					t.Fatal(err)
				}
				expectClosed(t, c)
			} else if tc.name == "wrong token" && !errors.Is(err, ErrAdmission) {
				t.Fatalf("Dial = %v; want ErrAdmission", err)
			}
			noDelivery(t, ch)
		})
	}
	out := logs.String()
	if !strings.Contains(out, "[WARN]") || !strings.Contains(out, "wrong proof") {
		t.Fatalf("want a warning about the wrong proof, logs:\n%s", out)
	}
	for _, tok := range []string{testToken, otherToken} {
		if strings.Contains(out, tok) {
			t.Fatalf("the log holds a token:\n%s", out)
		}
	}
}

// TestAdmission_ServerWithoutTokenRefusesProvingClient: a member with a token cannot talk to
// one without (its TLS hello is not a protocol byte) and learns so at once, not after a
// timeout.
func TestAdmission_ServerWithoutTokenRefusesProvingClient(t *testing.T) {
	m := startMux(t, nil, nil)
	ch := acceptOne(m.Listen(ProtoRPC))
	_, client := ephemeralTLS(t)
	_, err := Dial(ctxTimeout(t, 5*time.Second), nil, m.Addr().String(), ProtoRPC, client, NewAdmission(testToken))
	if err == nil {
		t.Fatal("Dial to a member without a token succeeded")
	}
	noDelivery(t, ch)
}

func TestAdmission_NeedsTLS(t *testing.T) {
	m := startMux(t, nil, nil)
	m.Listen(ProtoRPC)
	_, err := Dial(ctxTimeout(t, 5*time.Second), nil, m.Addr().String(), ProtoRPC, nil, NewAdmission(testToken))
	if err == nil || !strings.Contains(err.Error(), "needs TLS") {
		t.Fatalf("Dial with a token and no TLS = %v; want a refusal", err)
	}
}

// tlsPipe returns the two ends of a TLS session over an in-memory pipe, handshaken.
func tlsPipe(t *testing.T) (client, server *tls.Conn) {
	t.Helper()
	serverConf, clientConf := ephemeralTLS(t)
	a, b := net.Pipe()
	client, server = tls.Client(a, clientConf), tls.Server(b, serverConf)
	// The raw ends: tls.Conn.Close would wait for the other end to read its close alert.
	t.Cleanup(func() { a.Close(); b.Close() })
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// A step that goes wrong fails the test instead of hanging it on the unbuffered pipe.
	a.SetDeadline(time.Now().Add(5 * time.Second))
	b.SetDeadline(time.Now().Add(5 * time.Second))
	return client, server
}

// TestAdmission_ProofBoundToChannel: a man in the middle that terminates TLS towards a member
// (which checks no certificate) and replays the proof that member sent on its own TLS session
// to another member is refused, since each proof covers its session's exporter value.
func TestAdmission_ProofBoundToChannel(t *testing.T) {
	adm := NewAdmission(testToken)

	// Session 1: the victim dials the impostor, which reads the victim's proof and hangs up.
	victim, impostorSide := tlsPipe(t)
	victimErr := make(chan error, 1)
	go func() { victimErr <- adm.admitClient(victim) }()
	captured := make([]byte, proofSize)
	if _, err := io.ReadFull(impostorSide, captured); err != nil {
		t.Fatal(err)
	}
	impostorSide.NetConn().Close()
	if err := <-victimErr; !errors.Is(err, ErrAdmission) {
		t.Fatalf("victim's admission against the impostor = %v; want ErrAdmission", err)
	}

	// Session 2: the impostor replays the proof to a real member.
	impostor, member := tlsPipe(t)
	memberErr := make(chan error, 1)
	go func() { memberErr <- adm.admitServer(member) }()
	if _, err := impostor.Write(captured); err != nil {
		t.Fatal(err)
	}
	if err := <-memberErr; !errors.Is(err, ErrAdmission) {
		t.Fatalf("member admitted a replayed proof: %v", err)
	}

	// A proof made for session 2 itself, with the token, is what the member wants: the
	// refusal above is the binding, not a broken proof.
	client, server := tlsPipe(t)
	errc := make(chan error, 1)
	go func() { errc <- adm.admitServer(server) }()
	if err := adm.admitClient(client); err != nil {
		t.Fatalf("client: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server: %v", err)
	}
}

// TestAdmission_ReflectedProofRefused: a server's proof is not a client's, so an impostor
// cannot hand a member's answer back to it.
func TestAdmission_ReflectedProofRefused(t *testing.T) {
	adm := NewAdmission(testToken)
	client, server := tlsPipe(t)
	serverProof, err := adm.proof(server.ConnectionState(), roleServer)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- adm.admitServer(server) }()
	if _, err := client.Write(serverProof); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrAdmission) {
		t.Fatalf("admitServer with the server's own proof = %v; want ErrAdmission", err)
	}
}

func TestAdmission_KeepsKeyOutOfFormatting(t *testing.T) {
	adm := NewAdmission(testToken)
	for _, s := range []string{adm.String(), adm.GoString()} {
		if strings.Contains(s, testToken) || bytes.Contains([]byte(s), adm.key[:]) {
			t.Fatalf("formatting shows the key: %q", s)
		}
	}
}

func TestVerifyProof(t *testing.T) {
	want := append([]byte{admissionVersion}, bytes.Repeat([]byte{7}, proofSize-1)...)
	otherVersion := bytes.Clone(want)
	otherVersion[0] = 2
	flipped := bytes.Clone(want)
	flipped[proofSize-1] ^= 1
	tests := []struct {
		name string
		got  []byte
		ok   bool
	}{
		{"equal", bytes.Clone(want), true},
		{"empty", nil, false},
		{"short", want[:proofSize-1], false},
		{"long", append(bytes.Clone(want), 0), false},
		{"other version", otherVersion, false},
		{"one bit off", flipped, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyProof(tc.got, want)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrAdmission)) {
				t.Fatalf("verifyProof = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// FuzzAdmitServer sends arbitrary bytes as the client's proof over a real TLS session: the
// server side must refuse them (the session's exporter value is fresh, so no input can be the
// proof), with ErrAdmission, and never panic or wait for more than a proof's worth of bytes.
func FuzzAdmitServer(f *testing.F) {
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0}, proofSize))
	f.Add(append([]byte{admissionVersion}, bytes.Repeat([]byte{0xff}, proofSize-1)...))
	f.Add(append([]byte{admissionVersion}, bytes.Repeat([]byte{1}, 2*proofSize)...))
	f.Add([]byte("E\x00\x00\x00\x09"))
	adm := NewAdmission(testToken)
	serverConf, clientConf := ephemeralTLS(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := net.Pipe()
		defer a.Close()
		client, server := tls.Client(a, clientConf), tls.Server(b, serverConf)
		errc := make(chan error, 1)
		go func() {
			if err := client.Handshake(); err != nil {
				errc <- err
				return
			}
			// Written whole or cut off when the server hangs up; then the end of the stream.
			client.Write(data)
			client.CloseWrite()
			errc <- nil
		}()
		server.SetDeadline(time.Now().Add(5 * time.Second))
		if err := server.Handshake(); err != nil {
			t.Fatal(err)
		}
		err := adm.admitServer(server)
		if !errors.Is(err, ErrAdmission) {
			t.Fatalf("admitServer(%x) = %v; want ErrAdmission", data, err)
		}
		b.Close() // unblocks the client's write of whatever the server did not read
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}

// whoIs answers the member ID the connection stated, if any, and the method it was called with.
func whoIs(ctx context.Context, method uint8, _ []byte) ([]byte, error) {
	id, ok := RemoteID(ctx)
	return fmt.Appendf(nil, "%v %q %d", ok, id, method), nil
}

// TestClient_HelloStatesRemoteID: a client's LocalID reaches the handler of every request on
// every connection; without one the handler knows it has none; a later method 0 is an ordinary
// request.
func TestClient_HelloStatesRemoteID(t *testing.T) {
	s := startRPC(t, "127.0.0.1:0", whoIs, nil)
	ctx := ctxTimeout(t, 5*time.Second)
	tests := []struct {
		cfg    ClientConfig
		method uint8
		want   string
	}{
		{ClientConfig{LocalID: "m7", ConnsPerPeer: 2}, 1, `true "m7" 1`},
		{ClientConfig{LocalID: "m7", ConnsPerPeer: 1}, MethodHello, `true "m7" 0`},
		{ClientConfig{}, 1, `false "" 1`},
	}
	for _, tc := range tests {
		c := newClient(t, tc.cfg)
		for range 4 { // round-robin over every connection of the pool
			resp, err := c.Call(ctx, s.addr, tc.method, nil)
			if err != nil || string(resp) != tc.want {
				t.Fatalf("%+v: Call = %q, %v; want %q", tc.cfg, resp, err, tc.want)
			}
		}
	}
}

// TestClient_HelloToEarlierServer: a server of an earlier version hands the hello to its handler,
// which answers call 0 with an unknown-method error; the client drops that answer and its calls
// work as before.
func TestClient_HelloToEarlierServer(t *testing.T) {
	m := startMux(t, nil, nil)
	l := m.Listen(ProtoRPC)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for {
			id, method, req, err := readFrame(c, DefaultMaxFrame)
			if err != nil {
				return
			}
			var out []byte
			if method == MethodHello {
				p := encodeError(&Error{Code: wire.CodeMalformed, Msg: "unknown method 0"})
				out = append(appendHeader(nil, len(p), id, statusError), p...)
			} else {
				out = append(appendHeader(nil, len(req), id, statusOK), req...)
			}
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}()
	c := NewClient(ClientConfig{LocalID: "m7", ConnsPerPeer: 1})
	resp, err := c.Call(ctxTimeout(t, 5*time.Second), m.Addr().String(), 1, []byte("still works"))
	if err != nil || string(resp) != "still works" {
		t.Fatalf("Call = %q, %v", resp, err)
	}
	c.Close()
	<-done
}

// TestClient_Admission: a client with the cluster's token reaches the handler over TLS, and
// states its ID there; one with another token is refused before anything is sent.
func TestClient_Admission(t *testing.T) {
	m, clientTLS := startAdmissionMux(t, testToken, nil)
	startRPCOnHandler(t, m, whoIs)
	ctx := ctxTimeout(t, 5*time.Second)

	good := newClient(t, ClientConfig{TLS: clientTLS, Admission: NewAdmission(testToken), LocalID: "m2"})
	if resp, err := good.Call(ctx, m.Addr().String(), 3, nil); err != nil || string(resp) != `true "m2" 3` {
		t.Fatalf("Call with the token = %q, %v", resp, err)
	}
	bad := newClient(t, ClientConfig{TLS: clientTLS, Admission: NewAdmission(otherToken), LocalID: "m2"})
	_, err := bad.Call(ctx, m.Addr().String(), 3, nil)
	if !errors.Is(err, ErrNotSent) || !errors.Is(err, ErrAdmission) {
		t.Fatalf("Call with another token = %v; want ErrNotSent and ErrAdmission", err)
	}
}
