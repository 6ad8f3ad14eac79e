package etcdapi_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ember-kv/ember"
)

// The NOSPACE alarm through ember's gateway and through etcd, both with a small quota: the same
// answers, step by step (no alarm, the quota refusing a put, the alarm listed for the member,
// puts refused and deletes allowed under it, disarming it, no alarm left).
func TestAlarm_NoSpace_AsEtcd(t *testing.T) {
	const quota = 256 << 10
	ember := startEmber(t, ember.WithQuotaBackendBytes(quota))
	etcd := startEtcd(t, func(cfg *embed.Config) { cfg.QuotaBackendBytes = quota })
	type target struct {
		cli  *clientv3.Client
		self uint64
	}
	// describe shows alarms with the member ID as "self" when it is the answering member's.
	describe := func(tg *target, alarms []*pb.AlarmMember) string {
		var out []string
		for _, a := range alarms {
			who := fmt.Sprint(a.MemberID)
			if a.MemberID == tg.self {
				who = "self"
			}
			out = append(out, who+":"+a.Alarm.String())
		}
		return fmt.Sprintf("%d alarms %v", len(alarms), out)
	}
	list := func(ctx context.Context, tg *target) string {
		r, err := tg.cli.AlarmList(ctx)
		if err != nil {
			return err.Error()
		}
		tg.self = r.Header.MemberId
		return describe(tg, r.Alarms)
	}
	value := strings.Repeat("v", 8<<10)
	steps := []asEtcdStep[*target]{
		{"list before", list},
		{"fill to the quota", func(ctx context.Context, tg *target) string {
			for i := 0; i < 1000; i++ {
				if _, err := tg.cli.Put(ctx, fmt.Sprintf("fill/%04d", i), value); err != nil {
					return err.Error()
				}
			}
			return "never full"
		}},
		{"list after the refusal", func(ctx context.Context, tg *target) string {
			// Raised through the log after the refusal, on both.
			deadline := time.Now().Add(10 * time.Second)
			for {
				got := list(ctx, tg)
				if !strings.HasPrefix(got, "0 alarms") || time.Now().After(deadline) {
					return got
				}
				time.Sleep(20 * time.Millisecond)
			}
		}},
		{"status errors", func(ctx context.Context, tg *target) string {
			s, err := tg.cli.Status(ctx, tg.cli.Endpoints()[0])
			if err != nil {
				return err.Error()
			}
			return strings.ReplaceAll(fmt.Sprint(s.Errors), fmt.Sprint(tg.self), "self")
		}},
		{"put under the alarm", func(ctx context.Context, tg *target) string {
			_, err := tg.cli.Put(ctx, "small", "v")
			return fmt.Sprint(err)
		}},
		{"lease grant under the alarm", func(ctx context.Context, tg *target) string {
			_, err := tg.cli.Grant(ctx, 60)
			return fmt.Sprint(err)
		}},
		{"delete under the alarm", func(ctx context.Context, tg *target) string {
			r, err := tg.cli.Delete(ctx, "fill/", clientv3.WithPrefix())
			if err != nil {
				return err.Error()
			}
			return fmt.Sprint(r.Deleted > 0)
		}},
		{"disarm another member's", func(ctx context.Context, tg *target) string {
			r, err := tg.cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: 12345, Alarm: pb.AlarmType_NOSPACE})
			if err != nil {
				return err.Error()
			}
			return describe(tg, r.Alarms)
		}},
		{"disarm", func(ctx context.Context, tg *target) string {
			r, err := tg.cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: tg.self, Alarm: pb.AlarmType_NOSPACE})
			if err != nil {
				return err.Error()
			}
			return describe(tg, r.Alarms)
		}},
		{"list after disarming", list},
	}
	sameAsEtcd(t, map[string]*target{"ember": {cli: newClient(t, ember)}, "etcd": {cli: newClient(t, etcd)}}, steps)
}

