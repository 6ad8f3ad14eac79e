package etcdapi

import (
	"context"
	"errors"
	"net"
	"net/url"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/ember-kv/ember"
)

// clusterHeader is the header of the Cluster service's responses, which etcd sends without a
// revision.
func (g *gateway) clusterHeader(ctx context.Context) (*pb.ResponseHeader, error) {
	h, err := g.localHeader(ctx)
	if err != nil {
		return nil, err
	}
	h.Revision = 0
	return h, nil
}

// MemberList serves etcd's MemberList. A member's etcd ID is derived from its ember ID, which
// is reported as its name; its peer URL is its ember peer address as an http URL (none for a
// member without a listener).
func (g *gateway) MemberList(ctx context.Context, _ *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if err := g.checkKnown(ctx); err != nil {
		return nil, err
	}
	h, ms, err := g.memberList(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.MemberListResponse{Header: h, Members: ms}, nil
}

// MemberAdd serves etcd's MemberAdd. etcd's request carries no name, so the member is added
// under its peer address as ember ID: start it with ember.WithNodeID set to that address. (A
// member started with ember.WithJoin adds itself and needs no MemberAdd.)
func (g *gateway) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	if len(r.PeerURLs) == 0 {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	addr, ok := peerAddr(r.PeerURLs[0])
	if !ok {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	if err := g.checkAdmin(ctx); err != nil {
		return nil, err
	}
	var err error
	if r.IsLearner {
		err = g.st.AddLearner(ctx, addr, addr)
	} else {
		err = g.st.AddMember(ctx, addr, addr)
	}
	if err != nil {
		return nil, toGRPC(err)
	}
	h, ms, err := g.memberList(ctx)
	if err != nil {
		return nil, err
	}
	added := &pb.Member{ID: memberID(addr), PeerURLs: r.PeerURLs, IsLearner: r.IsLearner}
	return &pb.MemberAddResponse{Header: h, Member: added, Members: ms}, nil
}

// peerAddr turns an etcd peer URL (scheme://host:port) or a bare host:port into ember's peer
// address.
func peerAddr(s string) (string, bool) {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		return u.Host, true
	}
	return s, s != ""
}

// MemberRemove serves etcd's MemberRemove.
func (g *gateway) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	if err := g.checkAdmin(ctx); err != nil {
		return nil, err
	}
	m, err := g.member(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	if err := g.st.RemoveMember(ctx, m.ID); err != nil {
		return nil, toGRPC(err)
	}
	h, ms, err := g.memberList(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.MemberRemoveResponse{Header: h, Members: ms}, nil
}

// MemberPromote serves etcd's MemberPromote.
func (g *gateway) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	if err := g.checkAdmin(ctx); err != nil {
		return nil, err
	}
	m, err := g.member(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	if !m.IsLearner {
		return nil, rpctypes.ErrGRPCMemberNotLearner
	}
	if err := g.st.PromoteMember(ctx, m.ID); err != nil {
		return nil, toGRPC(err)
	}
	h, ms, err := g.memberList(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.MemberPromoteResponse{Header: h, Members: ms}, nil
}

// MemberUpdate serves etcd's MemberUpdate: the member's peer address becomes its first peer
// URL's host:port. As etcd, a URL another member has is refused with "Peer URLs already exists".
func (g *gateway) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if err := g.checkAdmin(ctx); err != nil {
		return nil, err
	}
	m, err := g.member(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	if len(r.PeerURLs) == 0 {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	addr, ok := peerAddr(r.PeerURLs[0])
	if !ok {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	if err := g.st.UpdateMember(ctx, m.ID, addr); err != nil {
		if errors.Is(err, ember.ErrMemberExists) {
			return nil, rpctypes.ErrGRPCPeerURLExist
		}
		return nil, toGRPC(err)
	}
	h, ms, err := g.memberList(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.MemberUpdateResponse{Header: h, Members: ms}, nil
}

// member finds the ember member with etcd ID id.
func (g *gateway) member(ctx context.Context, id uint64) (ember.Member, error) {
	ms, err := g.st.Members(ctx)
	if err != nil {
		return ember.Member{}, toGRPC(err)
	}
	for _, m := range ms {
		if memberID(m.ID) == id {
			return m, nil
		}
	}
	return ember.Member{}, rpctypes.ErrGRPCMemberNotFound
}

// memberList returns the header and the member list every Cluster response carries.
func (g *gateway) memberList(ctx context.Context) (*pb.ResponseHeader, []*pb.Member, error) {
	ms, err := g.members(ctx)
	if err != nil {
		return nil, nil, err
	}
	h, err := g.clusterHeader(ctx)
	if err != nil {
		return nil, nil, err
	}
	return h, ms, nil
}

func (g *gateway) members(ctx context.Context) ([]*pb.Member, error) {
	ms, err := g.st.Members(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	out := make([]*pb.Member, len(ms))
	for i, m := range ms {
		pm := &pb.Member{ID: memberID(m.ID), Name: m.ID, IsLearner: m.IsLearner}
		if _, _, err := net.SplitHostPort(m.Addr); err == nil {
			pm.PeerURLs = []string{"http://" + m.Addr}
		}
		if m.ID == g.st.ID() {
			pm.ClientURLs = g.cfg.clientURLs
		}
		out[i] = pm
	}
	return out, nil
}
