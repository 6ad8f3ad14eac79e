package etcdapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

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
