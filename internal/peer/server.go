package peer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/ember-kv/ember/internal/wire"
	"github.com/hashicorp/go-hclog"
)

// Handler answers one RPC. It is called concurrently, each call in its own goroutine, and must
// return once ctx is done (the connection closed or the Server is closing). ctx is not cancelled
// when a caller merely gives up on its own ctx: the protocol has no cancel message, so the
// handler runs to completion and its reply is discarded by the client. req is owned by the
// handler. Returning an *Error sends its code and message; any other error is sent as
// wire.CodeInternal with err.Error(). A panic is recovered, logged and sent as
// wire.CodeInternal.
type Handler func(ctx context.Context, method uint8, req []byte) ([]byte, error)

// MethodHello is reserved for the hello frame: the first frame of a connection, with call ID 0
// (never used by a call) and the client's member ID as payload. The Server records the ID for
// the connection's requests (RemoteID) and does not answer it. An earlier version's Server,
// which hands it to its handler like any request, answers an unknown-method error that the
// Client drops, so the hello costs no compatibility. Handlers never see method 0 with call ID 0
// first on a connection; at any other place method 0 is an ordinary request.
const MethodHello uint8 = 0

const helloCallID uint64 = 0

type remoteIDKey struct{}

// WithRemoteID returns ctx carrying id as the requests' member ID, as the Server gives its
// handler for a connection whose hello stated id.
func WithRemoteID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, remoteIDKey{}, id)
}

// RemoteID returns the member ID the client stated in its connection's hello frame, and false
// if it sent none. It is a claim, not a proof: with an Admission it comes from a holder of the
// cluster token, without one from anyone who can reach the port.
func RemoteID(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(remoteIDKey{}).(string)
	return id, ok
}

// maxHandlersPerConn caps the handlers running for one connection. When it is reached the
// connection's reader stops reading, so a flood from one peer turns into TCP back-pressure on
// that peer instead of unbounded goroutines.
const maxHandlersPerConn = 4096

const connBufSize = 64 << 10

// Server serves peer RPCs from a listener, normally Mux.Listen(ProtoRPC).
//
// Set MaxFrame before calling Serve. Serve and Close may be called from different goroutines;
// Close is idempotent.
type Server struct {
	// MaxFrame is the largest length field accepted in a request frame (see DefaultMaxFrame,
	// used when zero). A larger request closes its connection, since the stream cannot be
	// resynchronised without reading it; a larger response is replaced by a CodeInternal
	// error. Keep it equal to the clients' ClientConfig.MaxFrame.
	MaxFrame int

	ln      net.Listener
	handler Handler
	logger  hclog.Logger

	ctx    context.Context // parent of every handler's ctx; cancelled by Close
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup // per-connection goroutines, which in turn wait for their handlers
}

// NewServer returns a Server that dispatches requests read from ln to h. logger may be nil.
func NewServer(ln net.Listener, h Handler, logger hclog.Logger) *Server {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		ln:      ln,
		handler: h,
		logger:  logger,
		ctx:     ctx,
		cancel:  cancel,
		conns:   make(map[net.Conn]struct{}),
	}
}

// Serve accepts connections until Close is called, then returns nil. If the listener fails for
// another reason (for example the Mux was closed first) Serve returns that error.
func (s *Server) Serve() error {
	maxFrame := clampMaxFrame(s.MaxFrame)
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()

		go func() {
			defer s.wg.Done()
			s.serveConn(nc, maxFrame)
			s.mu.Lock()
			delete(s.conns, nc)
			s.mu.Unlock()
		}()
	}
}

// Close stops accepting, closes every connection, cancels every handler's ctx and waits for
// all handler goroutines to return. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()

	s.cancel()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// serverConn is one accepted connection: a reader (serveConn) and any number of handler
// goroutines sharing the writer.
type serverConn struct {
	nc       net.Conn
	maxFrame int
	logger   hclog.Logger

	// queued counts handlers that want the writer, including the one holding it; the holder
	// flushes only when it is the last, so replies finishing together share a syscall.
	queued atomic.Int32
	wmu    sync.Mutex
	bw     *bufio.Writer
	werr   error // sticky: after a write error nothing more is written
}

func (s *Server) serveConn(nc net.Conn, maxFrame int) {
	ctx, cancel := context.WithCancel(s.ctx)
	sc := &serverConn{
		nc:       nc,
		maxFrame: maxFrame,
		logger:   s.logger.With("remote", nc.RemoteAddr().String()),
		bw:       bufio.NewWriterSize(nc, connBufSize),
	}
	var handlers sync.WaitGroup
	defer func() {
		// The client cannot receive replies any more, so handlers are told to stop, and the
		// connection is only forgotten once none of them can touch it.
		cancel()
		nc.Close()
		handlers.Wait()
	}()

	br := bufio.NewReaderSize(nc, connBufSize)
	sem := make(chan struct{}, maxHandlersPerConn)
	for first := true; ; first = false {
		id, method, req, err := readFrame(br, maxFrame)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				sc.logger.Warn("peer: closing connection after bad read", "error", err)
			}
			return
		}
		if first && id == helloCallID && method == MethodHello {
			// Read before the next frame, so every request of the connection sees it.
			ctx = WithRemoteID(ctx, string(req))
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		handlers.Add(1)
		go func() {
			defer handlers.Done()
			defer func() { <-sem }()
			resp, err := s.call(ctx, sc.logger, method, req)
			sc.reply(id, resp, err)
		}()
	}
}

// call runs the handler, turning a panic into a CodeInternal error so one bad request cannot
// take the member down.
func (s *Server) call(ctx context.Context, logger hclog.Logger, method uint8, req []byte) (resp []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			logger.Error("peer: handler panicked", "method", method, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, &Error{Code: wire.CodeInternal, Msg: fmt.Sprintf("ember: peer handler panicked: %v", r)}
		}
	}()
	return s.handler(ctx, method, req)
}

func (sc *serverConn) reply(id uint64, resp []byte, err error) {
	status := statusOK
	if err == nil {
		if !fits(len(resp), sc.maxFrame) {
			err = &Error{Code: wire.CodeInternal, Msg: fmt.Sprintf("ember: peer response of %d bytes exceeds the frame limit", len(resp))}
		}
	}
	if err != nil {
		status, resp = statusError, encodeError(err)
		if !fits(len(resp), sc.maxFrame) {
			resp = resp[:sc.maxFrame-frameFixed]
		}
	}
	var hdr [headerSize]byte

	sc.queued.Add(1)
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	if sc.werr == nil {
		_, sc.werr = sc.bw.Write(appendHeader(hdr[:0], len(resp), id, status))
	}
	if sc.werr == nil {
		_, sc.werr = sc.bw.Write(resp)
	}
	if sc.queued.Add(-1) == 0 && sc.werr == nil {
		sc.werr = sc.bw.Flush()
	}
	if sc.werr != nil {
		// The peer may hold a partial frame; closing also stops this connection's reader.
		sc.nc.Close()
	}
}

// clampMaxFrame applies the default, leaves room for an error code and keeps the limit
// representable in the length field.
func clampMaxFrame(n int) int {
	if n <= 0 {
		return DefaultMaxFrame
	}
	return min(max(n, frameFixed+1), math.MaxUint32)
}
