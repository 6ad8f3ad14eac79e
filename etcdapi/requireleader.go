package etcdapi

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// As etcd's gRPC interceptors, every request whose metadata requires a leader
// (clientv3.WithRequireLeader; clientv3's lease keepalive stream always carries it) is refused
// with etcd's ErrGRPCNoLeader while this member knows no leader, before it is served. The check
// wraps each service's methods rather than being an interceptor, so that it also holds on a
// grpc.Server the caller built (Register). Watch goes further (its stream ends when the leader is
// lost, see Watch).

// checkLeader refuses a request that requires a leader while this member knows none.
func (g *gateway) checkLeader(ctx context.Context) error {
	if !requiresLeader(ctx) {
		return nil
	}
	if id, _ := g.st.Leader(); id == "" {
		return rpctypes.ErrGRPCNoLeader
	}
	return nil
}

// guard serves a unary request with f once checkLeader lets it through.
func guard[Req, Resp any](ctx context.Context, g *gateway, r Req, f func(context.Context, Req) (Resp, error)) (Resp, error) {
	if err := g.checkLeader(ctx); err != nil {
		var zero Resp
		return zero, err
	}
	return f(ctx, r)
}

// The services with the check in front of every method. Each type overrides every method of its
// service (TestRequireLeader_EveryMethod calls them all), so none reaches the embedded server
// unchecked.

type leaderKV struct {
	pb.KVServer
	g *gateway
}

func (s leaderKV) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return guard(ctx, s.g, r, s.KVServer.Range)
}

func (s leaderKV) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	return guard(ctx, s.g, r, s.KVServer.Put)
}

func (s leaderKV) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	return guard(ctx, s.g, r, s.KVServer.DeleteRange)
}

func (s leaderKV) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	return guard(ctx, s.g, r, s.KVServer.Txn)
}

func (s leaderKV) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	return guard(ctx, s.g, r, s.KVServer.Compact)
}

type leaderWatch struct {
	pb.WatchServer
	g *gateway
}

func (s leaderWatch) Watch(stream pb.Watch_WatchServer) error {
	if err := s.g.checkLeader(stream.Context()); err != nil {
		return err
	}
	return s.WatchServer.Watch(stream)
}

type leaderLease struct {
	pb.LeaseServer
	g *gateway
}

func (s leaderLease) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return guard(ctx, s.g, r, s.LeaseServer.LeaseGrant)
}

func (s leaderLease) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	return guard(ctx, s.g, r, s.LeaseServer.LeaseRevoke)
}

func (s leaderLease) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	if err := s.g.checkLeader(stream.Context()); err != nil {
		return err
	}
	return s.LeaseServer.LeaseKeepAlive(stream)
}

func (s leaderLease) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	return guard(ctx, s.g, r, s.LeaseServer.LeaseTimeToLive)
}

func (s leaderLease) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	return guard(ctx, s.g, r, s.LeaseServer.LeaseLeases)
}

type leaderCluster struct {
	pb.ClusterServer
	g *gateway
}

func (s leaderCluster) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	return guard(ctx, s.g, r, s.ClusterServer.MemberAdd)
}

func (s leaderCluster) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	return guard(ctx, s.g, r, s.ClusterServer.MemberRemove)
}

func (s leaderCluster) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	return guard(ctx, s.g, r, s.ClusterServer.MemberUpdate)
}

func (s leaderCluster) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	return guard(ctx, s.g, r, s.ClusterServer.MemberList)
}

func (s leaderCluster) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	return guard(ctx, s.g, r, s.ClusterServer.MemberPromote)
}

type leaderMaintenance struct {
	pb.MaintenanceServer
	g *gateway
}

func (s leaderMaintenance) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	return guard(ctx, s.g, r, s.MaintenanceServer.Alarm)
}

func (s leaderMaintenance) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	return guard(ctx, s.g, r, s.MaintenanceServer.Status)
}

func (s leaderMaintenance) Defragment(ctx context.Context, r *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	return guard(ctx, s.g, r, s.MaintenanceServer.Defragment)
}

func (s leaderMaintenance) Hash(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) {
	return guard(ctx, s.g, r, s.MaintenanceServer.Hash)
}

func (s leaderMaintenance) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	return guard(ctx, s.g, r, s.MaintenanceServer.HashKV)
}

func (s leaderMaintenance) Snapshot(r *pb.SnapshotRequest, stream pb.Maintenance_SnapshotServer) error {
	if err := s.g.checkLeader(stream.Context()); err != nil {
		return err
	}
	return s.MaintenanceServer.Snapshot(r, stream)
}

func (s leaderMaintenance) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	return guard(ctx, s.g, r, s.MaintenanceServer.MoveLeader)
}

func (s leaderMaintenance) Downgrade(ctx context.Context, r *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	return guard(ctx, s.g, r, s.MaintenanceServer.Downgrade)
}

type leaderAuth struct {
	pb.AuthServer
	g *gateway
}

func (s leaderAuth) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.AuthEnable)
}

func (s leaderAuth) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.AuthDisable)
}

func (s leaderAuth) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.AuthStatus)
}

func (s leaderAuth) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.Authenticate)
}

func (s leaderAuth) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.UserAdd)
}

func (s leaderAuth) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.UserGet)
}

func (s leaderAuth) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.UserList)
}

func (s leaderAuth) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.UserDelete)
}

func (s leaderAuth) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.UserChangePassword)
}

func (s leaderAuth) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.UserGrantRole)
}

func (s leaderAuth) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.UserRevokeRole)
}

func (s leaderAuth) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.RoleAdd)
}

func (s leaderAuth) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.RoleGet)
}

func (s leaderAuth) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.RoleList)
}

func (s leaderAuth) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.RoleDelete)
}

func (s leaderAuth) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.RoleGrantPermission)
}

func (s leaderAuth) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	return guard(ctx, s.g, r, s.AuthServer.RoleRevokePermission)
}
