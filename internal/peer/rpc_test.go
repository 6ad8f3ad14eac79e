package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ember-kv/ember/internal/wire"
)

func TestClient_EchoRoundTrip(t *testing.T) {
	s := startRPC(t, "127.0.0.1:0", echo, nil)
	c := newClient(t, ClientConfig{})
	ctx := ctxTimeout(t, 5*time.Second)
	for _, req := range [][]byte{nil, []byte("hello"), bytes.Repeat([]byte{0xab}, 200<<10)} {
		resp, err := c.Call(ctx, s.addr, 42, req)
		if err != nil {
			t.Fatal(err)
		}
		if want := append([]byte{42}, req...); !bytes.Equal(resp, want) {
			t.Fatalf("resp of %d bytes, want %d", len(resp), len(want))
		}
	}
}

func TestClient_PipelinesConcurrentCalls(t *testing.T) {
	// Every handler waits until all calls are inside a handler at once, which can only happen
	// if the single connection carries them concurrently.
	const n = 200
	var inside sync.WaitGroup
	inside.Add(n)
	s := startRPC(t, "127.0.0.1:0", func(ctx context.Context, m uint8, req []byte) ([]byte, error) {
		inside.Done()
		inside.Wait()
		return echo(ctx, m, req)
	}, nil)
	c := newClient(t, ClientConfig{ConnsPerPeer: 1})
	ctx := ctxTimeout(t, 10*time.Second)

	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req := fmt.Appendf(nil, "call-%d", i)
			resp, err := c.Call(ctx, s.addr, uint8(i), req)
			if err != nil {
				t.Error(err)
				return
			}
			if want := append([]byte{uint8(i)}, req...); !bytes.Equal(resp, want) {
				t.Errorf("call %d got %q", i, resp)
			}
		})
	}
	wg.Wait()
	if got := s.accepted.Load(); got != 1 {
		t.Fatalf("server accepted %d connections, want 1", got)
	}
}

func TestClient_ThousandCallsOverPoolOfTwo(t *testing.T) {
	// Random handler delays make replies come back out of order.
	s := startRPC(t, "127.0.0.1:0", func(ctx context.Context, m uint8, req []byte) ([]byte, error) {
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		return echo(ctx, m, req)
	}, nil)
	c := newClient(t, ClientConfig{ConnsPerPeer: 2})
	ctx := ctxTimeout(t, 20*time.Second)

	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Go(func() {
			req := fmt.Appendf(nil, "call-%d-%s", i, strings.Repeat("x", i))
			resp, err := c.Call(ctx, s.addr, uint8(i), req)
			if err != nil {
				t.Error(err)
				return
			}
			if want := append([]byte{uint8(i)}, req...); !bytes.Equal(resp, want) {
				t.Errorf("call %d paired with a reply of %d bytes", i, len(resp))
			}
		})
	}
	wg.Wait()
	if got := s.accepted.Load(); got != 2 {
		t.Fatalf("server accepted %d connections, want 2", got)
	}
}

func TestClient_HandlerErrorsRoundTrip(t *testing.T) {
	handlerErr := map[uint8]error{
		1: &Error{Code: wire.CodeNotLeader, Msg: "not the leader"},
		2: errors.New("disk on fire"),
		3: fmt.Errorf("applying: %w", &Error{Code: wire.CodeCompacted, Msg: "compacted"}),
		4: &Error{Code: wire.CodeNoLeader},
	}
	s := startRPC(t, "127.0.0.1:0", func(_ context.Context, m uint8, _ []byte) ([]byte, error) {
		return []byte("ignored"), handlerErr[m]
	}, nil)
	c := newClient(t, ClientConfig{})
	ctx := ctxTimeout(t, 5*time.Second)

	for _, tc := range []struct {
		method uint8
		want   Error
		str    string
	}{
		{1, Error{wire.CodeNotLeader, "not the leader"}, "not the leader"},
		{2, Error{wire.CodeInternal, "disk on fire"}, "disk on fire"},
		{3, Error{wire.CodeCompacted, "compacted"}, "compacted"},
		{4, Error{wire.CodeNoLeader, ""}, fmt.Sprintf("ember: peer error code %d", wire.CodeNoLeader)},
	} {
		resp, err := c.Call(ctx, s.addr, tc.method, nil)
		var pe *Error
		if !errors.As(err, &pe) || *pe != tc.want || resp != nil {
			t.Fatalf("method %d: resp %q, err %#v; want %+v", tc.method, resp, err, tc.want)
		}
		if err.Error() != tc.str {
			t.Fatalf("method %d: Error() = %q, want %q", tc.method, err.Error(), tc.str)
		}
		if errors.Is(err, ErrNotSent) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("a handler error must not look like a transport error: %v", err)
		}
	}
}

