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
	if err := checkPeerSecurity(&s.cfg, ln.Addr()); err != nil {
		ln.Close()
		return nil, err
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
	serverTLS, clientTLS := s.cfg.serverTLS, s.cfg.clientTLS
	if s.cfg.admission != nil && serverTLS == nil {
		if serverTLS, clientTLS, err = peer.EphemeralTLS(); err != nil {
			ln.Close()
			return nil, err
		}
	}
	adm := s.cfg.admission
	log := s.log.Named("peer")
	n := &network{ln: ln, mux: peer.NewMux(ln, serverTLS, adm, log)}
	layer := peer.NewRaftLayer(n.mux.Listen(peer.ProtoRaft), adv, s.cfg.dial, clientTLS, adm)
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
	// LocalID: every RPC connection states this member's ID, which members check before
	// serving anything but a join or a read-only probe (checkPeerMember).
	n.client = peer.NewClient(peer.ClientConfig{Dial: s.cfg.dial, TLS: clientTLS, Admission: adm, LocalID: s.id, Logger: log})
	return n, nil
}

// checkPeerSecurity refuses a listener that other hosts can reach with nothing to keep strangers
// out (ErrInsecurePeers), unless the host said WithInsecurePeers. The address checked is the one
// bound, so a host name or a wildcard is judged by what it resolved to.
func checkPeerSecurity(cfg *config, bound net.Addr) error {
	if cfg.serverTLS != nil || cfg.admission != nil || cfg.insecurePeers {
		return nil
	}
	if a, ok := bound.(*net.TCPAddr); ok && a.IP.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %s; use WithClusterToken or WithTLS, or WithInsecurePeers on a network where every host is trusted", ErrInsecurePeers, bound)
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
