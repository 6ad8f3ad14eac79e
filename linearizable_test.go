package ember_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// stickyLeader gives member id the longest leader lease raft allows, d, with election timeouts
// as long: it starts no election itself, and once it leads and loses the voters it goes on
// believing it leads for about d, long after they elected another leader. Without it, raft's
// lease would step the old leader down at about the time the others elect a new one, and
// whether a stale read slips through would be a matter of timing.
func stickyLeader(id string, d time.Duration) ember.Option {
	return ember.WithRaftConfig(func(rc *raft.Config) {
		if rc.LocalID == raft.ServerID(id) {
			rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = d, d, d
		}
	})
}

// makeLeader hands leadership to member id and waits until it leads.
func makeLeader(t testing.TB, c *embertest.Cluster, id string) *embertest.Member {
	t.Helper()
	m := c.Member(id)
	waitFor(t, 30*time.Second, id+" leading", func() bool {
		if m.Store().IsLeader() {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Leader().Store().TransferLeadership(ctx, id)
		return m.Store().IsLeader()
	})
	return m
}

// split applies f to every direction between a member of side a and one of side b.
func split(c *embertest.Cluster, a, b []string, f embertest.Fault) {
	for _, x := range a {
		for _, y := range b {
			c.Network().SetFault(x, y, f)
			c.Network().SetFault(y, x, f)
		}
	}
}

// A leader cut off from every other voter, but still connected to a learner, must not serve a
// linearizable read once the voters have moved on, and neither must the learner, which asks it
// for the read index. hashicorp/raft's VerifyLeader counted the learner's heartbeat ack toward
// a voter quorum, so both served the old value while the new leader had acknowledged a newer
// one.
func TestCluster_LinearizableRead_LeaderIsolatedWithLearner(t *testing.T) {
	c := embertest.NewCluster(t, 3, stickyLeader("m1", 20*time.Second))
	ctx := ctxFor(t, 2*time.Minute)
	learner := c.Join("l1", ember.WithLearner())
	old := makeLeader(t, c, "m1")
	if _, err := old.Store().Put(ctx, "k", "before"); err != nil {
		t.Fatal(err)
	}
	if g, err := learner.Store().Get(ctx, "k"); err != nil || len(g.Kvs) != 1 {
		t.Fatalf("learner read before the partition: %v %+v", err, g)
	}

	split(c, []string{"m1", "l1"}, []string{"m2", "m3"}, embertest.Fault{Cut: true})
	nl := leaderAmong(t, c, "m2", "m3")
	if _, err := nl.Store().Put(ctx, "k", "after"); err != nil {
		t.Fatal(err)
	}
	if !old.Store().IsLeader() {
		t.Fatal("the old leader stepped down already: the test would prove nothing")
	}

	var wg sync.WaitGroup
	for _, m := range []*embertest.Member{old, learner} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
			defer cancel()
			g, err := m.Store().Get(rctx, "k")
			switch {
			case err == nil:
				t.Errorf("%s served a linearizable read after %s acknowledged a write: %s", m.ID, nl.ID, kvString(g.Kvs))
			case !errors.Is(err, ember.ErrTimeout) && !errors.Is(err, ember.ErrNoLeader):
				t.Errorf("%s: read failed with %v, want ErrTimeout or ErrNoLeader", m.ID, err)
			}
		}()
	}
	wg.Wait()

	c.Heal()
	healed(t, c, "after")
}

// leaderAmong waits until one of the members ids leads, and returns it.
func leaderAmong(t testing.TB, c *embertest.Cluster, ids ...string) *embertest.Member {
	t.Helper()
	var nl *embertest.Member
	waitFor(t, 20*time.Second, fmt.Sprintf("a leader among %v", ids), func() bool {
		for _, id := range ids {
			if m := c.Member(id); m.Store().IsLeader() {
				nl = m
				return true
			}
		}
		return false
	})
	return nl
}

// healed waits until every member reads want again, so that the cluster is whole when it is
// closed (a sticky leader closed while cut off would try to hand off leadership for a long time).
func healed(t testing.TB, c *embertest.Cluster, want string) {
	t.Helper()
	for _, m := range c.Running() {
		waitFor(t, 30*time.Second, m.ID+" reading "+want, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			g, err := m.Store().Get(ctx, "k")
			return err == nil && len(g.Kvs) == 1 && string(g.Kvs[0].Value) == want
		})
	}
}

// When the leader's read index round runs out of time (the leader cannot hear a majority of
// voters, yet still believes it leads), the follower that asked must learn it as a
// not-leader answer and retry until its own deadline, failing with ErrTimeout or ErrNoLeader,
// never with an opaque error string. m4 waits longer for read indexes than m1 (a larger
// election timeout), so m1's deadline comes first.
func TestCluster_ReadIndexDeadlineOnLeaderIsRetriedByFollower(t *testing.T) {
	c := embertest.NewCluster(t, 3, stickyLeader("m1", 20*time.Second))
	ctx := ctxFor(t, 2*time.Minute)
	f := c.Join("m4", ember.WithElectionTimeout(3*time.Second))
	waitFor(t, 30*time.Second, "m4 promoted to voter", func() bool { return !isLearner(t, c.Leader().Store(), "m4") })
	old := makeLeader(t, c, "m1")
	if _, err := old.Store().Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Store().Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}

	// Two voters of four on each side: nobody can be elected, m1 keeps leading on its lease,
	// and its requests to m2 and m3 go unanswered rather than fail.
	split(c, []string{"m1", "m4"}, []string{"m2", "m3"}, embertest.Fault{Blackhole: true})
	rctx, cancel := context.WithTimeout(ctx, 6*time.Second)
	g, err := f.Store().Get(rctx, "k")
	cancel()
	switch {
	case err == nil:
		t.Errorf("m4 served a linearizable read while m1 had no quorum: %s", kvString(g.Kvs))
	case !errors.Is(err, ember.ErrTimeout) && !errors.Is(err, ember.ErrNoLeader):
		t.Errorf("read on m4 failed with %v, want ErrTimeout or ErrNoLeader after retrying", err)
	}
	if !old.Store().IsLeader() {
		t.Error("m1 stepped down during the read: its read index deadline was not what ended it")
	}

	c.Heal()
	healed(t, c, "v")
}