func TestServer_RecoversHandlerPanic(t *testing.T) {
	s := startRPC(t, "127.0.0.1:0", func(ctx context.Context, m uint8, req []byte) ([]byte, error) {
		if m == 9 {
			panic("boom")
		}
		return echo(ctx, m, req)
	}, nil)
	c := newClient(t, ClientConfig{ConnsPerPeer: 1})
	ctx := ctxTimeout(t, 5*time.Second)

	_, err := c.Call(ctx, s.addr, 9, nil)
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != wire.CodeInternal || !strings.Contains(pe.Msg, "boom") {
		t.Fatalf("err = %v; want CodeInternal mentioning the panic", err)
	}
	// Same connection, still healthy.
	if _, err := c.Call(ctx, s.addr, 1, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got := s.accepted.Load(); got != 1 {
		t.Fatalf("accepted %d connections, want 1", got)
	}
}

// blockingHandler blocks every call with method block until ctx ends or release is closed,
// announcing each on started; other methods echo.
func blockingHandler(started chan<- struct{}, release <-chan struct{}) Handler {
	return func(ctx context.Context, m uint8, req []byte) ([]byte, error) {
		if m != 0 {
			return echo(ctx, m, req)
		}
		started <- struct{}{}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-release:
			return []byte("late"), nil
		}
	}
}

func TestClient_ServerKilledMidCallIsOutcomeUnknown(t *testing.T) {
	started := make(chan struct{}, 1)
	s := startRPC(t, "127.0.0.1:0", blockingHandler(started, nil), nil)
	c := newClient(t, ClientConfig{ConnsPerPeer: 1})
	ctx := ctxTimeout(t, 5*time.Second)

	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, s.addr, 0, []byte("write"))
		errc <- err
	}()
	<-started
	s.stop(t)

	err := <-errc
	if !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNotSent) {
		t.Fatalf("err = %v; want ErrOutcomeUnknown", err)
	}

	// The broken connection is gone from the pool: with the server back on the same port the
	// next call dials anew.
	s2 := startRPC(t, s.addr, echo, nil)
	if _, err := c.Call(ctx, s.addr, 1, []byte("again")); err != nil {
		t.Fatal(err)
	}
	if got := s2.accepted.Load(); got != 1 {
		t.Fatalf("restarted server accepted %d connections, want 1", got)
	}
}

func TestClient_DialFailureIsNotSent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	c := newClient(t, ClientConfig{})
	_, err = c.Call(ctxTimeout(t, 5*time.Second), addr, 1, []byte("x"))
	if !errors.Is(err, ErrNotSent) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v; want ErrNotSent", err)
	}
	var ne *net.OpError
	if !errors.As(err, &ne) {
		t.Fatalf("err = %v; want the dial error wrapped", err)
	}
}

func TestClient_ContextDeadlineAfterSendIsOutcomeUnknown(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	s := startRPC(t, "127.0.0.1:0", blockingHandler(started, release), nil)
	c := newClient(t, ClientConfig{ConnsPerPeer: 1})

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Call(ctx, s.addr, 0, []byte("slow"))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNotSent) {
		t.Fatalf("err = %v; want DeadlineExceeded and ErrOutcomeUnknown", err)
	}
	<-started
	close(release) // the late reply arrives and must be dropped without disturbing other calls

	resp, err := c.Call(ctxTimeout(t, 5*time.Second), s.addr, 1, []byte("next"))
	if err != nil || string(resp) != "\x01next" {
		t.Fatalf("next call = %q, %v", resp, err)
	}
	if got := s.accepted.Load(); got != 1 {
		t.Fatalf("accepted %d connections, want the connection to survive a cancelled call", got)
	}
}

func TestClient_CancelledBeforeSendIsNotSent(t *testing.T) {
	s := startRPC(t, "127.0.0.1:0", echo, nil)
	c := newClient(t, ClientConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Call(ctx, s.addr, 1, nil)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrNotSent) {
		t.Fatalf("err = %v; want Canceled and ErrNotSent", err)
	}
}

// gatedConn blocks every Write once gate is armed, until the conn is closed.
type gatedConn struct {
	net.Conn
	armed   atomic.Bool
	writing chan struct{} // receives once per blocked Write
	closed  chan struct{}
	once    sync.Once
}

func (g *gatedConn) Write(p []byte) (int, error) {
	if g.armed.Load() {
		g.writing <- struct{}{}
		<-g.closed
		return 0, net.ErrClosed
	}
	return g.Conn.Write(p)
}

func (g *gatedConn) Close() error {
	g.once.Do(func() { close(g.closed) })
	return g.Conn.Close()
}

