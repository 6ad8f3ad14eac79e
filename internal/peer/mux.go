// Package peer carries all member-to-member traffic over a single TCP port: raft's own stream
// and ember's RPC share one listener and are told apart by the first byte of each connection.
//
// One port per member keeps deployment simple (one address to advertise, one firewall rule, one
// TLS configuration) at the cost of a one-byte preamble on every connection.
package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Protocol bytes written first on every peer connection.
const (
	ProtoRaft byte = 'R'
	ProtoRPC  byte = 'E'
)

// HandshakeTimeout bounds the TLS handshake, the admission proofs and the read of the protocol
// byte on an accepted connection, so a silent or slow client cannot pin a goroutine. NewMux reads it once; changing
// it affects only muxes created afterwards, and must not race with NewMux.
var HandshakeTimeout = 10 * time.Second

// dialHandshakeTimeout bounds the same steps on a dialed connection, on top of the dial's ctx,
// so a server that accepts and then says nothing cannot hold a dialer whose ctx has no deadline.
const dialHandshakeTimeout = 10 * time.Second

// keepAlivePeriod is the TCP keepalive interval on both ends of a peer connection. Peer
// connections live for the life of the member, so keepalive is what eventually notices a peer
// whose host vanished without a FIN.
const keepAlivePeriod = 15 * time.Second

// Mux accepts connections on one listener and hands each to the sub-listener registered for
// the protocol byte the client sent first.
//
// Listen must be called before Serve. Serve, Addr and Close may be called from any goroutine;
// Close may be called more than once.
type Mux struct {
	ln               net.Listener
	tlsConf          *tls.Config
	adm              *Admission
	logger           hclog.Logger
	handshakeTimeout time.Duration

	done      chan struct{} // closed by Close
	closeOnce sync.Once

	mu          sync.Mutex
	closed      bool
	subs        map[byte]*subListener
	handshaking map[net.Conn]struct{} // accepted, not yet handed over; Close closes them
	wg          sync.WaitGroup        // handshake goroutines
}

// NewMux returns a Mux serving ln. If tlsConf is non-nil every accepted connection is wrapped
// with tls.Server before the protocol byte is read, so the byte travels inside TLS. If adm is
// non-nil (it needs tlsConf) the client must then prove the cluster token before its protocol
// byte is read; a connection that does not is closed. logger may be nil.
func NewMux(ln net.Listener, tlsConf *tls.Config, adm *Admission, logger hclog.Logger) *Mux {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Mux{
		ln:               ln,
		tlsConf:          tlsConf,
		adm:              adm,
		logger:           logger,
		handshakeTimeout: HandshakeTimeout,
		done:             make(chan struct{}),
		subs:             make(map[byte]*subListener),
		handshaking:      make(map[net.Conn]struct{}),
	}
}

// Listen returns a net.Listener that yields the connections whose protocol byte is proto. Its
// Addr is the real listener's address. Closing it stops delivery for proto only; connections
// that arrive for it afterwards are closed. Registering the same proto twice panics, since two
// consumers of one protocol is a wiring bug.
func (m *Mux) Listen(proto byte) net.Listener {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.subs[proto]; dup {
		panic(fmt.Sprintf("peer: protocol byte %q registered twice", proto))
	}
	l := &subListener{addr: m.ln.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
	if m.closed {
		l.Close()
	}
	m.subs[proto] = l
	return l
}

// Addr returns the address of the underlying listener.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Serve accepts connections until Close is called, then returns nil. It returns a non-nil error
// only if the underlying listener fails for another reason. Transient accept errors (such as
// running out of file descriptors) are logged and retried with backoff, since giving up would
// cut the member off from its peers for good.
func (m *Mux) Serve() error {
	var delay time.Duration
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			if m.isClosed() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.logger.Error("accept failed; retrying", "error", err, "delay", delay)
			select {
			case <-time.After(delay):
				continue
			case <-m.done:
				return nil
			}
		}
		delay = 0

		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			conn.Close()
			return nil
		}
		m.handshaking[conn] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go m.handshake(conn)
	}
}

// handshake runs the TLS handshake, reads the protocol byte and hands the connection over. It
// runs in its own goroutine so one slow client does not hold up the accept loop.
func (m *Mux) handshake(raw net.Conn) {
	defer m.wg.Done()
	setKeepAlive(raw)

	proto, conn, err := m.readProto(raw)

	m.mu.Lock()
	delete(m.handshaking, raw)
	closed := m.closed
	sub := m.subs[proto]
	m.mu.Unlock()

	switch {
	case closed:
		raw.Close()
		return
	case err != nil:
		m.logger.Warn("handshake failed", "remote", raw.RemoteAddr().String(), "error", err)
		raw.Close()
		return
	case sub == nil:
		m.logger.Warn("unknown protocol byte", "remote", raw.RemoteAddr().String(), "byte", proto)
		raw.Close()
		return
	}
	sub.deliver(conn)
}

