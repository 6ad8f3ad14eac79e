package etcdapi

import (
	"context"
	"errors"
	"io"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/ember-kv/ember"
)

// maxKeepAlivesInFlight bounds the renewals one keepalive stream has waiting on the leader:
// clientv3 multiplexes every lease of a client onto one stream, so serving them one by one
// would make each wait for all the others' commits.
const maxKeepAlivesInFlight = 16

// LeaseGrant serves etcd's LeaseGrant: a request with an ID gets that lease, or etcd's "lease
// already exists".
func (g *gateway) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if err := g.checkKnown(ctx); err != nil {
		return nil, err
	}
	res, err := g.st.GrantWithID(ctx, ember.LeaseID(r.ID), r.TTL)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.LeaseGrantResponse{Header: g.header(ctx, res.Header), ID: int64(res.ID), TTL: res.TTL}, nil
}

// LeaseRevoke serves etcd's LeaseRevoke.
func (g *gateway) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	c, err := g.checkLease(ctx, r.ID, true)
	if err != nil {
		return nil, err
	}
	res, err := g.st.Revoke(c.authorize(ctx), ember.LeaseID(r.ID))
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.LeaseRevokeResponse{Header: g.header(ctx, res.Header)}, nil
}

// LeaseTimeToLive serves etcd's LeaseTimeToLive; as etcd, an unknown lease has TTL -1.
func (g *gateway) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if _, err := g.checkLease(ctx, r.ID, false); err != nil {
		return nil, err
	}
	var opts []ember.LeaseOption
	if r.Keys {
		opts = append(opts, ember.WithAttachedKeys())
	}
	res, err := g.st.TimeToLive(ctx, ember.LeaseID(r.ID), opts...)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.LeaseTimeToLiveResponse{Header: g.header(ctx, res.Header), ID: int64(res.ID), TTL: res.TTL,
		GrantedTTL: res.GrantedTTL, Keys: res.Keys}, nil
}

// LeaseLeases serves etcd's LeaseLeases.
func (g *gateway) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	res, err := g.st.Leases(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	ids := make([]ember.LeaseID, len(res.Leases))
	for i, l := range res.Leases {
		ids[i] = l.ID
	}
	if err := g.checkLeaseLeases(ctx, ids); err != nil {
		return nil, err
	}
	resp := &pb.LeaseLeasesResponse{Header: g.header(ctx, res.Header), Leases: make([]*pb.LeaseStatus, len(res.Leases))}
	for i, l := range res.Leases {
		resp.Leases[i] = &pb.LeaseStatus{ID: int64(l.ID)}
	}
	return resp, nil
}

// LeaseKeepAlive serves etcd's keepalive stream: every request renews one lease once. As etcd,
// an unknown or expired lease is answered with TTL 0 rather than an error, which tells clientv3
// the lease is gone. The stream ends when the client closes its side.
func (g *gateway) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	var (
		wg     sync.WaitGroup
		sendMu sync.Mutex // gRPC streams allow one sender at a time
		sem    = make(chan struct{}, maxKeepAlivesInFlight)
		failed = make(chan error, 1)
	)
	defer wg.Wait()
	defer cancel()
	// Receiving in its own goroutine lets a failed renewal end the stream, as in etcd, even while
	// the client sends nothing.
	reqs, recvErr := receive(ctx, stream.Recv)
	for {
		var req *pb.LeaseKeepAliveRequest
		select {
		case req = <-reqs:
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				wg.Wait() // answer what was asked before the client closed its side
				return nil
			}
			return err
		case err := <-failed:
			return err
		case <-ctx.Done():
			return toGRPC(ctx.Err())
		}
		select {
		case sem <- struct{}{}:
		case err := <-failed:
			return err
		case <-ctx.Done():
			return toGRPC(ctx.Err())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := g.keepAliveOnce(ctx, req.ID)
			if err == nil {
				sendMu.Lock()
				err = stream.Send(resp)
				sendMu.Unlock()
			}
			if err != nil {
				select {
				case failed <- err:
				default:
				}
			}
		}()
	}
}

func (g *gateway) keepAliveOnce(ctx context.Context, id int64) (*pb.LeaseKeepAliveResponse, error) {
	if _, err := g.checkLease(ctx, id, true); err != nil {
		return nil, err // ends the stream, as etcd's
	}
	res, err := g.st.KeepAliveOnce(ctx, ember.LeaseID(id))
	if errors.Is(err, ember.ErrLeaseNotFound) {
		h, err := g.localHeader(ctx)
		if err != nil {
			return nil, err
		}
		return &pb.LeaseKeepAliveResponse{Header: h, ID: id}, nil
	}
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.LeaseKeepAliveResponse{Header: g.header(ctx, res.Header), ID: id, TTL: res.TTL}, nil
}
