package peer

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// RaftLayer is a raft.StreamLayer over a Mux sub-listener: inbound raft connections come from
// the Mux, outbound ones are dialed with ProtoRaft. All methods are safe for concurrent use.
//
// raft's NetworkTransport closes only the listener on Close, leaving its pooled outbound
// connections and the goroutines serving inbound ones alive for as long as the peer keeps its
// end open. The layer therefore tracks every connection it hands out and closes them all on
// Close, so a member that stops releases its sockets and goroutines at once.
type RaftLayer struct {
	ln        net.Listener
	advertise net.Addr
	dial      DialFunc
	tlsConf   *tls.Config
	adm       *Admission

	mu     sync.Mutex // guards conns and closed
	conns  map[*trackedConn]struct{}
	closed bool
}

var _ raft.StreamLayer = (*RaftLayer)(nil)

// NewRaftLayer returns a RaftLayer accepting from ln (normally Mux.Listen(ProtoRaft)). If
// advertise is non-nil, Addr reports it instead of ln's address, for members that listen on a
// wildcard or NATed address. dial, tlsConf and adm are passed to Dial for outbound connections.
func NewRaftLayer(ln net.Listener, advertise net.Addr, dial DialFunc, tlsConf *tls.Config, adm *Admission) *RaftLayer {
	return &RaftLayer{ln: ln, advertise: advertise, dial: dial, tlsConf: tlsConf, adm: adm, conns: map[*trackedConn]struct{}{}}
}

// Accept waits for the next inbound raft connection.
func (l *RaftLayer) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		return nil, err
	}
	return l.track(c)
}

// Close closes the sub-listener and every connection the layer accepted or dialed; the Mux and
// other protocols keep running.
func (l *RaftLayer) Close() error {
	err := l.ln.Close()
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = map[*trackedConn]struct{}{}
	l.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
	return err
}

// Addr returns the advertised address if one was given, else the listener's.
func (l *RaftLayer) Addr() net.Addr {
	if l.advertise != nil {
		return l.advertise
	}
	return l.ln.Addr()
}

// Dial opens a raft connection to address. A timeout of zero or less means no limit, matching
// net.DialTimeout.
func (l *RaftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c, err := Dial(ctx, l.dial, string(address), ProtoRaft, l.tlsConf, l.adm)
	if err != nil {
		return nil, err
	}
	return l.track(c)
}

func (l *RaftLayer) track(c net.Conn) (net.Conn, error) {
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	l.conns[tc] = struct{}{}
	return tc, nil
}

// trackedConn removes itself from its layer when closed.
type trackedConn struct {
	net.Conn
	l    *RaftLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
