package etcdapi

import (
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ember-kv/ember/embertest"
)

// clusterClients starts a 3-member cluster and returns an in-process client per member, by ID.
func clusterClients(t testing.TB) (*embertest.Cluster, map[string]*clientv3.Client) {
	t.Helper()
	c := embertest.NewCluster(t, 3)
	clis := map[string]*clientv3.Client{}
	for _, m := range c.Members() {
		clis[m.ID] = inProcClient(t, m.Store())
	}
	return c, clis
}

func TestCluster_Members(t *testing.T) {
	c, clis := clusterClients(t)
	ctx := testCtx(t)
	var clusterID uint64
	for id, cli := range clis {
		r, err := cli.MemberList(ctx)
		if err != nil {
			t.Fatalf("%s: MemberList: %v", id, err)
		}
		if r.Header.MemberId != memberID(id) {
			t.Errorf("%s answered with member ID %x, want %x", id, r.Header.MemberId, memberID(id))
		}
		if clusterID == 0 {
			clusterID = r.Header.ClusterId
		}
		if r.Header.ClusterId != clusterID || clusterID == 0 {
			t.Errorf("%s: cluster ID %x, want %x on every member", id, r.Header.ClusterId, clusterID)
		}
		if len(r.Members) != 3 {
			t.Fatalf("%s: %d members, want 3", id, len(r.Members))
		}
		for _, m := range r.Members {
			em := c.Member(m.Name)
			if m.ID != memberID(em.ID) || len(m.PeerURLs) != 1 || m.PeerURLs[0] != "http://"+em.Addr || m.IsLearner {
				t.Errorf("%s: member %+v does not match %+v", id, m, em)
			}
		}
	}

	leader := clis[c.Leader().ID]
	peer := "http://127.0.0.1:1"
	added, err := leader.MemberAddAsLearner(ctx, []string{peer})
	if err != nil {
		t.Fatalf("MemberAddAsLearner: %v", err)
	}
	if len(added.Members) != 4 || !added.Member.IsLearner || added.Member.ID != memberID("127.0.0.1:1") {
		t.Errorf("added %+v, members %d; want a learner named after its address among 4", added.Member, len(added.Members))
	}
	if _, err := leader.MemberPromote(ctx, added.Member.ID); !errors.Is(err, rpctypes.ErrMemberLearnerNotReady) {
		t.Errorf("promote of an unreachable learner: %v, want %v", err, rpctypes.ErrMemberLearnerNotReady)
	}
	if _, err := leader.MemberPromote(ctx, memberID(c.Leader().ID)); !errors.Is(err, rpctypes.ErrMemberNotLearner) {
		t.Errorf("promote of a voter: %v, want %v", err, rpctypes.ErrMemberNotLearner)
	}
	removed, err := leader.MemberRemove(ctx, added.Member.ID)
	if err != nil || len(removed.Members) != 3 {
		t.Fatalf("MemberRemove = %v, %v; want 3 members left", removed, err)
	}
	if _, err := leader.MemberRemove(ctx, added.Member.ID); !errors.Is(err, rpctypes.ErrMemberNotFound) {
		t.Errorf("second remove: %v, want %v", err, rpctypes.ErrMemberNotFound)
	}
}

func TestMaintenance_Status(t *testing.T) {
	c, clis := clusterClients(t)
	ctx := testCtx(t)
	leaderID := c.Leader().ID
	for id, cli := range clis {
		s, err := cli.Status(ctx, "ember")
		if err != nil {
			t.Fatalf("%s: Status: %v", id, err)
		}
		if s.Leader != memberID(leaderID) || s.Version != version.Version || s.IsLearner {
			t.Errorf("%s: leader %x version %q learner %v; want %x %q false", id, s.Leader, s.Version, s.IsLearner, memberID(leaderID), version.Version)
		}
		if s.RaftTerm == 0 || s.RaftAppliedIndex == 0 || s.RaftIndex < s.RaftAppliedIndex || s.DbSize == 0 {
			t.Errorf("%s: term %d index %d applied %d db %d", id, s.RaftTerm, s.RaftIndex, s.RaftAppliedIndex, s.DbSize)
		}
		if s.Header.MemberId != memberID(id) || s.Header.RaftTerm != s.RaftTerm {
			t.Errorf("%s: header %+v", id, s.Header)
		}
	}
	cli := clis[leaderID]
	alarms, err := cli.AlarmList(ctx)
	if err != nil || len(alarms.Alarms) != 0 {
		t.Errorf("AlarmList = %v, %v; want no alarms", alarms, err)
	}
	if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{}); err != nil {
		t.Errorf("AlarmDisarm: %v", err)
	}
	if _, err := cli.Defragment(ctx, "ember"); err != nil {
		t.Errorf("Defragment: %v", err)
	}
}

func TestMaintenance_HashKV(t *testing.T) {
	_, clis := clusterClients(t)
	ctx := testCtx(t)
	var any *clientv3.Client
	for _, cli := range clis {
		any = cli
	}
	rev := mustPut(t, any, "h", "v").Header.Revision
	hashes := map[uint32]bool{}
	for id, cli := range clis {
		if _, err := cli.Get(ctx, "h"); err != nil { // linearizable: the member has applied rev
			t.Fatalf("%s: Get: %v", id, err)
		}
		r, err := cli.HashKV(ctx, "ember", rev)
		if err != nil {
			t.Fatalf("%s: HashKV: %v", id, err)
		}
		if r.HashRevision != rev {
			t.Errorf("%s: hash revision %d, want %d", id, r.HashRevision, rev)
		}
		hashes[r.Hash] = true
	}
	if len(hashes) != 1 {
		t.Errorf("members disagree: hashes %v", hashes)
	}
}

func TestMaintenance_MoveLeader(t *testing.T) {
	c, clis := clusterClients(t)
	ctx := testCtx(t)
	target := c.Followers()[0].ID
	// Any member accepts the request; send it through another follower.
	var via *clientv3.Client
	for id, cli := range clis {
		if id != target && id != c.Leader().ID {
			via = cli
		}
	}
	if _, err := via.MoveLeader(ctx, memberID(target)); err != nil {
		t.Fatalf("MoveLeader: %v", err)
	}
	deadline := time.Now().Add(testTimeout)
	for {
		s, err := clis[target].Status(ctx, "ember")
		if err == nil && s.Leader == memberID(target) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not become leader: %v, %v", target, s, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := via.MoveLeader(ctx, 12345); !errors.Is(err, rpctypes.ErrBadLeaderTransferee) {
		t.Errorf("unknown transferee: %v, want %v", err, rpctypes.ErrBadLeaderTransferee)
	}
}
