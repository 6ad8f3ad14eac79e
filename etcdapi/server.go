package etcdapi

import (
	"context"
	"errors"
	"hash/fnv"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/ember-kv/ember"
)

// gracefulStopTimeout bounds how long Serve waits for open streams (watches, keepalives) after
// its context ends before closing them.
const gracefulStopTimeout = 5 * time.Second

// gateway implements etcd's v3 services on top of one Store. It is safe for concurrent use: it
// holds no per-request state, and streams keep theirs in their own values.
type gateway struct {
	pb.UnimplementedMaintenanceServer // Downgrade: ember has no versions to downgrade between

	st   *ember.Store
	cfg  *config
	self uint64 // this member's etcd ID

	clusterMu sync.Mutex    // serializes deriving clusterID
	clusterID atomic.Uint64 // 0 until derived (or set by WithClusterID)

	tokens  *tokens // the Auth service's tokens, checked by every service
	trusted bool    // serves the host itself (NewClient): no permission checks
}

func newGateway(st *ember.Store, cfg *config) *gateway {
	g := &gateway{st: st, cfg: cfg, self: memberID(st.ID()), tokens: &tokens{ttl: cfg.tokenTTL, m: map[string]*token{}}}
	g.clusterID.Store(cfg.clusterID)
	return g
}

// Register registers etcd's KV, Watch, Lease, Cluster, Maintenance and Auth services on s, served by
// st. Call it before s.Serve. Requests are served by st as ember serves its own API: writes on
// any member, linearizable reads unless serializable.
func Register(s *grpc.Server, st *ember.Store, opts ...Option) {
	register(s, newGateway(st, newConfig(opts)))
}

func register(s *grpc.Server, g *gateway) {
	pb.RegisterKVServer(s, leaderKV{g, g})
	pb.RegisterWatchServer(s, leaderWatch{g, g})
	pb.RegisterLeaseServer(s, leaderLease{g, g})
	pb.RegisterClusterServer(s, leaderCluster{g, g})
	pb.RegisterMaintenanceServer(s, leaderMaintenance{g, g})
	pb.RegisterAuthServer(s, leaderAuth{&authServer{g: g}, g})
	healthpb.RegisterHealthServer(s, health.NewServer()) // reports SERVING for every service
}

// Serve serves etcd's v3 API for st on l until ctx ends, then stops gracefully (closing streams
// that outlive gracefulStopTimeout) and returns nil. It returns the serve error if serving fails
// first. l is closed on return.
func Serve(ctx context.Context, st *ember.Store, l net.Listener, opts ...Option) error {
	cfg := newConfig(opts)
	if len(cfg.clientURLs) == 0 {
		scheme := "http://"
		if cfg.tls != nil {
			scheme = "https://"
		}
		cfg.clientURLs = []string{scheme + l.Addr().String()}
	}
	s := newServer(cfg)
	register(s, newGateway(st, cfg))

	errc := make(chan error, 1)
	go func() { errc <- s.Serve(l) }()
	select {
	case err := <-errc:
		s.Stop() // close the connections accepted before the listener failed
		return err
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(gracefulStopTimeout)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		s.Stop() // long-lived streams (watches) never end by themselves
		<-stopped
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// newServer builds a gRPC server with etcd's limits: messages up to the request limit plus
// overhead, unlimited streams, and etcd's keepalive policy.
func newServer(cfg *config) *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.maxRequestBytes + grpcOverheadBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Hour, Timeout: 20 * time.Second}),
	}
	if cfg.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.tls)))
	}
	return grpc.NewServer(append(opts, cfg.serverOpts...)...)
}

// memberID maps an ember member ID to etcd's numeric member ID: FNV-64a of the string, never 0
// (etcd reserves 0 for "none").
func memberID(id string) uint64 {
	if id == "" {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(id))
	if v := h.Sum64(); v != 0 {
		return v
	}
	return 1
}

// cluster returns the cluster ID, deriving it from the member list on first use. While the
// member list cannot be read (no leader) it returns 0 and tries again next time.
func (g *gateway) cluster(ctx context.Context) uint64 {
	if id := g.clusterID.Load(); id != 0 {
		return id
	}
	g.clusterMu.Lock()
	defer g.clusterMu.Unlock()
	if id := g.clusterID.Load(); id != 0 {
		return id
	}
	ms, err := g.st.Members(ctx)
	if err != nil {
		return 0
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	slices.Sort(ids)
	h := fnv.New64a()
	h.Write([]byte("ember-cluster"))
	for _, id := range ids {
		h.Write([]byte{0})
		h.Write([]byte(id))
	}
	id := max(h.Sum64(), 1)
	g.clusterID.Store(id)
	return id
}

// header converts an ember response header.
func (g *gateway) header(ctx context.Context, h ember.ResponseHeader) *pb.ResponseHeader {
	id := memberID(h.MemberID)
	if id == 0 {
		id = g.self
	}
	return &pb.ResponseHeader{ClusterId: g.cluster(ctx), MemberId: id, Revision: h.Revision, RaftTerm: h.RaftTerm}
}

// localHeader is the header of a response that carries no revision of its own: this member's
// current revision and term.
func (g *gateway) localHeader(ctx context.Context) (*pb.ResponseHeader, error) {
	h, err := g.localRev(ctx)
	if err != nil {
		return nil, err
	}
	return g.header(ctx, h), nil
}

// localRev reads this member's current revision without a round trip.
func (g *gateway) localRev(ctx context.Context) (ember.ResponseHeader, error) {
	r, err := g.st.Get(ctx, "\x00", ember.WithSerializable(), ember.WithCountOnly())
	if err != nil {
		return ember.ResponseHeader{}, toGRPC(err)
	}
	return r.Header, nil
}

// receive reads a stream's requests in a goroutine of its own and hands them over one at a time
// until recv fails (its error goes to the second channel) or ctx ends; the goroutine ends with
// the stream, whose Recv fails once the handler returns.
func receive[T any](ctx context.Context, recv func() (T, error)) (<-chan T, <-chan error) {
	reqs, failed := make(chan T), make(chan error, 1)
	go func() {
		for {
			req, err := recv()
			if err != nil {
				failed <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	return reqs, failed
}
