package reliability

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ember-kv/ember/embertest"
)

// The fault model of embertest.Network, checked on plain TCP connections between two fake
// members: what each fault lets through in each direction, and on connections dialed either way.

// fakeMember listens for one member of a Network and hands over accepted connections.
type fakeMember struct {
	id       string
	addr     string
	accepted chan net.Conn
}

func newFakeMember(t testing.TB, n *embertest.Network, id string) *fakeMember {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeMember{id: id, addr: ln.Addr().String(), accepted: make(chan net.Conn, 16)}
	n.SetAddr(m.addr, id)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m.accepted <- c
		}
	}()
	return m
}

// dial connects from to to through n and returns both ends: the dialer's (wrapped) and the
// target's (plain).
func dial(t testing.TB, n *embertest.Network, from, to *fakeMember) (dialer, target net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := n.Dialer(from.id)(ctx, to.addr)
	if err != nil {
		t.Fatalf("dial %s→%s: %v", from.id, to.id, err)
	}
	t.Cleanup(func() { c.Close() })
	select {
	case s := <-to.accepted:
		t.Cleanup(func() { s.Close() })
		return c, s
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not accept", to.id)
	}
	return nil, nil
}

// arrives reports whether msg written on w arrives on r within a short wait; it fails the test
// if something else arrives.
func arrives(t testing.TB, w, r net.Conn, msg string) bool {
	t.Helper()
	if _, err := w.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	r.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	defer r.SetReadDeadline(time.Time{})
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(r, buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	if err != nil || string(buf) != msg {
		t.Fatalf("read %q: got %q, %v", msg, buf, err)
	}
	return true
}

func TestNetwork_Blackhole(t *testing.T) {
	n := embertest.NewNetwork()
	a, b := newFakeMember(t, n, "a"), newFakeMember(t, n, "b")
	ab, ba := dial(t, n, a, b) // dialed by a
	bd, ad := dial(t, n, b, a) // dialed by b
	n.SetFault("a", "b", embertest.Fault{Blackhole: true})
	if arrives(t, ab, ba, "a→b on a's connection") {
		t.Error("a blackholed a→b byte arrived on a connection a dialed")
	}
	if arrives(t, ad, bd, "a→b on b's connection") {
		t.Error("a blackholed a→b byte arrived on a connection b dialed")
	}
	if !arrives(t, ba, ab, "b→a on a's connection") || !arrives(t, bd, ad, "b→a on b's connection") {
		t.Error("b→a traffic stopped under a one-way blackhole of a→b")
	}
	// New connections are blackholed too.
	ab2, ba2 := dial(t, n, a, b)
	if arrives(t, ab2, ba2, "a→b on a new connection") {
		t.Error("a new connection escaped the blackhole")
	}
	// Healing closes the connections that lost bytes: their streams have holes.
	n.HealAll()
	for _, c := range []net.Conn{ab, bd, ab2} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a connection that lost bytes survived the heal")
		}
	}
	ab3, ba3 := dial(t, n, a, b)
	if !arrives(t, ab3, ba3, "a→b after healing") {
		t.Error("no a→b traffic after healing")
	}
}

func TestNetwork_LostReplies(t *testing.T) {
	n := embertest.NewNetwork()
	a, b := newFakeMember(t, n, "a"), newFakeMember(t, n, "b")
	ab, ba := dial(t, n, a, b)
	bd, ad := dial(t, n, b, a)
	n.SetFault("a", "b", embertest.Fault{LostReplies: true})
	if !arrives(t, ab, ba, "request") {
		t.Error("a's request did not reach b")
	}
	if arrives(t, ba, ab, "reply") {
		t.Error("b's reply reached a")
	}
	if !arrives(t, bd, ad, "b's own request") || !arrives(t, ad, bd, "a's reply to b") {
		t.Error("a connection b dialed was affected by LostReplies of a→b")
	}
	n.SetFault("a", "b", embertest.Fault{})
	ab.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := ab.Read(make([]byte, 1)); err == nil {
		t.Error("a connection that lost replies survived the heal")
	}
	if !arrives(t, bd, ad, "b's connection after the heal") {
		t.Error("a connection that lost nothing was closed by the heal")
	}
}

func TestNetwork_DelayDropCut(t *testing.T) {
	n := embertest.NewNetwork()
	a, b := newFakeMember(t, n, "a"), newFakeMember(t, n, "b")
	ab, ba := dial(t, n, a, b)
	bd, ad := dial(t, n, b, a)

	n.SetFault("a", "b", embertest.Fault{Delay: 50 * time.Millisecond, Jitter: 10 * time.Millisecond})
	for _, c := range [][2]net.Conn{{ab, ba}, {ad, bd}} {
		start := time.Now()
		if !arrives(t, c[0], c[1], "slow") {
			t.Fatal("a delayed byte did not arrive")
		}
		if d := time.Since(start); d < 50*time.Millisecond {
			t.Errorf("a→b took %v, below the 50ms delay", d)
		}
	}
	if got := n.Fault("a", "b"); got.Delay != 50*time.Millisecond {
		t.Errorf("Fault(a, b) = %+v", got)
	}

	n.SetFault("a", "b", embertest.Fault{DropRate: 1})
	if _, err := ab.Write([]byte("x")); !errors.Is(err, embertest.ErrDropped) {
		t.Errorf("write with DropRate 1: %v, want ErrDropped", err)
	}
	ba.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := ba.Read(make([]byte, 1)); err == nil {
		t.Error("the target end of a dropped connection is still open")
	}
	ad.Write([]byte("y"))
	bd.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := bd.Read(make([]byte, 1)); !errors.Is(err, embertest.ErrDropped) {
		t.Errorf("read of an a→b byte with DropRate 1: %v, want ErrDropped", err)
	}

	n.SetFault("a", "b", embertest.Fault{})
	n.Cut("b", "a") // either direction's cut blocks dials both ways
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, from := range []*fakeMember{a, b} {
		to := map[*fakeMember]*fakeMember{a: b, b: a}[from]
		if _, err := n.Dialer(from.id)(ctx, to.addr); !errors.Is(err, embertest.ErrCut) {
			t.Errorf("dial %s→%s across a cut: %v, want ErrCut", from.id, to.id, err)
		}
	}
	n.HealAll()
	ab2, ba2 := dial(t, n, a, b)
	if !arrives(t, ab2, ba2, "after HealAll") {
		t.Error("no traffic after HealAll")
	}
}
