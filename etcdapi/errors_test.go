package etcdapi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/internal/writecheck"
)

// TestToGRPC_EveryEmberError maps every exported ember error, alone and wrapped, to the status
// etcd sends for it, and checks what clientv3 makes of it.
func TestToGRPC_EveryEmberError(t *testing.T) {
	every := map[string]struct{ ember, grpc error }{
		"ErrCompacted":       {ember.ErrCompacted, rpctypes.ErrGRPCCompacted},
		"ErrFutureRev":       {ember.ErrFutureRev, rpctypes.ErrGRPCFutureRev},
		"ErrKeyNotFound":     {ember.ErrKeyNotFound, rpctypes.ErrGRPCKeyNotFound},
		"ErrEmptyKey":        {ember.ErrEmptyKey, rpctypes.ErrGRPCEmptyKey},
		"ErrRequestTooLarge": {ember.ErrRequestTooLarge, rpctypes.ErrGRPCRequestTooLarge},
		"ErrTooManyOps":      {ember.ErrTooManyOps, rpctypes.ErrGRPCTooManyOps},
		"ErrDuplicateKey":    {ember.ErrDuplicateKey, rpctypes.ErrGRPCDuplicateKey},
		"ErrValueProvided":   {ember.ErrValueProvided, rpctypes.ErrGRPCValueProvided},
		"ErrLeaseProvided":   {ember.ErrLeaseProvided, rpctypes.ErrGRPCLeaseProvided},
		"ErrLeaseNotFound":   {ember.ErrLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},
		"ErrLeaseExists":     {ember.ErrLeaseExists, rpctypes.ErrGRPCLeaseExist},
		"ErrTTLTooLarge":     {ember.ErrTTLTooLarge, rpctypes.ErrGRPCLeaseTTLTooLarge},
		"ErrNoLeader":        {ember.ErrNoLeader, rpctypes.ErrGRPCNoLeader},
		"ErrTimeout":         {ember.ErrTimeout, rpctypes.ErrGRPCTimeout},
		"ErrNoSpace":         {ember.ErrNoSpace, rpctypes.ErrGRPCNoSpace},
		"ErrStopped":         {ember.ErrStopped, rpctypes.ErrGRPCStopped},
		"ErrMemberNotFound":  {ember.ErrMemberNotFound, rpctypes.ErrGRPCMemberNotFound},
		"ErrMemberExists":    {ember.ErrMemberExists, rpctypes.ErrGRPCMemberExist},
		"ErrLearnerNotReady": {ember.ErrLearnerNotReady, rpctypes.ErrGRPCLearnerNotReady},
		"ErrCorrupt":         {ember.ErrCorrupt, rpctypes.ErrGRPCCorrupt},
		"ErrUnhealthy":       {ember.ErrUnhealthy, rpctypes.ErrGRPCUnhealthy},
		"ErrNotMember":       {ember.ErrNotMember, rpctypes.ErrGRPCMemberNotFound},
		"ErrInsecurePeers":   {ember.ErrInsecurePeers, errInsecurePeers},
	}
	want, err := writecheck.ExportedErrorNames("../errors.go")
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(every)); !slices.Equal(got, want) {
		t.Fatalf("the table covers %v; ember exports %v", got, want)
	}
	type test struct {
		name string
		err  error
		want error
	}
	var tests []test
	for name, e := range every {
		tests = append(tests,
			test{name, e.ember, e.grpc},
			test{name + " wrapped", fmt.Errorf("ember: context: %w", e.ember), e.grpc})
		if e.ember != ember.ErrTimeout {
			// An unknown outcome stays unknown whatever definite error it also wraps.
			tests = append(tests,
				test{"timeout wrapping " + name, fmt.Errorf("%w: outcome unknown: %w", ember.ErrTimeout, e.ember), rpctypes.ErrGRPCTimeout},
				test{name + " wrapping timeout", fmt.Errorf("%w: %w", e.ember, ember.ErrTimeout), rpctypes.ErrGRPCTimeout},
				test{name + " joined with timeout", errors.Join(e.ember, ember.ErrTimeout), rpctypes.ErrGRPCTimeout})
		}
	}
	tests = append(tests,
		test{"timeout wrapping a deadline", fmt.Errorf("%w: %w", ember.ErrTimeout, context.DeadlineExceeded), rpctypes.ErrGRPCTimeout},
		test{"no leader wrapping a deadline", fmt.Errorf("%w: %w", ember.ErrNoLeader, context.DeadlineExceeded), rpctypes.ErrGRPCNoLeader},
		test{"caller's deadline", context.DeadlineExceeded, status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())},
		test{"caller's cancel", context.Canceled, status.Error(codes.Canceled, context.Canceled.Error())},
		test{"a status passes through", rpctypes.ErrGRPCNoSpace, rpctypes.ErrGRPCNoSpace},
		test{"anything else", errors.New("boom"), status.Error(codes.Unknown, "boom")},
		test{"nil", nil, nil})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 50 { // no answer may depend on iteration order
				got := toGRPC(tc.err)
				if status.Code(got) != status.Code(tc.want) || status.Convert(got).Message() != status.Convert(tc.want).Message() {
					t.Fatalf("toGRPC(%v) = %v, want %v", tc.err, got, tc.want)
				}
			}
			// clientv3 turns the status into an rpctypes error; an unknown outcome must reach
			// its caller as etcd's timeout and as nothing that promises no effect.
			cli := rpctypes.Error(toGRPC(tc.err))
			if errors.Is(tc.err, ember.ErrTimeout) {
				if !errors.Is(cli, rpctypes.ErrTimeout) || errors.Is(cli, rpctypes.ErrNoLeader) || errors.Is(cli, rpctypes.ErrStopped) {
					t.Fatalf("clientv3 sees %v for an unknown outcome, want rpctypes.ErrTimeout", cli)
				}
			}
		})
	}
}
