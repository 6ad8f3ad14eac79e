package etcdapi_test

import (
	"context"
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/status"
)

// MemberUpdate through ember's gateway and through etcd: the same answers, step by step (an
// unknown ID, a URL another member has, a learner's URL changed while it stays a learner, a
// member given the URL it has).
func TestMemberUpdate_AsEtcd(t *testing.T) {
	ember, etcd := startEmber(t), startEtcd(t)
	errText := func(err error) string {
		s, _ := status.FromError(err)
		return fmt.Sprintf("error %v: %s", s.Code(), s.Message())
	}
	type target struct {
		cli           *clientv3.Client
		self, learner uint64
		selfURL       string
	}
	// describe shows the learner and this member as MemberList has them.
	describe := func(ctx context.Context, tg *target) string {
		r, err := tg.cli.MemberList(ctx)
		if err != nil {
			return errText(err)
		}
		var learner, self string
		for _, m := range r.Members {
			switch m.ID {
			case tg.learner:
				learner = fmt.Sprintf("learner %v %v", m.PeerURLs, m.IsLearner)
			case tg.self:
				self = fmt.Sprintf("self learner=%v", m.IsLearner)
			}
		}
		return fmt.Sprintf("%d members; %s; %s", len(r.Members), learner, self)
	}
	update := func(ctx context.Context, tg *target, id uint64, url string) string {
		if _, err := tg.cli.MemberUpdate(ctx, id, []string{url}); err != nil {
			return errText(err)
		}
		return "ok: " + describe(ctx, tg)
	}
	steps := []asEtcdStep[*target]{
		{"add a learner", func(ctx context.Context, tg *target) string {
			r, err := tg.cli.MemberAddAsLearner(ctx, []string{"http://127.0.0.1:1"})
			if err != nil {
				return errText(err)
			}
			tg.learner, tg.self = r.Member.ID, r.Header.MemberId
			for _, m := range r.Members {
				if m.ID == tg.self {
					tg.selfURL = m.PeerURLs[0]
				}
			}
			return describe(ctx, tg)
		}},
		{"unknown ID", func(ctx context.Context, tg *target) string { return update(ctx, tg, 12345, "http://127.0.0.1:3") }},
		{"self to the learner's URL", func(ctx context.Context, tg *target) string {
			return update(ctx, tg, tg.self, "http://127.0.0.1:1")
		}},
		{"learner to a new URL", func(ctx context.Context, tg *target) string {
			return update(ctx, tg, tg.learner, "http://127.0.0.1:2")
		}},
		{"self to its own URL", func(ctx context.Context, tg *target) string { return update(ctx, tg, tg.self, tg.selfURL) }},
	}
	sameAsEtcd(t, map[string]*target{"ember": {cli: newClient(t, ember)}, "etcd": {cli: newClient(t, etcd)}}, steps)
}
