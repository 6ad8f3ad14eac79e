package ember_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// membersOf lists the members as s sees them, by ID, with "voter" or "learner".
func membersOf(t testing.TB, s *ember.Store) map[string]string {
	t.Helper()
	ms, err := s.Members(ctxFor(t, 20*time.Second))
	if err != nil {
		t.Fatalf("members: %v", err)
	}
	out := map[string]string{}
	for _, m := range ms {
		out[m.ID] = "voter"
		if m.IsLearner {
			out[m.ID] = "learner"
		}
	}
	return out
}

// A leader cut off from the voters, still believing it leads, must not answer a membership call
// from its own configuration: the voters have changed it since. G1's membership client saw a
// definite "member not found" for a learner the new leader had just added, from the deposed
// leader and from the learner that forwarded to it.
func TestCluster_RemoveMember_DeposedLeaderDoesNotAnswerFromItsConfiguration(t *testing.T) {
	c := embertest.NewCluster(t, 3, stickyLeader("m1", 20*time.Second))
	ctx := ctxFor(t, 2*time.Minute)
	learner := c.Join("l1", ember.WithLearner())
	old := makeLeader(t, c, "m1")
	split(c, []string{"m1", "l1"}, []string{"m2", "m3"}, embertest.Fault{Cut: true})
	nl := leaderAmong(t, c, "m2", "m3")
	if err := nl.Store().AddLearner(ctx, "g", "127.0.0.1:2"); err != nil {
		t.Fatal(err)
	}
	if !old.Store().IsLeader() {
		t.Fatal("the old leader stepped down already: the test would prove nothing")
	}
	for _, m := range []*embertest.Member{old, learner} {
		rctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		err := m.Store().RemoveMember(rctx, "g")
		cancel()
		if !errors.Is(err, ember.ErrNoLeader) && !errors.Is(err, ember.ErrTimeout) {
			t.Errorf("remove via %s: %v, want ErrNoLeader or ErrTimeout", m.ID, err)
		}
		rctx, cancel = context.WithTimeout(ctx, 1500*time.Millisecond)
		ms, err := m.Store().Members(rctx)
		cancel()
		if !errors.Is(err, ember.ErrNoLeader) && !errors.Is(err, ember.ErrTimeout) {
			t.Errorf("members via %s: %+v, %v; want ErrNoLeader or ErrTimeout", m.ID, ms, err)
		}
	}
	c.Heal()
	waitFor(t, 30*time.Second, "the learner listed by every member", func() bool {
		for _, m := range c.Running() {
			if membersOf(t, m.Store())["g"] != "learner" {
				return false
			}
		}
		return true
	})
}

// With one voter of three down, removing a voter that is up (a follower, or the leader itself)
// would leave one voter up of two: refused with ErrUnhealthy, as etcd's strict reconfiguration
// check, and nothing changes; adding a voter is refused too. The voter that is down can be
// removed, after which the leader can remove itself.
func TestCluster_RemoveMember_RefusedWithoutQuorumUp(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	l := c.Leader()
	fs := c.Followers()
	down, up := fs[0], fs[1]
	c.Stop(down.ID)
	for _, target := range []string{up.ID, l.ID} {
		for _, via := range []*embertest.Member{l, up} {
			if err := via.Store().RemoveMember(ctx, target); !errors.Is(err, ember.ErrUnhealthy) {
				t.Fatalf("remove %s via %s with %s down: %v, want ErrUnhealthy", target, via.ID, down.ID, err)
			}
		}
	}
	if err := up.Store().AddMember(ctx, "m4", "127.0.0.1:1"); !errors.Is(err, ember.ErrUnhealthy) {
		t.Fatalf("add a voter with %s down: %v, want ErrUnhealthy", down.ID, err)
	}
	want := map[string]string{"m1": "voter", "m2": "voter", "m3": "voter"}
	if got := membersOf(t, l.Store()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("members after refused changes: %v, want %v", got, want)
	}
	if err := up.Store().RemoveMember(ctx, down.ID); err != nil {
		t.Fatalf("remove the member that is down: %v", err)
	}
	if got := membersOf(t, up.Store()); len(got) != 2 || got[down.ID] != "" {
		t.Fatalf("members after removing %s: %v", down.ID, got)
	}
	// Two voters up: the leader may remove itself, leaving one voter of one.
	if err := l.Store().RemoveMember(ctx, l.ID); err != nil {
		t.Fatalf("the leader removes itself: %v", err)
	}
	waitFor(t, 20*time.Second, up.ID+" to lead alone", up.Store().IsLeader)
	if _, err := up.Store().Put(ctx, "after", "v"); err != nil {
		t.Fatalf("write after the removals: %v", err)
	}
}

