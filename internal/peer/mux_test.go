package peer

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember/internal/syncbuf"
)

// acceptOne accepts one connection from l in the background.
func acceptOne(l net.Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	return ch
}

func recvConn(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("Accept failed")
		}
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection delivered")
		return nil
	}
}

// exchange checks that bytes flow both ways between a dialed and an accepted connection.
func exchange(t *testing.T, dialed, accepted net.Conn, msg string) {
	t.Helper()
	if _, err := dialed.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(accepted, got); err != nil || string(got) != msg {
		t.Fatalf("accepted side read %q, %v; want %q", got, err, msg)
	}
	if _, err := accepted.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(dialed, got); err != nil || string(got) != msg {
		t.Fatalf("dialed side read %q, %v; want %q", got, err, msg)
	}
}

// expectClosed asserts that the server end closes c without sending anything.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n != 0 || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("Read = %d, %v; want the connection closed by the server", n, err)
	}
}

func TestMux_DispatchesByProtocolByte(t *testing.T) {
	m := startMux(t, nil, nil)
	raftL, rpcL := m.Listen(ProtoRaft), m.Listen(ProtoRPC)
	if raftL.Addr().String() != m.Addr().String() || rpcL.Addr().String() != m.Addr().String() {
		t.Fatalf("sub-listener addrs %v, %v; want %v", raftL.Addr(), rpcL.Addr(), m.Addr())
	}
	ctx := ctxTimeout(t, 5*time.Second)

	for _, tc := range []struct {
		proto byte
		l     net.Listener
	}{{ProtoRaft, raftL}, {ProtoRPC, rpcL}, {ProtoRaft, raftL}} {
		ch := acceptOne(tc.l)
		c, err := Dial(ctx, nil, m.Addr().String(), tc.proto, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		exchange(t, c, recvConn(t, ch), "hello "+string(tc.proto))
	}
}

func TestMux_ClosesUnknownProtocolByte(t *testing.T) {
	var logs syncbuf.Buffer
	m := startMux(t, nil, bufferLogger(&logs))
	rpcL := m.Listen(ProtoRPC)

	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("X and more")); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)
	if !strings.Contains(logs.String(), "[WARN]") || !strings.Contains(logs.String(), "unknown protocol byte") {
		t.Fatalf("want a warning about the unknown byte, logs:\n%s", logs.String())
	}

	// The mux keeps serving known protocols.
	ch := acceptOne(rpcL)
	good, err := Dial(ctxTimeout(t, 5*time.Second), nil, m.Addr().String(), ProtoRPC, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	exchange(t, good, recvConn(t, ch), "still here")
}

func TestMux_HandshakeTimeout(t *testing.T) {
	old := HandshakeTimeout
	HandshakeTimeout = 100 * time.Millisecond
	t.Cleanup(func() { HandshakeTimeout = old })

	var logs syncbuf.Buffer
	m := startMux(t, nil, bufferLogger(&logs))
	m.Listen(ProtoRPC)

	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	expectClosed(t, c) // having sent nothing
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("closed after %v, before the handshake timeout", d)
	}
	if !strings.Contains(logs.String(), "[WARN]") || !strings.Contains(logs.String(), "handshake failed") {
		t.Fatalf("want a handshake warning, logs:\n%s", logs.String())
	}
}

func TestMux_CloseStopsServeAndSubListeners(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMux(ln, nil, nil, nil)
	sub := m.Listen(ProtoRPC)
	m.Listen(ProtoRaft) // never accepted from
	errc := make(chan error, 1)
	go func() { errc <- m.Serve() }()

	// A connection stuck in its handshake must not hold Close up for HandshakeTimeout.
	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// And one delivered for a protocol nobody accepts must not either.
	d, err := Dial(ctxTimeout(t, 5*time.Second), nil, m.Addr().String(), ProtoRaft, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	time.Sleep(50 * time.Millisecond) // let both reach the mux

	start := time.Now()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Serve = %v, want nil after Close", err)
	}
	if _, err := sub.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("sub.Accept after Close = %v, want net.ErrClosed", err)
	}
	expectClosed(t, c)
	expectClosed(t, d)
}

func TestMux_SubListenerCloseLeavesOthersRunning(t *testing.T) {
	m := startMux(t, nil, nil)
	raftL, rpcL := m.Listen(ProtoRaft), m.Listen(ProtoRPC)
	if err := raftL.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := raftL.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v", err)
	}
	ctx := ctxTimeout(t, 5*time.Second)
	r, err := Dial(ctx, nil, m.Addr().String(), ProtoRaft, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	expectClosed(t, r)

	ch := acceptOne(rpcL)
	c, err := Dial(ctx, nil, m.Addr().String(), ProtoRPC, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange(t, c, recvConn(t, ch), "ok")
}

func TestMux_TLSMutualAuth(t *testing.T) {
	pki := newTestPKI(t)
	var logs syncbuf.Buffer
	m := startMux(t, pki.serverConf(), bufferLogger(&logs))
	rpcL := m.Listen(ProtoRPC)
	ctx := ctxTimeout(t, 5*time.Second)

	t.Run("client with certificate", func(t *testing.T) {
		ch := acceptOne(rpcL)
		c, err := Dial(ctx, nil, m.Addr().String(), ProtoRPC, pki.clientConf(true), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		exchange(t, c, recvConn(t, ch), "over tls")
	})

	t.Run("client without certificate", func(t *testing.T) {
		ch := acceptOne(rpcL)
		// With TLS 1.3 the client finishes its handshake before the server has checked the
		// client certificate, so Dial may succeed; the refusal shows on the first read.
		c, err := Dial(ctx, nil, m.Addr().String(), ProtoRPC, pki.clientConf(false), nil)
		if err == nil {
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
			var ne net.Error
			if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
				t.Fatalf("Read = %v; want the server to refuse the connection", err)
			}
		}
		select {
		case c, ok := <-ch:
			if ok {
				c.Close()
				t.Fatal("mux delivered a connection without a client certificate")
			}
		case <-time.After(100 * time.Millisecond):
		}
		if !strings.Contains(logs.String(), "handshake failed") {
			t.Fatalf("want a handshake warning, logs:\n%s", logs.String())
		}
	})

	t.Run("plaintext client", func(t *testing.T) {
		c, err := Dial(ctx, nil, m.Addr().String(), ProtoRPC, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A plaintext request is not a TLS record; the server must hang up, not hand it over.
		if _, err := c.Write(appendHeader(nil, 0, 1, 1)); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c)
	})
}

func TestDial_HonoursContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Accept but never answer, so the TLS handshake hangs until ctx ends.
	done := make(chan struct{})
	defer func() {
		ln.Close()
		<-done
	}()
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	pki := newTestPKI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Dial(ctx, nil, ln.Addr().String(), ProtoRPC, pki.clientConf(true), nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial = %v; want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Dial took %v", d)
	}
}

func TestDial_CustomDialFunc(t *testing.T) {
	m := startMux(t, nil, nil)
	l := m.Listen(ProtoRaft)
	var dialed string
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		dialed = addr
		var d net.Dialer
		return d.DialContext(ctx, "tcp", m.Addr().String())
	}
	ch := acceptOne(l)
	c, err := Dial(ctxTimeout(t, 5*time.Second), dial, "member-2:7000", ProtoRaft, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange(t, c, recvConn(t, ch), "x")
	if dialed != "member-2:7000" {
		t.Fatalf("DialFunc got %q", dialed)
	}
}