// Alarms raised by a client (AlarmRequest ACTIVATE, which clientv3 sends through the raw
// Maintenance client) through ember's gateway and through etcd: the same answers, step by step.
// A raised CORRUPT refuses writes ("corrupt cluster") and serves reads; with NOSPACE raised too,
// disarming CORRUPT leaves NOSPACE's refusals; disarming both lets writes through.
func TestAlarm_Activate_AsEtcd(t *testing.T) {
	type target struct {
		cli  *clientv3.Client
		self uint64
	}
	// describe shows alarms sorted (etcd lists them in map order), with the answering member's
	// ID as "self".
	describe := func(tg *target, alarms []*pb.AlarmMember) string {
		var out []string
		for _, a := range alarms {
			who := fmt.Sprint(a.MemberID)
			if a.MemberID == tg.self {
				who = "self"
			}
			out = append(out, who+":"+a.Alarm.String())
		}
		slices.Sort(out)
		return fmt.Sprintf("%d alarms %v", len(alarms), out)
	}
	alarm := func(action pb.AlarmRequest_AlarmAction, typ pb.AlarmType, member func(*target) uint64) func(context.Context, *target) string {
		return func(ctx context.Context, tg *target) string {
			r, err := pb.NewMaintenanceClient(tg.cli.ActiveConnection()).Alarm(ctx,
				&pb.AlarmRequest{Action: action, Alarm: typ, MemberID: member(tg)})
			if err != nil {
				return err.Error()
			}
			if r.Header == nil || r.Header.MemberId != tg.self || r.Header.Revision == 0 {
				return fmt.Sprintf("bad header %v", r.Header)
			}
			return describe(tg, r.Alarms)
		}
	}
	self := func(tg *target) uint64 { return tg.self }
	list := alarm(pb.AlarmRequest_GET, pb.AlarmType_NONE, self)
	put := func(ctx context.Context, tg *target) string {
		_, err := tg.cli.Put(ctx, "k", "v")
		return fmt.Sprint(err)
	}
	steps := []asEtcdStep[*target]{
		{"find self", func(ctx context.Context, tg *target) string {
			r, err := tg.cli.Get(ctx, "k")
			if err != nil {
				return err.Error()
			}
			tg.self = r.Header.MemberId
			return "ok"
		}},
		{"put before", put},
		{"activate NONE", alarm(pb.AlarmRequest_ACTIVATE, pb.AlarmType_NONE, self)},
		{"activate CORRUPT", alarm(pb.AlarmRequest_ACTIVATE, pb.AlarmType_CORRUPT, self)},
		{"activate CORRUPT again", alarm(pb.AlarmRequest_ACTIVATE, pb.AlarmType_CORRUPT, self)},
		{"list under CORRUPT", list},
		{"put under CORRUPT", put},
		{"delete under CORRUPT", func(ctx context.Context, tg *target) string {
			_, err := tg.cli.Delete(ctx, "k")
			return fmt.Sprint(err)
		}},
		{"txn that writes under CORRUPT", func(ctx context.Context, tg *target) string {
			_, err := tg.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version("k"), ">", 0)).Else(clientv3.OpDelete("k")).Commit()
			return fmt.Sprint(err)
		}},
		{"compact under CORRUPT", func(ctx context.Context, tg *target) string {
			_, err := tg.cli.Compact(ctx, 1)
			return fmt.Sprint(err)
		}},
		{"grant under CORRUPT", func(ctx context.Context, tg *target) string {
			_, err := tg.cli.Grant(ctx, 60)
			return fmt.Sprint(err)
		}},
		{"get under CORRUPT", func(ctx context.Context, tg *target) string {
			r, err := tg.cli.Get(ctx, "k")
			if err != nil {
				return err.Error()
			}
			return fmt.Sprintf("%d keys", len(r.Kvs))
		}},
		{"read-only txn under CORRUPT", func(ctx context.Context, tg *target) string {
			r, err := tg.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version("k"), ">", 0)).Then(clientv3.OpGet("k")).Commit()
			if err != nil {
				return err.Error()
			}
			return fmt.Sprint(r.Succeeded)
		}},
		{"activate NOSPACE", alarm(pb.AlarmRequest_ACTIVATE, pb.AlarmType_NOSPACE, self)},
		{"list both", list},
		{"disarm CORRUPT", alarm(pb.AlarmRequest_DEACTIVATE, pb.AlarmType_CORRUPT, self)},
		{"put under NOSPACE", put},
		{"disarm NOSPACE", alarm(pb.AlarmRequest_DEACTIVATE, pb.AlarmType_NOSPACE, self)},
		{"put after disarming", put},
		{"list after disarming", list},
	}
	sameAsEtcd(t, map[string]*target{"ember": {cli: newClient(t, startEmber(t))}, "etcd": {cli: newClient(t, startEtcd(t))}}, steps)
}

// ember keeps alarms under its members' IDs: raising one for an ID that is no member's is
// refused as an unknown member (etcd keeps it), and one of a type etcd does not define as
// invalid; neither raises anything.
func TestAlarm_Activate_UnknownMemberOrType(t *testing.T) {
	cli := newClient(t, startEmber(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := cli.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	mc := pb.NewMaintenanceClient(cli.ActiveConnection())
	tests := []struct {
		name string
		req  *pb.AlarmRequest
		want error
	}{
		{"unknown member", &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, Alarm: pb.AlarmType_CORRUPT, MemberID: r.Header.MemberId + 1}, rpctypes.ErrGRPCMemberNotFound},
		{"unknown type", &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, Alarm: pb.AlarmType(7), MemberID: r.Header.MemberId}, status.Error(codes.InvalidArgument, "etcdserver: unknown alarm type")},
	}
	for _, tc := range tests {
		if _, err := mc.Alarm(ctx, tc.req); status.Code(err) != status.Code(tc.want) || status.Convert(err).Message() != status.Convert(tc.want).Message() {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if l, err := cli.AlarmList(ctx); err != nil || len(l.Alarms) != 0 {
		t.Fatalf("alarms after refused activations: %v, %v", l, err)
	}
}
