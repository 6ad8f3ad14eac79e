package etcdapi

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// authServer is etcd's Auth service for a cluster whose authentication is disabled, which is
// every ember cluster until users, roles and permissions are served: Authenticate answers as
// etcd with auth disabled, so that a clientv3 configured with a user name and password (which
// authenticates when it connects) works, and AuthStatus reports auth disabled. Enabling is
// refused as etcd refuses it while no root user exists; the user and role calls are not served
// (Unimplemented).
type authServer struct {
	pb.UnimplementedAuthServer
	g *gateway
}

func (a *authServer) Authenticate(context.Context, *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	return nil, rpctypes.ErrGRPCAuthNotEnabled
}

func (a *authServer) AuthStatus(ctx context.Context, _ *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	h, err := a.g.localHeader(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.AuthStatusResponse{Header: h, Enabled: false, AuthRevision: authRevision}, nil
}

func (a *authServer) AuthEnable(context.Context, *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	return nil, rpctypes.ErrGRPCRootUserNotExist
}

func (a *authServer) AuthDisable(ctx context.Context, _ *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	h, err := a.g.localHeader(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.AuthDisableResponse{Header: h}, nil // already disabled: nothing to do, as etcd
}

// authRevision is the revision of the auth state: it never changes while there is none.
const authRevision = 1
