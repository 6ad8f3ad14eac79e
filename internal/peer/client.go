package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/ember-kv/ember/internal/wire"
	"github.com/hashicorp/go-hclog"
)

// Errors returned by Client.Call, always wrapped so that errors.Is also matches the cause.
var (
	// ErrNotSent means no byte of the request reached the network (the dial failed, or the
	// connection died or ctx ended before the request was written): retrying is safe.
	ErrNotSent = errors.New("ember: peer request not sent")
	// ErrOutcomeUnknown means the request may have been received and executed, but no reply
	// arrived: whether to retry is the caller's decision.
	ErrOutcomeUnknown = errors.New("ember: peer connection lost")
	// ErrClientClosed means Close was called.
	ErrClientClosed = errors.New("ember: peer client closed")
)

// ClientConfig configures a Client. The zero value is usable.
type ClientConfig struct {
	Dial         DialFunc     // nil: plain TCP; called concurrently
	TLS          *tls.Config  // nil: no TLS
	Admission    *Admission   // nil: no token proof; needs TLS
	ConnsPerPeer int          // connections per address; 0 means 2
	MaxFrame     int          // largest frame length sent or accepted; 0 means DefaultMaxFrame
	Logger       hclog.Logger // nil: discard
	// LocalID, if not empty, is stated in a hello frame at the start of every connection, so
	// the Server can tell which member the connection's requests come from (see RemoteID).
	LocalID string
}

// Client calls Servers. For each address it keeps up to ConnsPerPeer connections, dialed on
// first use and redialed after they break, and pipelines any number of concurrent calls over
// each of them. Connections are kept until they break or the Client is closed; the set of
// addresses is expected to be the (small) set of cluster members.
//
// A Client is safe for concurrent use. Every Call is bounded by its ctx, including the dial and
// the wait to hand the request to the connection's writer.
type Client struct {
	cfg    ClientConfig
	ctx    context.Context // cancelled by Close, aborting dials in progress
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	pools  map[string]*pool
	conns  map[*clientConn]struct{} // live connections, so Close can reach those not yet pooled
	wg     sync.WaitGroup           // reader and writer goroutines
}

// NewClient returns a Client with cfg's defaults applied.
func NewClient(cfg ClientConfig) *Client {
	if cfg.ConnsPerPeer <= 0 {
		cfg.ConnsPerPeer = 2
	}
	cfg.MaxFrame = clampMaxFrame(cfg.MaxFrame)
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{
		cfg:    cfg,
		ctx:    ctx,
		cancel: cancel,
		pools:  make(map[string]*pool),
		conns:  make(map[*clientConn]struct{}),
	}
}

// Call sends req to the Server at addr and waits for the reply or for ctx to end.
//
// Errors: an *Error (use errors.As) when the remote handler returned one, or when req is
// larger than MaxFrame allows (wire.CodeRequestTooLarge, nothing sent); otherwise the error
// wraps exactly one of ErrNotSent and ErrOutcomeUnknown, plus the cause (ctx.Err(),
// ErrClientClosed, or the network error). A reply arriving after ctx ended is discarded.
//
// req must not be modified once passed: the connection's writer may still be reading it after
// Call has returned on ctx.
func (c *Client) Call(ctx context.Context, addr string, method uint8, req []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	if !fits(len(req), c.cfg.MaxFrame) {
		return nil, &Error{Code: wire.CodeRequestTooLarge, Msg: fmt.Sprintf("ember: peer request of %d bytes exceeds the frame limit", len(req))}
	}
	cc, err := c.conn(ctx, addr)
	if err != nil {
		return nil, err
	}
	return cc.call(ctx, method, req)
}

// Close fails every call in flight with ErrClientClosed (wrapped in ErrOutcomeUnknown or
// ErrNotSent as appropriate), makes later calls fail with it, closes all connections and waits
// for their goroutines. It is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	conns := c.conns
	c.conns = nil
	c.mu.Unlock()

	c.cancel()
	for cc := range conns {
		cc.fail(ErrClientClosed)
	}
	c.wg.Wait()
	return nil
}

// conn returns a live connection to addr, dialing if its turn in the round-robin has none.
func (c *Client) conn(ctx context.Context, addr string) (*clientConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrNotSent, ErrClientClosed)
	}
	p := c.pools[addr]
	if p == nil {
		p = &pool{slots: make([]slot, c.cfg.ConnsPerPeer)}
		c.pools[addr] = p
	}
	c.mu.Unlock()

	// Round-robin rather than least-loaded: pipelined calls are cheap, and rotating keeps
	// every connection warm so a dead one is noticed by the next call instead of lingering.
	s := &p.slots[p.next.Add(1)%uint64(len(p.slots))]
	return s.get(ctx, c, addr)
}

