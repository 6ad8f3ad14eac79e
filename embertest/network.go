package embertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Network is a fault-injecting view of loopback TCP for the members of a test cluster. Every
// peer connection a member dials goes through it. Faults are set per direction, from one member
// to another, with SetFault (or Cut): a cut fails new dials and closes the connections already
// open between two members; the other faults act on the bytes of open connections (see Fault).
//
// Only the dialing end of a connection is wrapped, so each byte passes one wrapper: a byte from
// a to b is either written by a on a connection a dialed or read by b on a connection b dialed,
// and the fault of the direction a→b applies in both places.
//
// Network is safe for concurrent use.
type Network struct {
	mu     sync.Mutex
	names  map[string]string          // address → member ID
	faults map[[2]string]Fault        // (from, to) → fault of that direction; absent means none
	conns  map[[2]string][]*faultConn // open connections by (dialer, target)
	dialer net.Dialer

	bytes atomic.Int64 // bytes sent both ways on every connection dialed through the network
}

// Fault is what happens to the traffic of one direction between two members. The zero Fault
// is a healthy link. Faults combine: a link may be delayed and lossy at once.
type Fault struct {
	// Cut refuses new connections between the two members and closes those open, whichever
	// side dialed them: TCP cannot set up or carry a connection that lacks one direction.
	Cut bool
	// Blackhole silently discards every byte sent in this direction, on connections dialed
	// either way, while the opposite direction still flows. A write of a blackholed byte
	// succeeds at once (it does not block, as the sender's socket buffer would not be full
	// yet), so the sender only notices through missing replies and its own timeouts. New
	// connections can still be dialed and are blackholed from their first byte.
	Blackhole bool
	// LostReplies discards the replies to the requests `from` sends `to` on connections that
	// `from` dialed: `to` receives and serves every request, `from` never hears back.
	// Connections `to` dialed are unaffected, so unlike Blackhole on the reverse direction,
	// `to`'s own requests still get their answers.
	LostReplies bool
	// Delay holds each write in this direction for Delay plus a uniformly random extra below
	// Jitter before it is sent. The wait happens in the writer, so back-to-back writes on one
	// connection queue behind each other: the link is slow, not just long.
	Delay, Jitter time.Duration
	// DropRate is the probability, for each write in this direction, that the connection
	// breaks instead (both ends see it closed), as when a peer's kernel resets it.
	DropRate float64
}

// lossy reports whether f discards bytes that a connection then never delivers.
func (f Fault) lossy() bool { return f.Blackhole || f.LostReplies }

// wait returns how long to hold a write: Delay plus a random part of Jitter.
func (f Fault) wait() time.Duration {
	d := f.Delay
	if f.Jitter > 0 {
		d += rand.N(f.Jitter)
	}
	return d
}

// Bytes returns how many bytes members have exchanged so far, both directions, TLS and
// protocol framing included.
func (n *Network) Bytes() int64 { return n.bytes.Load() }

// ErrCut is returned by dials and by I/O on connections across a cut.
var ErrCut = errors.New("embertest: network cut")

// ErrDropped is returned by the write or read that a Fault's DropRate chose to break the
// connection at.
var ErrDropped = errors.New("embertest: connection dropped")

// NewNetwork returns a network with no faults.
func NewNetwork() *Network {
	return &Network{names: map[string]string{}, faults: map[[2]string]Fault{}, conns: map[[2]string][]*faultConn{}}
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
	return n.faults[[2]string{from, to}].Cut || n.faults[[2]string{to, from}].Cut
}

// Cut stops traffic from member a to member b: it sets Cut in the fault of a→b, keeping the
// rest of that fault. Connections between them close, since TCP cannot carry one direction
// only; for one-way loss use a Fault with Blackhole.
func (n *Network) Cut(a, b string) {
	n.mu.Lock()
	f := n.faults[[2]string{a, b}]
	f.Cut = true
	n.faults[[2]string{a, b}] = f
	doomed := n.takeLocked(func(c *faultConn) bool {
		return c.pair == [2]string{a, b} || c.pair == [2]string{b, a}
	})
	n.mu.Unlock()
	closeAll(doomed)
}

