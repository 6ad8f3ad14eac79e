package peer

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// pipeListener is an in-memory listener: each dial makes a net.Pipe. Fuzzing opens a
// connection per input, which over loopback TCP would exhaust ephemeral ports.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// FuzzServerFrames feeds arbitrary bytes to a Server connection (after the protocol byte). The
// server must not panic or wedge: a fresh client is served afterwards.
func FuzzServerFrames(f *testing.F) {
	f.Add(appendHeader(nil, 3, 1, 7))                                                     // header promising a payload that never comes
	f.Add(append(appendHeader(nil, 3, 1, 7), "abc"...))                                   // one good request
	f.Add(append(append(appendHeader(nil, 1, 1, 0), 'x'), appendHeader(nil, 0, 1, 1)...)) // two, reused ID
	f.Add([]byte{0, 0, 0, 3, 1, 2, 3})                                                    // length below the minimum
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})                                                 // length above any limit
	f.Add(appendHeader(nil, 2<<20, 9, 1))                                                 // above the fuzz server's MaxFrame
	f.Add([]byte{})

	pl := newPipeListener()
	m := NewMux(pl, nil, nil, nil)
	srv := NewServer(m.Listen(ProtoRPC), echo, nil)
	srv.MaxFrame = 1 << 20
	var wg sync.WaitGroup
	wg.Go(func() { m.Serve() })
	wg.Go(func() { srv.Serve() })
	f.Cleanup(func() {
		srv.Close()
		m.Close()
		wg.Wait()
	})

	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()

		conn, err := Dial(ctx, pl.dial, "pipe", ProtoRPC, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Replies must be read, or a handler writing one to the pipe would block.
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, conn)
		}()
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Write(data)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("server stopped reading a connection without closing it")
		}
		conn.Close()
		<-drained

		c := NewClient(ClientConfig{Dial: pl.dial})
		defer c.Close()
		resp, err := c.Call(ctx, "pipe", 5, []byte("ping"))
		if err != nil || string(resp) != "\x05ping" {
			t.Fatalf("fresh client after fuzz input: %q, %v", resp, err)
		}
	})
}
