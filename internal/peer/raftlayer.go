package peer

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// RaftLayer is a raft.StreamLayer over a Mux sub-listener: inbound raft connections come from
// the Mux, outbound ones are dialed with ProtoRaft. It holds no state of its own beyond its
// configuration, so all methods are safe for concurrent use.
type RaftLayer struct {
	ln        net.Listener
	advertise net.Addr
	dial      DialFunc
	tlsConf   *tls.Config
}

var _ raft.StreamLayer = (*RaftLayer)(nil)

// NewRaftLayer returns a RaftLayer accepting from ln (normally Mux.Listen(ProtoRaft)). If
// advertise is non-nil, Addr reports it instead of ln's address, for members that listen on a
// wildcard or NATed address. dial and tlsConf are passed to Dial for outbound connections.
func NewRaftLayer(ln net.Listener, advertise net.Addr, dial DialFunc, tlsConf *tls.Config) *RaftLayer {
	return &RaftLayer{ln: ln, advertise: advertise, dial: dial, tlsConf: tlsConf}
}

// Accept waits for the next inbound raft connection.
func (l *RaftLayer) Accept() (net.Conn, error) { return l.ln.Accept() }

// Close closes the sub-listener; the Mux and other protocols keep running.
func (l *RaftLayer) Close() error { return l.ln.Close() }

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
	return Dial(ctx, l.dial, string(address), ProtoRaft, l.tlsConf)
}