// SetFault replaces the fault of the direction from→to; the zero Fault heals it. Open
// connections take the new fault from their next read or write on. A connection that lost
// bytes to a Blackhole or LostReplies is closed once that loss stops, because its byte stream
// now has a hole that neither end could parse across (a real network would instead have
// retransmitted, or timed the connection out).
func (n *Network) SetFault(from, to string, f Fault) {
	n.mu.Lock()
	if f == (Fault{}) {
		delete(n.faults, [2]string{from, to})
	} else {
		n.faults[[2]string{from, to}] = f
	}
	doomed := n.takeLocked(func(c *faultConn) bool {
		between := c.pair == [2]string{from, to} || c.pair == [2]string{to, from}
		return between && (f.Cut || c.lossy && !n.losesLocked(c))
	})
	n.mu.Unlock()
	closeAll(doomed)
}

// Fault returns the fault of the direction from→to.
func (n *Network) Fault(from, to string) Fault {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.faults[[2]string{from, to}]
}

// HealAll removes every fault, cuts included, and closes the connections that lost bytes.
func (n *Network) HealAll() {
	n.mu.Lock()
	clear(n.faults)
	doomed := n.takeLocked(func(c *faultConn) bool { return c.lossy })
	n.mu.Unlock()
	closeAll(doomed)
}

// takeLocked removes the connections that match from the table and returns them, for the
// caller to close once it released n.mu (faultConn.Close takes it).
func (n *Network) takeLocked(match func(*faultConn) bool) []*faultConn {
	var taken []*faultConn
	for pair, list := range n.conns {
		kept := list[:0]
		for _, c := range list {
			if match(c) {
				taken = append(taken, c)
			} else {
				kept = append(kept, c)
			}
		}
		if len(kept) == 0 {
			delete(n.conns, pair)
		} else {
			n.conns[pair] = kept
		}
	}
	return taken
}

func closeAll(conns []*faultConn) {
	for _, c := range conns {
		c.Conn.Close()
	}
}

// losesLocked reports whether c currently discards bytes in either direction.
func (n *Network) losesLocked(c *faultConn) bool {
	out, back := n.faults[c.pair], n.faults[[2]string{c.pair[1], c.pair[0]}]
	return out.lossy() || back.Blackhole
}

// faultConn is the dialing end of a connection from pair[0] to pair[1].
type faultConn struct {
	net.Conn
	n    *Network
	pair [2]string

	lossy bool // bytes were discarded; guarded by n.mu
}

// outgoing returns the fault for what c writes (pair[0]→pair[1]) and notes a loss.
func (c *faultConn) outgoing() Fault {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	f := c.n.faults[c.pair]
	if f.Blackhole {
		c.lossy = true
	}
	return f
}

// incoming returns the fault for what c reads (pair[1]→pair[0]), with lost set when the bytes
// are to be discarded, and notes a loss.
func (c *faultConn) incoming() (f Fault, lost bool) {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	f = c.n.faults[[2]string{c.pair[1], c.pair[0]}]
	lost = f.Blackhole || c.n.faults[c.pair].LostReplies
	if lost {
		c.lossy = true
	}
	return f, lost
}

func (c *faultConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		c.n.bytes.Add(int64(n))
		if n == 0 {
			return n, err
		}
		f, lost := c.incoming()
		if lost {
			if err != nil {
				return 0, err
			}
			continue // the bytes vanished on the way; wait for more
		}
		if f.DropRate > 0 && rand.Float64() < f.DropRate {
			c.Close()
			return 0, fmt.Errorf("read %s←%s: %w", c.pair[0], c.pair[1], ErrDropped)
		}
		if d := f.wait(); d > 0 {
			time.Sleep(d)
		}
		return n, err
	}
}

func (c *faultConn) Write(p []byte) (int, error) {
	f := c.outgoing()
	if f.DropRate > 0 && rand.Float64() < f.DropRate {
		c.Close()
		return 0, fmt.Errorf("write %s→%s: %w", c.pair[0], c.pair[1], ErrDropped)
	}
	if d := f.wait(); d > 0 {
		time.Sleep(d)
	}
	if f.Blackhole {
		return len(p), nil
	}
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
