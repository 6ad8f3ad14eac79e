package ember

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/peer"
)

// network is a member's peer port: one listener carrying raft and ember's RPC (forwarded writes,
// read index, membership, lease keepalives), told apart by the first byte of each connection.
type network struct {
	ln        net.Listener
	mux       *peer.Mux
	transport *raft.NetworkTransport
	server    *peer.Server
	client    *peer.Client
	wg        sync.WaitGroup
}

func listen(s *Store) (*network, error) {
	ln, err := net.Listen("tcp", s.cfg.bindAddr)
	if err != nil {
		return nil, fmt.Errorf("ember: listen on %s: %w", s.cfg.bindAddr, err)
	}
	adv, err := net.ResolveTCPAddr("tcp", s.cfg.advertiseAddr)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("ember: advertise address %q: %w", s.cfg.advertiseAddr, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("ember: advertise address %q is not routable; set WithAdvertiseAddr", s.cfg.advertiseAddr)
	}
	log := s.log.Named("peer")
	n := &network{ln: ln, mux: peer.NewMux(ln, s.cfg.serverTLS, log)}
	layer := peer.NewRaftLayer(n.mux.Listen(peer.ProtoRaft), adv, s.cfg.dial, s.cfg.clientTLS)
	n.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  s.log.Named("raft-net"),
		// No append pipelining: raft v1.7.3's pipeline deadlocks when a follower refuses an
		// append (the leader's next send parks forever, and Shutdown waits on it), as seen
		// with a failing follower disk. Batching (MaxAppendEntries) keeps throughput.
		MaxRPCsInFlight: 1,
	})
	n.server = peer.NewServer(n.mux.Listen(peer.ProtoRPC), s.handleRPC, log)
	n.client = peer.NewClient(peer.ClientConfig{Dial: s.cfg.dial, TLS: s.cfg.clientTLS, Logger: log})
	return n, nil
}

// serve starts accepting connections; raft must exist by then, since RPCs reach it.
func (n *network) serve() {
	n.wg.Add(2)
	go func() { defer n.wg.Done(); n.mux.Serve() }()
	go func() { defer n.wg.Done(); n.server.Serve() }()
}

func (n *network) close() error {
	errs := []error{n.client.Close(), n.server.Close(), n.transport.Close(), n.mux.Close()}
	n.wg.Wait()
	return errors.Join(errs...)
}

// call sends one RPC to the member at addr.
func (s *Store) call(ctx context.Context, addr string, method uint8, req []byte) ([]byte, error) {
	if s.net == nil {
		return nil, ErrNoLeader // a node without a listener has no peers
	}
	resp, err := s.net.client.Call(ctx, addr, method, req)
	if err != nil {
		return nil, fromPeer(err)
	}
	return resp, nil
}