func TestClient_ConnLossSplitsWrittenFromUnwritten(t *testing.T) {
	s := startRPC(t, "127.0.0.1:0", echo, nil)
	var gc *gatedConn
	c := newClient(t, ClientConfig{ConnsPerPeer: 1, Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		if gc != nil {
			return nil, errors.New("injected: no second dial")
		}
		raw, err := dialTCP(ctx, addr)
		if err != nil {
			return nil, err
		}
		gc = &gatedConn{Conn: raw, writing: make(chan struct{}, 1), closed: make(chan struct{})}
		return gc, nil
	}})
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := c.Call(ctx, s.addr, 1, []byte("warm up")); err != nil {
		t.Fatal(err)
	}

	gc.armed.Store(true)
	call := func() <-chan error {
		errc := make(chan error, 1)
		go func() {
			_, err := c.Call(ctx, s.addr, 1, []byte("x"))
			errc <- err
		}()
		return errc
	}
	first := call()
	<-gc.writing // first is now being written to the socket
	queued := []<-chan error{call(), call(), call()}
	time.Sleep(50 * time.Millisecond) // let them queue behind the stuck write
	gc.Close()

	if err := <-first; !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNotSent) {
		t.Fatalf("call being written: err = %v; want ErrOutcomeUnknown", err)
	}
	for i, errc := range queued {
		if err := <-errc; !errors.Is(err, ErrNotSent) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("queued call %d: err = %v; want ErrNotSent", i, err)
		}
	}
}

func TestServer_MalformedFramesCloseOnlyThatConn(t *testing.T) {
	s := startRPC(t, "127.0.0.1:0", echo, func(s *Server) { s.MaxFrame = 1 << 20 })
	good := newClient(t, ClientConfig{ConnsPerPeer: 1})
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := good.Call(ctx, s.addr, 1, []byte("before")); err != nil {
		t.Fatal(err)
	}

	rnd := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(rnd.Uint32())
	}
	garbage[0] = 0xff // a length far above MaxFrame

	for name, payload := range map[string][]byte{
		"random bytes":      garbage,
		"oversize length":   appendHeader(nil, 2<<20, 1, 1),
		"undersize length":  {0, 0, 0, 3, 1, 2, 3},
		"max uint32 length": {0xff, 0xff, 0xff, 0xff},
	} {
		t.Run(name, func(t *testing.T) {
			bad, err := Dial(ctx, nil, s.addr, ProtoRPC, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			if _, err := bad.Write(payload); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, bad)
		})
	}

	// The established connection and a fresh client both still work.
	if _, err := good.Call(ctx, s.addr, 1, []byte("after")); err != nil {
		t.Fatal(err)
	}
	fresh := newClient(t, ClientConfig{})
	if _, err := fresh.Call(ctx, s.addr, 1, []byte("fresh")); err != nil {
		t.Fatal(err)
	}
}

func TestServer_OversizeRequestClosesConn(t *testing.T) {
	s := startRPC(t, "127.0.0.1:0", echo, func(s *Server) { s.MaxFrame = 1024 })
	c := newClient(t, ClientConfig{ConnsPerPeer: 1})
	ctx := ctxTimeout(t, 5*time.Second)
	_, err := c.Call(ctx, s.addr, 1, make([]byte, 2048))
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v; want ErrOutcomeUnknown", err)
	}
	if _, err := c.Call(ctx, s.addr, 1, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
}

func TestServer_OversizeResponseIsAnError(t *testing.T) {
	s := startRPC(t, "127.0.0.1:0", func(context.Context, uint8, []byte) ([]byte, error) {
		return make([]byte, 2048), nil
	}, func(s *Server) { s.MaxFrame = 1024 })
	c := newClient(t, ClientConfig{})
	_, err := c.Call(ctxTimeout(t, 5*time.Second), s.addr, 1, nil)
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != wire.CodeInternal {
		t.Fatalf("err = %v; want CodeInternal", err)
	}
}

func TestClient_OversizeRequestIsRejectedLocally(t *testing.T) {
	c := newClient(t, ClientConfig{MaxFrame: 1024, Dial: func(context.Context, string) (net.Conn, error) {
		t.Error("dialed for a request that cannot be sent")
		return nil, errors.New("no")
	}})
	_, err := c.Call(ctxTimeout(t, 5*time.Second), "127.0.0.1:1", 1, make([]byte, 1024))
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != wire.CodeRequestTooLarge {
		t.Fatalf("err = %v; want CodeRequestTooLarge", err)
	}
}

func TestClient_MalformedResponseFailsConn(t *testing.T) {
	// A fake server that answers every request with an unknown status byte.
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
		id, _, _, err := readFrame(c, DefaultMaxFrame)
		if err != nil {
			return
		}
		c.Write(appendHeader(nil, 0, id, 7))
		io.Copy(io.Discard, c)
	}()
	c := newClient(t, ClientConfig{})
	_, err := c.Call(ctxTimeout(t, 5*time.Second), m.Addr().String(), 1, nil)
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, errMalformedFrame) {
		t.Fatalf("err = %v; want ErrOutcomeUnknown wrapping a malformed frame", err)
	}
	c.Close()
	<-done
}

