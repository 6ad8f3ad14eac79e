package etcdapi

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/internal/authctx"
)

// grpcErrors maps ember's sentinels to the status errors etcd sends, so that clientv3 turns them
// into the same rpctypes errors it returns for etcd. toGRPC takes the first match. ErrTimeout
// comes first: it marks a write whose outcome is unknown, and an error that also wraps a
// definite sentinel (ErrNoLeader, ErrStopped) must still reach the client as a timeout, which
// promises nothing, never as "no leader", which promises no effect. etcd answers its own
// ErrTimeout, and the unknown outcomes it names more precisely (ErrTimeoutDueToLeaderFail,
// ErrTimeoutDueToConnectionLost), with codes.Unavailable and "etcdserver: request timed out…"
// (server/etcdserver/api/v3rpc/util.go); ember reports them all as the plain ErrGRPCTimeout,
// which clientv3 returns as rpctypes.ErrTimeout.
var grpcErrors = []struct {
	ember error
	grpc  error
}{
	{ember.ErrTimeout, rpctypes.ErrGRPCTimeout},
	{ember.ErrCompacted, rpctypes.ErrGRPCCompacted},
	{ember.ErrFutureRev, rpctypes.ErrGRPCFutureRev},
	{ember.ErrKeyNotFound, rpctypes.ErrGRPCKeyNotFound},
	{ember.ErrEmptyKey, rpctypes.ErrGRPCEmptyKey},
	{ember.ErrRequestTooLarge, rpctypes.ErrGRPCRequestTooLarge},
	{ember.ErrTooManyOps, rpctypes.ErrGRPCTooManyOps},
	{ember.ErrDuplicateKey, rpctypes.ErrGRPCDuplicateKey},
	{ember.ErrValueProvided, rpctypes.ErrGRPCValueProvided},
	{ember.ErrLeaseProvided, rpctypes.ErrGRPCLeaseProvided},
	{ember.ErrLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},
	{ember.ErrLeaseExists, rpctypes.ErrGRPCLeaseExist},
	{ember.ErrTTLTooLarge, rpctypes.ErrGRPCLeaseTTLTooLarge},
	{ember.ErrNoLeader, rpctypes.ErrGRPCNoLeader},
	{ember.ErrNoSpace, rpctypes.ErrGRPCNoSpace},
	{ember.ErrStopped, rpctypes.ErrGRPCStopped},
	{ember.ErrMemberNotFound, rpctypes.ErrGRPCMemberNotFound},
	{ember.ErrMemberExists, rpctypes.ErrGRPCMemberExist},
	{ember.ErrLearnerNotReady, rpctypes.ErrGRPCLearnerNotReady},
	{ember.ErrUnhealthy, rpctypes.ErrGRPCUnhealthy},
	{ember.ErrCorrupt, rpctypes.ErrGRPCCorrupt},
	// A member the cluster no longer lists (removed, say) answers as etcd's removed member does
	// (membership.ErrIDRemoved).
	{ember.ErrNotMember, rpctypes.ErrGRPCMemberNotFound},
	// A write the gateway authorized, refused because the auth state changed before it applied.
	{authctx.ErrOldRevision, rpctypes.ErrGRPCAuthOldRevision},
	// Only Open returns it; listed so that every ember error has an answer.
	{ember.ErrInsecurePeers, errInsecurePeers},
}

// errInsecurePeers has no etcd counterpart: etcd serves peers without TLS wherever it listens.
var errInsecurePeers = status.Error(codes.FailedPrecondition, ember.ErrInsecurePeers.Error())

// toGRPC converts an error from the store into what etcd would answer.
func toGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, m := range grpcErrors {
		if errors.Is(err, m.ember) {
			return m.grpc
		}
	}
	// etcd lets gRPC turn the caller's cancellation into codes.Canceled / DeadlineExceeded.
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Unknown, err.Error())
}

// errUnknownAlarm answers a request to raise an alarm of a type etcd does not define.
var errUnknownAlarm = status.Error(codes.InvalidArgument, "etcdserver: unknown alarm type")

// errBadCompare answers a compare whose target or result etcd does not define.
var errBadCompare = status.Error(codes.InvalidArgument, "etcdserver: invalid compare target or result")