func (m *Mux) readProto(raw net.Conn) (byte, net.Conn, error) {
	if err := raw.SetDeadline(time.Now().Add(m.handshakeTimeout)); err != nil {
		return 0, nil, err
	}
	conn := raw
	if m.tlsConf != nil {
		tc := tls.Server(raw, m.tlsConf)
		if err := tc.Handshake(); err != nil {
			return 0, nil, fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	if m.adm != nil {
		if err := admitConn(conn, m.adm, true); err != nil {
			return 0, nil, err
		}
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return 0, nil, fmt.Errorf("reading protocol byte: %w", err)
	}
	// The protocols own their deadlines from here on.
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return 0, nil, err
	}
	return b[0], conn, nil
}

// Close closes the underlying listener, every sub-listener and every connection still in its
// handshake, and waits for the handshake goroutines to finish. Connections already handed to a
// sub-listener belong to its consumer and are left alone. Close is idempotent.
func (m *Mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		close(m.done)
		for c := range m.handshaking {
			c.Close()
		}
		for _, l := range m.subs {
			l.Close()
		}
		m.mu.Unlock()

		err = m.ln.Close()
		m.wg.Wait()
	})
	return err
}

func (m *Mux) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// subListener is the net.Listener a Mux feeds for one protocol.
type subListener struct {
	addr      net.Addr
	conns     chan net.Conn // unbuffered: a connection is either accepted or closed, never stranded
	done      chan struct{}
	closeOnce sync.Once
}

// deliver blocks until the consumer accepts conn or the listener is closed, so a consumer that
// stops accepting applies back-pressure instead of piling up connections.
func (l *subListener) deliver(conn net.Conn) {
	select {
	case l.conns <- conn:
	case <-l.done:
		conn.Close()
	}
}

// Accept waits for the next connection of this protocol. After Close it returns net.ErrClosed.
func (l *subListener) Accept() (net.Conn, error) {
	// Checked first so that a closed listener never hands out a connection, even if one is
	// being delivered at the same moment.
	select {
	case <-l.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops this sub-listener; it is idempotent and leaves the Mux and other protocols
// running.
func (l *subListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *subListener) Addr() net.Addr { return l.addr }

// DialFunc opens a raw connection to addr. Tests replace it to inject faults. It may be called
// from many goroutines at once and must honour ctx.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

func dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{KeepAlive: keepAlivePeriod}
	return d.DialContext(ctx, "tcp", addr)
}

// Dial connects to addr using dial (a plain TCP dialer if nil), runs the TLS client handshake if
// tlsConf is non-nil, proves the cluster token and checks the server's proof if adm is non-nil
// (it needs tlsConf), and writes proto. If tlsConf has no ServerName and does not skip
// verification, the host part of addr is used, so certificates must name the address peers
// dial. ctx and dialHandshakeTimeout bound the whole sequence; the returned connection carries no
// deadline. Dial is safe for concurrent use.
func Dial(ctx context.Context, dial DialFunc, addr string, proto byte, tlsConf *tls.Config, adm *Admission) (net.Conn, error) {
	if dial == nil {
		dial = dialTCP
	}
	raw, err := dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	setKeepAlive(raw)
	if err := raw.SetDeadline(time.Now().Add(dialHandshakeTimeout)); err != nil {
		raw.Close()
		return nil, err
	}

	// Cancelling ctx must also abort a TLS handshake or write that is stuck on the network;
	// an expired deadline does that for any net.Conn.
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	conn, err := handshakeClient(ctx, raw, addr, proto, tlsConf, adm)
	if !stop() {
		// The deadline was (or is being) poisoned, so the conn is unusable even if the
		// handshake happened to finish.
		raw.Close()
		if err == nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	if err == nil {
		err = raw.SetDeadline(time.Time{})
	}
	if err != nil {
		raw.Close()
		return nil, err
	}
	return conn, nil
}

func handshakeClient(ctx context.Context, raw net.Conn, addr string, proto byte, tlsConf *tls.Config, adm *Admission) (net.Conn, error) {
	conn := raw
	if tlsConf != nil {
		if tlsConf.ServerName == "" && !tlsConf.InsecureSkipVerify {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			tlsConf = tlsConf.Clone()
			tlsConf.ServerName = host
		}
		tc := tls.Client(raw, tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	if adm != nil {
		if err := admitConn(conn, adm, false); err != nil {
			return nil, err
		}
	}
	if _, err := conn.Write([]byte{proto}); err != nil {
		return nil, fmt.Errorf("writing protocol byte: %w", err)
	}
	return conn, nil
}

func setKeepAlive(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetKeepAlive(true)
		tc.SetKeepAlivePeriod(keepAlivePeriod)
	}
}