// dial opens and registers a new connection. The dial is also aborted by Close.
func (c *Client) dial(ctx context.Context, addr string) (*clientConn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()

	nc, err := Dial(ctx, c.cfg.Dial, addr, ProtoRPC, c.cfg.TLS, c.cfg.Admission)
	if err != nil {
		if c.ctx.Err() != nil {
			return nil, ErrClientClosed
		}
		return nil, err
	}
	cc := &clientConn{
		nc:       nc,
		maxFrame: c.cfg.MaxFrame,
		writeq:   make(chan *call, writeQueueLen),
		calls:    make(map[uint64]*call),
		dead:     make(chan struct{}),
	}
	if c.cfg.LocalID != "" {
		// First in the queue, so first on the wire. It is not registered: its answer (none from
		// this version's Server; an unknown-method error from an earlier one) is dropped.
		cc.writeq <- &call{id: helloCallID, method: MethodHello, req: []byte(c.cfg.LocalID), done: make(chan struct{})}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		nc.Close()
		return nil, ErrClientClosed
	}
	c.conns[cc] = struct{}{}
	c.wg.Add(2)
	c.mu.Unlock()

	go func() {
		defer c.wg.Done()
		cc.writeLoop()
	}()
	go func() {
		defer c.wg.Done()
		err := cc.readLoop()
		cc.fail(err)
		if !errors.Is(err, ErrClientClosed) {
			c.cfg.Logger.Debug("peer: connection lost", "addr", addr, "error", err)
		}
		c.mu.Lock()
		delete(c.conns, cc)
		c.mu.Unlock()
	}()
	return cc, nil
}

// pool is the set of connections to one address.
type pool struct {
	next  atomic.Uint64
	slots []slot
}

// slot holds at most one connection and dials it on demand. Concurrent callers that find the
// slot empty share one dial instead of each opening a connection.
type slot struct {
	mu      sync.Mutex
	cc      *clientConn
	pending *dialAttempt
}

type dialAttempt struct {
	done chan struct{} // closed when cc/err are set
	cc   *clientConn
	err  error
	// abandoned means the dial failed only because the dialing caller's ctx ended; the
	// callers sharing it try again rather than inherit someone else's cancellation.
	abandoned bool
}

func (s *slot) get(ctx context.Context, c *Client, addr string) (*clientConn, error) {
	for {
		s.mu.Lock()
		if s.cc != nil && !s.cc.isDead() {
			cc := s.cc
			s.mu.Unlock()
			return cc, nil
		}
		if a := s.pending; a != nil {
			s.mu.Unlock()
			select {
			case <-a.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %w", ErrNotSent, ctx.Err())
			}
			if a.err != nil && !a.abandoned {
				return nil, fmt.Errorf("%w: %w", ErrNotSent, a.err)
			}
			continue
		}
		a := &dialAttempt{done: make(chan struct{})}
		s.pending = a
		s.mu.Unlock()

		a.cc, a.err = c.dial(ctx, addr)
		a.abandoned = a.err != nil && ctx.Err() != nil
		s.mu.Lock()
		s.pending = nil
		if a.err == nil {
			s.cc = a.cc
		}
		s.mu.Unlock()
		close(a.done)
		if a.err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotSent, a.err)
		}
		return a.cc, nil
	}
}

// writeQueueLen is how many requests may wait for a connection's writer. A queue (rather than
// callers taking a write lock) lets a caller give up on ctx without waiting on a socket write,
// and lets the writer see whether more requests are coming before it flushes.
const writeQueueLen = 256

// Call states. A call moves from queued to exactly one of taken (the writer owns it and its
// bytes will go out) or abandoned (its caller gave up first and the writer skips it).
const (
	callQueued int32 = iota
	callTaken
	callAbandoned
)

type call struct {
	id     uint64
	method uint8
	req    []byte

	state atomic.Int32
	// sent is set before any byte of the request is handed to the socket, so a connection
	// failure can tell calls that may have reached the server from those that cannot have.
	sent atomic.Bool

	done chan struct{} // closed once resp/err are set
	resp []byte
	err  error
}

// clientConn is one pipelined connection: callers register a call and queue it, writeLoop
// writes the queue, readLoop matches replies to calls by ID.
type clientConn struct {
	nc       net.Conn
	maxFrame int
	writeq   chan *call

	mu     sync.Mutex
	nextID uint64
	calls  map[uint64]*call // registered and not yet completed
	err    error            // why the connection died; set once
	dead   chan struct{}    // closed when err is set
}

func (cc *clientConn) isDead() bool {
	select {
	case <-cc.dead:
		return true
	default:
		return false
	}
}

