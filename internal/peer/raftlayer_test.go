package peer

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func newRaftTransport(t *testing.T, m *Mux) *raft.NetworkTransport {
	t.Helper()
	layer := NewRaftLayer(m.Listen(ProtoRaft), nil, nil, nil, nil)
	tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 2,
		Timeout: 5 * time.Second,
		Logger:  hclog.NewNullLogger(),
	})
	t.Cleanup(func() {
		// CloseStreams drops the pooled outbound connections, which ends the peer's
		// per-connection goroutines; Close stops the accept loop.
		tr.CloseStreams()
		tr.Close()
	})
	return tr
}

// answer serves the consumer side of tr until the test ends.
func answer(t *testing.T, tr *raft.NetworkTransport) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		<-stopped
	})
	go func() {
		defer close(stopped)
		for {
			select {
			case rpc := <-tr.Consumer():
				switch req := rpc.Command.(type) {
				case *raft.RequestVoteRequest:
					rpc.Respond(&raft.RequestVoteResponse{Term: req.Term, Granted: true}, nil)
				case *raft.AppendEntriesRequest:
					rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: req.PrevLogEntry + uint64(len(req.Entries)), Success: true}, nil)
				default:
					rpc.Respond(nil, raft.ErrUnsupportedProtocol)
				}
			case <-done:
				return
			}
		}
	}()
}

func TestRaftLayer_NetworkTransportRoundTrip(t *testing.T) {
	m1, m2 := startMux(t, nil, nil), startMux(t, nil, nil)
	// Both members also serve RPC on the same port, as in production.
	startRPCOnHandler(t, m1, echo)
	startRPCOnHandler(t, m2, echo)
	t1, t2 := newRaftTransport(t, m1), newRaftTransport(t, m2)
	answer(t, t2)

	if t2.LocalAddr() != raft.ServerAddress(m2.Addr().String()) {
		t.Fatalf("LocalAddr = %s, want %s", t2.LocalAddr(), m2.Addr())
	}

	var vote raft.RequestVoteResponse
	err := t1.RequestVote("m2", t2.LocalAddr(), &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ID: []byte("m1"), Addr: []byte(t1.LocalAddr())},
		Term:      7,
	}, &vote)
	if err != nil {
		t.Fatal(err)
	}
	if !vote.Granted || vote.Term != 7 {
		t.Fatalf("vote = %+v", vote)
	}

	var app raft.AppendEntriesResponse
	err = t1.AppendEntries("m2", t2.LocalAddr(), &raft.AppendEntriesRequest{
		RPCHeader:    raft.RPCHeader{ID: []byte("m1"), Addr: []byte(t1.LocalAddr())},
		Term:         7,
		PrevLogEntry: 10,
		Entries:      []*raft.Log{{Index: 11, Term: 7, Type: raft.LogCommand, Data: []byte("put k v")}},
	}, &app)
	if err != nil {
		t.Fatal(err)
	}
	if !app.Success || app.LastLog != 11 {
		t.Fatalf("append = %+v", app)
	}
}

func TestRaftLayer_AddrAndDial(t *testing.T) {
	m := startMux(t, nil, nil)
	l := NewRaftLayer(m.Listen(ProtoRaft), nil, nil, nil, nil)
	if l.Addr().String() != m.Addr().String() {
		t.Fatalf("Addr = %v, want %v", l.Addr(), m.Addr())
	}
	adv := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 7000}
	if got := NewRaftLayer(l.ln, adv, nil, nil, nil).Addr(); got != adv {
		t.Fatalf("Addr with advertise = %v", got)
	}

	ch := acceptOne(l)
	c, err := l.Dial(raft.ServerAddress(m.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange(t, c, recvConn(t, ch), "raft bytes")

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Accept(); err == nil {
		t.Fatal("Accept after Close succeeded")
	}
}

// Close ends the connections raft's transport would otherwise leave open.
func TestRaftLayer_CloseClosesConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMux(ln, nil, nil, nil)
	layer := NewRaftLayer(m.Listen(ProtoRaft), nil, nil, nil, nil)
	go m.Serve()
	defer m.Close()

	out, err := layer.Dial(raft.ServerAddress(ln.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	in, err := layer.Accept()
	if err != nil {
		t.Fatal(err)
	}
	layer.Close()
	for _, c := range []net.Conn{out, in} {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("connection still open after Close: %v", err)
		}
	}
	if _, err := layer.Dial(raft.ServerAddress(ln.Addr().String()), time.Second); err == nil {
		t.Fatal("Dial after Close succeeded")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