func TestServer_CloseCancelsAndWaitsForHandlers(t *testing.T) {
	started := make(chan struct{}, 1)
	var returned atomic.Bool
	s := startRPC(t, "127.0.0.1:0", func(ctx context.Context, _ uint8, _ []byte) ([]byte, error) {
		started <- struct{}{}
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond)
		returned.Store(true)
		return nil, ctx.Err()
	}, nil)
	c := newClient(t, ClientConfig{})
	go c.Call(ctxTimeout(t, 5*time.Second), s.addr, 1, nil)
	<-started
	s.stop(t)
	if !returned.Load() {
		t.Fatal("Server.Close returned before the handler did")
	}
	if err := s.srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestClient_CloseFailsCallsAndRejectsNew(t *testing.T) {
	started := make(chan struct{}, 1)
	s := startRPC(t, "127.0.0.1:0", blockingHandler(started, nil), nil)
	c := NewClient(ClientConfig{})
	ctx := ctxTimeout(t, 5*time.Second)

	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, s.addr, 0, nil)
		errc <- err
	}()
	<-started
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClientClosed) || !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("in-flight call: err = %v; want ErrClientClosed and ErrOutcomeUnknown", err)
	}
	if _, err := c.Call(ctx, s.addr, 1, nil); !errors.Is(err, ErrClientClosed) || !errors.Is(err, ErrNotSent) {
		t.Fatalf("call after Close: err = %v; want ErrClientClosed and ErrNotSent", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestClient_CloseAbortsDial(t *testing.T) {
	dialing := make(chan struct{})
	c := NewClient(ClientConfig{Dial: func(ctx context.Context, _ string) (net.Conn, error) {
		close(dialing)
		<-ctx.Done()
		return nil, ctx.Err()
	}})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), "peer:1", 1, nil)
		errc <- err
	}()
	<-dialing
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClientClosed) || !errors.Is(err, ErrNotSent) {
		t.Fatalf("err = %v; want ErrClientClosed and ErrNotSent", err)
	}
}

func TestClient_ConcurrentCallersShareOneDial(t *testing.T) {
	s := startRPC(t, "127.0.0.1:0", echo, nil)
	var dials atomic.Int64
	gate := make(chan struct{})
	c := newClient(t, ClientConfig{ConnsPerPeer: 1, Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		<-gate
		return dialTCP(ctx, addr)
	}})
	ctx := ctxTimeout(t, 5*time.Second)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := c.Call(ctx, s.addr, 1, nil); err != nil {
				t.Error(err)
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	if got := dials.Load(); got != 1 {
		t.Fatalf("%d dials, want 1", got)
	}
}

func TestClient_AbandonedDialIsRetriedByWaiters(t *testing.T) {
	s := startRPC(t, "127.0.0.1:0", echo, nil)
	first := make(chan struct{})
	var dials atomic.Int64
	c := newClient(t, ClientConfig{ConnsPerPeer: 1, Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		if dials.Add(1) == 1 {
			close(first)
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return dialTCP(ctx, addr)
	}})
	impatient, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(impatient, s.addr, 1, nil)
		errc <- err
	}()
	<-first
	waiter := make(chan error, 1)
	go func() {
		_, err := c.Call(ctxTimeout(t, 5*time.Second), s.addr, 1, nil)
		waiter <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the second caller wait on the first dial
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) || !errors.Is(err, ErrNotSent) {
		t.Fatalf("cancelled dialer: err = %v", err)
	}
	if err := <-waiter; err != nil {
		t.Fatalf("waiter must not inherit another caller's cancellation: %v", err)
	}
}

func TestClient_TLS(t *testing.T) {
	pki := newTestPKI(t)
	m := startMux(t, pki.serverConf(), nil)
	var calls atomic.Int64
	startRPCOnHandler(t, m, func(ctx context.Context, meth uint8, req []byte) ([]byte, error) {
		calls.Add(1)
		return echo(ctx, meth, req)
	})
	ctx := ctxTimeout(t, 5*time.Second)

	c := newClient(t, ClientConfig{TLS: pki.clientConf(true)})
	if resp, err := c.Call(ctx, m.Addr().String(), 3, []byte("secret")); err != nil || string(resp) != "\x03secret" {
		t.Fatalf("Call = %q, %v", resp, err)
	}
	noCert := newClient(t, ClientConfig{TLS: pki.clientConf(false)})
	if _, err := noCert.Call(ctx, m.Addr().String(), 3, []byte("secret")); err == nil {
		t.Fatal("call without a client certificate succeeded")
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("handler ran %d times, want 1", got)
	}
}
