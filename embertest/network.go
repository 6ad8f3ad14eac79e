package embertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
)

// Network is a fault-injecting view of loopback TCP for the members of a test cluster. Every
// peer connection a member dials goes through it; a cut between two members fails new dials
// and closes the connections already open between them.
//
// Network is safe for concurrent use.
type Network struct {
	mu     sync.Mutex
	names  map[string]string          // address → member ID
	cut    map[[2]string]bool         // (from, to) pairs that cannot talk
	conns  map[[2]string][]*faultConn // open connections by (dialer, target)
	dialer net.Dialer

	bytes atomic.Int64 // bytes sent both ways on every connection dialed through the network
}

// Bytes returns how many bytes members have exchanged so far, both directions, TLS and
// protocol framing included.
func (n *Network) Bytes() int64 { return n.bytes.Load() }

// ErrCut is returned by dials and by I/O on connections across a cut.
var ErrCut = errors.New("embertest: network cut")

// NewNetwork returns a network with no faults.
func NewNetwork() *Network {
	return &Network{names: map[string]string{}, cut: map[[2]string]bool{}, conns: map[[2]string][]*faultConn{}}
}

// SetAddr tells the network which member listens on addr.
func (n *Network) SetAddr(addr, id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.names[addr] = id
}

// Dialer returns the dial function for member from, for ember.WithDialer.
func (n *Network) Dialer(from string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		n.mu.Lock()
		to := n.names[addr]
		blocked := n.blocked(from, to)
		n.mu.Unlock()
		if blocked {
			return nil, fmt.Errorf("dial %s→%s: %w", from, to, ErrCut)
		}
		c, err := n.dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		fc := &faultConn{Conn: c, n: n, pair: [2]string{from, to}}
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.blocked(from, to) {
			c.Close()
			return nil, fmt.Errorf("dial %s→%s: %w", from, to, ErrCut)
		}
		n.conns[fc.pair] = append(n.conns[fc.pair], fc)
		return fc, nil
	}
}

// blocked reports whether traffic between from and to is cut in either direction: a TCP
// connection needs both. Callers hold n.mu.
func (n *Network) blocked(from, to string) bool {
	return n.cut[[2]string{from, to}] || n.cut[[2]string{to, from}]
}

// Cut stops traffic from member a to member b. Connections between them close, since TCP cannot
// carry one direction only.
func (n *Network) Cut(a, b string) {
	n.mu.Lock()
	n.cut[[2]string{a, b}] = true
	var doomed []*faultConn
	for _, pair := range [][2]string{{a, b}, {b, a}} {
		doomed = append(doomed, n.conns[pair]...)
		delete(n.conns, pair)
	}
	n.mu.Unlock()
	for _, c := range doomed {
		c.Conn.Close()
	}
}

// HealAll removes every cut.
func (n *Network) HealAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
}

type faultConn struct {
	net.Conn
	n    *Network
	pair [2]string
}

func (c *faultConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.bytes.Add(int64(n))
	return n, err
}

func (c *faultConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.bytes.Add(int64(n))
	return n, err
}

func (c *faultConn) Close() error {
	c.n.mu.Lock()
	list := c.n.conns[c.pair]
	for i, fc := range list {
		if fc == c {
			c.n.conns[c.pair] = append(list[:i], list[i+1:]...)
			break
		}
	}
	c.n.mu.Unlock()
	return c.Conn.Close()
}