// Adds of one ID (or one address) racing from every member: exactly one succeeds, the others
// fail with ErrMemberExists, and the cluster ends with one such member.
func TestCluster_AddMember_ConcurrentSameIDOrAddress(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	ms := c.Running()
	const racers = 6
	tests := []struct {
		name     string
		id, addr func(i int) string
	}{
		{"same ID", func(int) string { return "x" }, func(i int) string { return fmt.Sprintf("127.0.0.1:%d", i+1) }},
		{"same address", func(i int) string { return fmt.Sprintf("y%d", i) }, func(int) string { return "127.0.0.1:9" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := make([]error, racers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range racers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					errs[i] = ms[i%len(ms)].Store().AddMember(ctx, tt.id(i), tt.addr(i))
				}()
			}
			close(start)
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Errorf("adds %d (%s at %s) and %d (%s at %s) both succeeded", winner, tt.id(winner), tt.addr(winner), i, tt.id(i), tt.addr(i))
				case err == nil:
					winner = i
				case !errors.Is(err, ember.ErrMemberExists):
					t.Errorf("add %d: %v, want nil or ErrMemberExists", i, err)
				}
			}
			if winner < 0 {
				t.Fatalf("no add succeeded: %v", errs)
			}
			list, err := c.Leader().Store().Members(ctx)
			if err != nil {
				t.Fatal(err)
			}
			added := 0
			for _, m := range list {
				if m.ID == tt.id(0) || m.Addr == tt.addr(0) {
					added++
					if m.ID != tt.id(winner) || m.Addr != tt.addr(winner) {
						t.Errorf("member %s at %s; the add that succeeded was %s at %s", m.ID, m.Addr, tt.id(winner), tt.addr(winner))
					}
				}
			}
			if added != 1 {
				t.Fatalf("%d members added: %+v", added, list)
			}
			if err := ms[0].Store().RemoveMember(ctx, tt.id(winner)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Membership calls made while leadership moves back and forth (as Close moves it) retry like
// writes and succeed: none returns the raft error of a leader that is handing over.
func TestCluster_MembershipDuringLeadershipTransfer(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, 2*time.Minute)
	learner := c.Join("l1", ember.WithLearner())
	stop := make(chan struct{})
	var transfers atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
			}
			// The learner too: promoted halfway, it may lead, and then it must hand over
			// like the others (skipping it ended the transfers for good).
			for _, m := range c.Running() {
				if m.Store().IsLeader() {
					if m.Store().TransferLeadership(ctx, "") == nil {
						transfers.Add(1)
					}
					break
				}
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	ms := []*embertest.Member{c.Member("m1"), c.Member("m2"), c.Member("m3")}
	// At least 30 rounds, and more while fewer than 5 transfers overlapped them: without the
	// race detector the calls can outrun the transfers.
	for i := 0; i < 30 || transfers.Load() < 5 && i < 300; i++ {
		s := ms[i%len(ms)].Store()
		id, addr := fmt.Sprintf("t%d", i), fmt.Sprintf("127.0.0.1:%d", 100+i)
		if err := s.AddMember(ctx, id, addr); err != nil {
			t.Fatalf("round %d: AddMember via %s: %v", i, s.ID(), err)
		}
		if got := membersOf(t, s); got[id] != "learner" {
			t.Fatalf("round %d: Members via %s after adding %s: %v", i, s.ID(), id, got)
		}
		if err := s.RemoveMember(ctx, id); err != nil {
			t.Fatalf("round %d: RemoveMember via %s: %v", i, s.ID(), err)
		}
		if got := membersOf(t, s); got[id] != "" {
			t.Fatalf("round %d: Members via %s after removing %s: %v", i, s.ID(), id, got)
		}
		if i == 15 {
			if err := s.PromoteMember(ctx, learner.ID); err != nil {
				t.Fatalf("PromoteMember via %s: %v", s.ID(), err)
			}
		}
	}
	if got := membersOf(t, ms[0].Store()); got[learner.ID] != "voter" {
		t.Fatalf("members at the end: %v", got)
	}
	t.Logf("%d leadership transfers during the membership calls", transfers.Load())
	if transfers.Load() < 5 {
		t.Fatalf("only %d leadership transfers: the test proves little", transfers.Load())
	}
}

// A membership call on a member cut off from the leader ends, once ctx does, with ErrNoLeader:
// nothing reached a leader, so the failure is definite, not ErrTimeout.
func TestCluster_Membership_CutOffEndsWithNoLeader(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	f := c.Followers()[0]
	c.Partition(f.ID)
	calls := map[string]func(context.Context) error{
		"AddMember":     func(ctx context.Context) error { return f.Store().AddMember(ctx, "m4", "127.0.0.1:1") },
		"AddLearner":    func(ctx context.Context) error { return f.Store().AddLearner(ctx, "m4", "127.0.0.1:1") },
		"PromoteMember": func(ctx context.Context) error { return f.Store().PromoteMember(ctx, "m4") },
		"RemoveMember":  func(ctx context.Context) error { return f.Store().RemoveMember(ctx, "m1") },
		"Members":       func(ctx context.Context) error { _, err := f.Store().Members(ctx); return err },
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := call(ctx)
		cancel()
		if !errors.Is(err, ember.ErrNoLeader) || errors.Is(err, ember.ErrTimeout) {
			t.Errorf("%s on a member cut off: %v, want ErrNoLeader (and not ErrTimeout)", name, err)
		}
	}
}

// A member replaced under its old ID (removed, its dir emptied, started again with WithJoin)
// ends a voter even when its catch-up takes longer than its first wait for readiness (5 s):
// while it replays the log its own configuration is an old one that lists its ID as a voter,
// which must not make it stop asking the leader for promotion.
func TestCluster_RejoinUnderOldIDBecomesVoter(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, 2*time.Minute)
	l := c.Leader()
	victim := c.Followers()[0]
	// A log of ~1,200 entries: over a link that holds each write 1 s, copying it in batches of
	// 128 takes ~10 s.
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 75 {
				if _, err := l.Store().Put(ctx, fmt.Sprintf("fill/%02d/%03d", w, i), "v"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	stop := make(chan struct{})
	var writes atomic.Int64
	wg.Add(1)
	go func() { // writes continue through the replacement
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := l.Store().Put(wctx, fmt.Sprintf("during/%d", i%50), "v"); err == nil {
				writes.Add(1)
			}
			cancel()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if err := l.Store().RemoveMember(ctx, victim.ID); err != nil {
		t.Fatalf("remove %s: %v", victim.ID, err)
	}
	c.Network().SetFault(l.ID, victim.ID, embertest.Fault{Delay: time.Second})
	c.Rejoin(victim.ID)
	waitFor(t, 20*time.Second, victim.ID+" to be added back", func() bool { return membersOf(t, l.Store())[victim.ID] != "" })
	time.Sleep(7 * time.Second) // past the joiner's first 5 s wait, with the log still being copied
	close(stop)
	wg.Wait()
	c.Network().SetFault(l.ID, victim.ID, embertest.Fault{})
	t.Logf("%d writes during the replacement", writes.Load())
	waitFor(t, 30*time.Second, victim.ID+" to be a voter again", func() bool {
		return membersOf(t, l.Store())[victim.ID] == "voter"
	})
}

// BenchmarkCluster_AddRemoveMember measures a voter add (with its check of the voters that are
// up) and the removal of the learner it created, on 3 members, through a follower.
func BenchmarkCluster_AddRemoveMember(b *testing.B) {
	c := embertest.NewCluster(b, 3)
	ctx := ctxFor(b, 10*time.Minute)
	s := c.Followers()[0].Store()
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("b%d", i)
		if err := s.AddMember(ctx, id, "127.0.0.1:3"); err != nil {
			b.Fatal(err)
		}
		if err := s.RemoveMember(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}