func (cc *clientConn) call(ctx context.Context, method uint8, req []byte) ([]byte, error) {
	cl := &call{method: method, req: req, done: make(chan struct{})}
	cc.mu.Lock()
	if cc.err != nil {
		err := cc.err
		cc.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	cc.nextID++
	cl.id = cc.nextID
	cc.calls[cl.id] = cl
	cc.mu.Unlock()

	select {
	case cc.writeq <- cl:
	case <-cc.dead:
		// fail completes every registered call, this one included.
	case <-ctx.Done():
		if cc.forget(cl) {
			return nil, fmt.Errorf("%w: %w", ErrNotSent, ctx.Err())
		}
	}

	select {
	case <-cl.done:
		return cl.resp, cl.err
	case <-ctx.Done():
		if !cc.forget(cl) {
			// The outcome raced in; it is more useful than the ctx error.
			<-cl.done
			return cl.resp, cl.err
		}
		if cl.state.CompareAndSwap(callQueued, callAbandoned) {
			return nil, fmt.Errorf("%w: %w", ErrNotSent, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
	}
}

// forget unregisters cl so a late reply is dropped. It reports false if cl was already
// completed (or is being completed) by the reader or by fail.
func (cc *clientConn) forget(cl *call) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.calls[cl.id] != cl {
		return false
	}
	delete(cc.calls, cl.id)
	return true
}

// complete takes the call with the given ID out of the table, or returns nil if its caller
// gave up or the connection already failed it.
func (cc *clientConn) complete(id uint64) *call {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cl := cc.calls[id]
	delete(cc.calls, id)
	return cl
}

// fail marks the connection dead, closes it and fails every registered call: those that may
// have reached the server with ErrOutcomeUnknown, the rest with ErrNotSent. Only the first
// call has an effect.
func (cc *clientConn) fail(cause error) {
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	cc.err = cause
	calls := cc.calls
	cc.calls = nil
	close(cc.dead)
	cc.mu.Unlock()

	// Closing before reading the sent flags makes them final: the writer sets sent before it
	// writes, so a call seen unsent here can only be written to a closed socket.
	cc.nc.Close()
	for _, cl := range calls {
		if cl.sent.Load() {
			cl.err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, cause)
		} else {
			cl.err = fmt.Errorf("%w: %w", ErrNotSent, cause)
		}
		close(cl.done)
	}
}

func (cc *clientConn) writeLoop() {
	bw := bufio.NewWriterSize(cc.nc, connBufSize)
	// buffered holds the calls whose bytes sit in bw and have not reached the socket.
	var buffered []*call
	flush := func() error {
		for _, cl := range buffered {
			cl.sent.Store(true)
		}
		buffered = buffered[:0]
		return bw.Flush()
	}
	var hdr [headerSize]byte
	for {
		var cl *call
		select {
		case cl = <-cc.writeq:
		case <-cc.dead:
			return
		}
		if cl.state.CompareAndSwap(callQueued, callTaken) {
			n := headerSize + len(cl.req)
			if n > bw.Available() && bw.Buffered() > 0 {
				if err := flush(); err != nil {
					cc.fail(err)
					return
				}
			}
			if n > bw.Available() {
				// Too big for the buffer: bufio will write it straight through.
				cl.sent.Store(true)
			} else {
				buffered = append(buffered, cl)
			}
			_, err := bw.Write(appendHeader(hdr[:0], len(cl.req), cl.id, cl.method))
			if err == nil {
				_, err = bw.Write(cl.req)
			}
			if err != nil {
				cc.fail(err)
				return
			}
		}
		// Flush only when nobody else is waiting, so concurrent calls share a syscall.
		if len(cc.writeq) == 0 && bw.Buffered() > 0 {
			if err := flush(); err != nil {
				cc.fail(err)
				return
			}
		}
	}
}

// readLoop dispatches replies until the connection fails, and returns why.
func (cc *clientConn) readLoop() error {
	br := bufio.NewReaderSize(cc.nc, connBufSize)
	for {
		id, status, payload, err := readFrame(br, cc.maxFrame)
		if err != nil {
			cc.mu.Lock()
			cause := cc.err
			cc.mu.Unlock()
			if cause != nil {
				// The read failed because fail closed the socket; report the original cause.
				return cause
			}
			if err == io.EOF {
				return errors.New("closed by the server")
			}
			return err
		}
		var resp []byte
		var rerr error
		switch status {
		case statusOK:
			resp = payload
		case statusError:
			pe, err := decodeError(payload)
			if err != nil {
				return err
			}
			rerr = pe
		default:
			return fmt.Errorf("%w: status %d", errMalformedFrame, status)
		}
		if cl := cc.complete(id); cl != nil {
			cl.resp, cl.err = resp, rerr
			close(cl.done)
		}
	}
}
