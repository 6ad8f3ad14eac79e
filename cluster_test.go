package ember_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

func ctxFor(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestCluster_WritesOnFollowersReadsEverywhere(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	fs := c.Followers()
	for i, m := range c.Running() {
		p, err := m.Store().Put(ctx, fmt.Sprintf("k/%d", i), m.ID)
		if err != nil {
			t.Fatalf("put via %s: %v", m.ID, err)
		}
		// A linearizable read on any other member sees the write at once.
		for _, o := range c.Running() {
			g, err := o.Store().Get(ctx, fmt.Sprintf("k/%d", i))
			if err != nil {
				t.Fatalf("get via %s: %v", o.ID, err)
			}
			if len(g.Kvs) != 1 || string(g.Kvs[0].Value) != m.ID || g.Header.Revision < p.Header.Revision {
				t.Fatalf("read on %s after put via %s at rev %d: %+v (header rev %d)", o.ID, m.ID, p.Header.Revision, g.Kvs, g.Header.Revision)
			}
		}
	}
	// A transaction forwarded from a follower runs once, at one revision.
	r, err := fs[0].Store().Txn(ctx).If(ember.Compare(ember.Version("k/0"), "=", 1)).
		Then(ember.OpPut("t/a", "1"), ember.OpPut("t/b", "1")).Commit()
	if err != nil || !r.Succeeded {
		t.Fatalf("txn via follower: %v %+v", err, r)
	}
	g, err := fs[1].Store().Get(ctx, "t/", ember.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range g.Kvs {
		if kv.ModRevision != r.Header.Revision {
			t.Fatalf("txn key %s at rev %d, txn rev %d", kv.Key, kv.ModRevision, r.Header.Revision)
		}
	}
}

// Every read on follower B that starts after a write on follower A finished must see it.
func TestCluster_LinearizableReadsOnFollowers(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	fs := c.Followers()
	var lastAcked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p, err := fs[0].Store().Put(ctx, "ctr", fmt.Sprint(i))
			if err != nil {
				t.Error(err)
				return
			}
			lastAcked.Store(p.Header.Revision)
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	reads := 0
	for time.Now().Before(deadline) {
		floor := lastAcked.Load()
		g, err := fs[1].Store().Get(ctx, "ctr")
		if err != nil {
			t.Fatal(err)
		}
		if floor > 0 && (len(g.Kvs) == 0 || g.Kvs[0].ModRevision < floor) {
			t.Fatalf("stale read: saw %+v, a write at rev %d was acknowledged before the read began", g.Kvs, floor)
		}
		reads++
	}
	close(stop)
	wg.Wait()
	t.Logf("%d linearizable follower reads checked", reads)
}

func TestCluster_LeaderFailoverLosesNoAcknowledgedWrite(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, 2*time.Minute)
	// Watchers on every member, from the start and from "now", checked for etcd's guarantees
	// across the failover.
	recs := map[string][]*watchRecorder{}
	for _, m := range c.Running() {
		recs[m.ID] = []*watchRecorder{recordWatch(ctx, m.Store(), "w", 1, false), recordWatch(ctx, m.Store(), "w", 0, true)}
	}
	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ms := c.Running()
				m := ms[rand.Intn(len(ms))]
				s := m.Store()
				if s == nil {
					continue
				}
				k := fmt.Sprintf("w%d/%d", w, i)
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := s.Put(wctx, k, "v")
				cancel()
				if err == nil {
					mu.Lock()
					acked[k] = true
					mu.Unlock()
				}
			}
		}(w)
	}
	time.Sleep(300 * time.Millisecond)
	old := c.Leader()
	c.Stop(old.ID)
	nl := c.Leader()
	if nl.ID == old.ID {
		t.Fatal("stopped member still leads")
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	c.Restart(old.ID)
	c.WaitReady()
	// The stopped member's watch resumes on its restarted self after the last revision it saw.
	resumed := recordWatch(ctx, c.Member(old.ID).Store(), "w", recs[old.ID][0].lastRev()+1, false)
	final, err := c.Leader().Store().Get(ctx, "w", ember.WithPrefix(), ember.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	h := historyOf(t, c.Leader().Store(), final.Header.Revision)
	for id, rs := range recs {
		for i, r := range rs {
			r.check(t, fmt.Sprintf("watch %d on %s", i, id), h, final.Header.Revision)
		}
	}
	resumed.check(t, "resumed watch on "+old.ID, h, final.Header.Revision)
	for _, m := range c.Running() {
		g, err := m.Store().Get(ctx, "w", ember.WithPrefix(), ember.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, kv := range g.Kvs {
			have[string(kv.Key)] = true
		}
		mu.Lock()
		for k := range acked {
			if !have[k] {
				t.Errorf("%s lost acknowledged write %s", m.ID, k)
			}
		}
		n := len(acked)
		mu.Unlock()
		if n == 0 {
			t.Fatal("no write was acknowledged")
		}
	}
}

func TestCluster_RestartAllFromDirs(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	l := c.Leader().Store()
	before0 := recordWatch(ctx, c.Followers()[0].Store(), "r/", 1, true)
	for i := 0; i < 100; i++ {
		if _, err := l.Put(ctx, fmt.Sprintf("r/%03d", i), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Delete(ctx, "r/000"); err != nil {
		t.Fatal(err)
	}
	before, err := l.Get(ctx, "r/", ember.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Members() {
		c.Stop(m.ID)
	}
	for _, m := range c.Members() {
		c.Restart(m.ID)
	}
	c.WaitReady()
	// A watch resumed after the restart continues exactly where the old one stopped.
	after0 := recordWatch(ctx, c.Leader().Store(), "r/", before0.lastRev()+1, true)
	if _, err := c.Leader().Store().Put(ctx, "r/new", "v"); err != nil {
		t.Fatal(err)
	}
	h := historyOf(t, c.Leader().Store(), before.Header.Revision+1)
	before0.check(t, "watch before the restart", h, before.Header.Revision)
	after0.check(t, "watch resumed after the restart", h, before.Header.Revision+1)
	for _, m := range c.Running() {
		after, err := m.Store().Get(ctx, "r/", ember.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if after.Header.Revision != before.Header.Revision+1 || after.Count != before.Count+1 {
			t.Fatalf("%s after restart: rev %d count %d, before rev %d count %d", m.ID,
				after.Header.Revision, after.Count, before.Header.Revision, before.Count)
		}
		old, err := m.Store().Get(ctx, "r/000", ember.WithRev(2))
		if err != nil || len(old.Kvs) != 1 {
			t.Fatalf("%s lost history: %v %+v", m.ID, err, old)
		}
	}
}

func TestCluster_JoinPromotesAndRemove(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	if _, err := c.Leader().Store().Put(ctx, "before", "v"); err != nil {
		t.Fatal(err)
	}
	m4 := c.Join("m4")
	g, err := m4.Store().Get(ctx, "before")
	if err != nil || len(g.Kvs) != 1 {
		t.Fatalf("joined member misses data: %v %+v", err, g)
	}
	// The joiner asks for promotion itself once it has caught up.
	waitFor(t, 20*time.Second, "m4 promoted to voter", func() bool {
		ms, err := c.Leader().Store().Members(ctx)
		if err != nil {
			return false
		}
		for _, m := range ms {
			if m.ID == "m4" {
				return !m.IsLearner
			}
		}
		return false
	})
	if err := m4.Store().RemoveMember(ctx, "m4"); err != nil {
		t.Fatalf("remove via the member itself: %v", err)
	}
	ms, err := c.Leader().Store().Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("members after remove: %+v", ms)
	}
	if err := c.Leader().Store().RemoveMember(ctx, "m4"); !errors.Is(err, ember.ErrMemberNotFound) {
		t.Fatalf("second remove: %v, want ErrMemberNotFound", err)
	}
	if err := c.Leader().Store().AddMember(ctx, "m1", "127.0.0.1:1"); !errors.Is(err, ember.ErrMemberExists) {
		t.Fatalf("add existing ID: %v, want ErrMemberExists", err)
	}
}

func TestCluster_LearnerStaysUntilPromoted(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	l := c.Join("l1", ember.WithLearner())
	if _, err := c.Leader().Store().Put(ctx, "x", "1"); err != nil {
		t.Fatal(err)
	}
	g, err := l.Store().Get(ctx, "x")
	if err != nil || len(g.Kvs) != 1 {
		t.Fatalf("learner read: %v %+v", err, g)
	}
	time.Sleep(500 * time.Millisecond)
	if isLearner(t, c.Leader().Store(), "l1") != true {
		t.Fatal("learner promoted without PromoteMember")
	}
	if err := l.Store().PromoteMember(ctx, "l1"); err != nil {
		t.Fatal(err)
	}
	if isLearner(t, c.Leader().Store(), "l1") {
		t.Fatal("still a learner after PromoteMember")
	}
}

func isLearner(t *testing.T, s *ember.Store, id string) bool {
	t.Helper()
	ms, err := s.Members(ctxFor(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ID == id {
			return m.IsLearner
		}
	}
	t.Fatalf("%s not a member: %+v", id, ms)
	return false
}

// A partitioned leader must not serve linearizable reads; the majority goes on; after healing the
// old leader catches up.
func TestCluster_PartitionedLeader(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, 2*time.Minute)
	old := c.Leader()
	if _, err := old.Store().Put(ctx, "p", "before"); err != nil {
		t.Fatal(err)
	}
	nl := partitionLeader(t, c, old)
	if _, err := nl.Store().Put(ctx, "p", "after"); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	g, err := old.Store().Get(rctx, "p")
	cancel()
	if err == nil {
		t.Fatalf("partitioned old leader served a linearizable read: %+v", g.Kvs)
	}
	// A serializable read is local and may be stale; it must still answer.
	if g, err := old.Store().Get(ctx, "p", ember.WithSerializable()); err != nil || string(g.Kvs[0].Value) != "before" {
		t.Fatalf("serializable read on the partitioned member: %v %+v", err, g)
	}
	c.Heal()
	waitFor(t, 20*time.Second, "old leader catches up", func() bool {
		g, err := old.Store().Get(ctx, "p")
		return err == nil && len(g.Kvs) == 1 && string(g.Kvs[0].Value) == "after"
	})
}

// Garbage on the peer port closes that connection only; the member keeps serving.
func TestCluster_MalformedPeerBytes(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	rng := rand.New(rand.NewSource(1))
	target := c.Leader()
	for i := 0; i < 50; i++ {
		conn, err := net.Dial("tcp", target.Addr)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, rng.Intn(512)+1)
		rng.Read(junk)
		switch i % 3 {
		case 0:
			junk[0] = 'E' // ember RPC with a garbage frame
		case 1:
			junk[0] = 'R' // raft with garbage msgpack
		}
		conn.SetDeadline(time.Now().Add(time.Second))
		conn.Write(junk)
		conn.Read(make([]byte, 64))
		conn.Close()
	}
	for _, m := range c.Running() {
		if _, err := m.Store().Put(ctx, "still", m.ID); err != nil {
			t.Fatalf("%s after garbage: %v", m.ID, err)
		}
	}
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A follower that falls behind the leader's log gets a raft snapshot, and ends up with the same
// keys, history, leases and revision; a watch on it continues without a gap.
func TestCluster_FollowerInstallsSnapshot(t *testing.T) {
	c := embertest.NewCluster(t, 3,
		ember.WithSnapshotThreshold(64), ember.WithSnapshotInterval(100*time.Millisecond),
		ember.WithRaftConfig(func(rc *raft.Config) { rc.TrailingLogs = 16 }))
	ctx := ctxFor(t, 2*time.Minute)
	l := c.Leader().Store()
	lease, err := l.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Put(ctx, "leased", "v", ember.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	lagger := c.Followers()[0]
	wc := lagger.Store().Watch(ctx, "s/", ember.WithPrefix())
	c.Stop(lagger.ID)
	for i := 0; i < 400; i++ {
		if _, err := l.Put(ctx, fmt.Sprintf("s/%03d", i%50), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := <-wc; ok {
		t.Fatal("watch on a stopped member still open")
	}
	s := c.Restart(lagger.ID)
	rec := recordWatch(ctx, s, "s/", 1, true)
	waitFor(t, 30*time.Second, "lagging member catches up", func() bool {
		g, err := s.Get(ctx, "s/", ember.WithPrefix(), ember.WithSerializable(), ember.WithCountOnly())
		return err == nil && g.Count == 50
	})
	want, err := l.Get(ctx, "", ember.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "", ember.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	if kvString(got.Kvs) != kvString(want.Kvs) || got.Header.Revision != want.Header.Revision {
		t.Fatalf("after snapshot: rev %d kvs %v; leader rev %d kvs %v", got.Header.Revision, len(got.Kvs), want.Header.Revision, len(want.Kvs))
	}
	ttl, err := s.TimeToLive(ctx, lease.ID, ember.WithAttachedKeys())
	if err != nil || ttl.TTL <= 0 || len(ttl.Keys) != 1 {
		t.Fatalf("lease after snapshot: %v %+v", err, ttl)
	}
	// The watch from revision 1 on the member that installed the snapshot keeps every guarantee:
	// the snapshot carries history since the last compaction, so it sees all 400 puts.
	rec.check(t, "watch on the member that installed a snapshot", historyOf(t, l, want.Header.Revision), want.Header.Revision)
	if n := rec.lastRev(); n != want.Header.Revision {
		t.Fatalf("watch reached revision %d, want %d", n, want.Header.Revision)
	}
}

func kvString(kvs []*ember.KeyValue) string {
	var b strings.Builder
	for _, kv := range kvs {
		fmt.Fprintf(&b, "%s=%s c%d m%d v%d l%d;", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
	}
	return b.String()
}

// Closing the leader hands leadership over: a new leader is there well before followers would
// have noticed the silence (a heartbeat timeout of 1 s).
func TestCluster_CloseHandsOffLeadership(t *testing.T) {
	c := embertest.NewCluster(t, 3, ember.WithHeartbeatTimeout(time.Second), ember.WithElectionTimeout(time.Second))
	ctx := ctxFor(t, time.Minute)
	old := c.Leader()
	if _, err := old.Store().Put(ctx, "before", "v"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.Stop(old.ID)
	var took time.Duration
	waitFor(t, 10*time.Second, "a new leader", func() bool {
		for _, m := range c.Running() {
			if m.Store().IsLeader() {
				took = time.Since(start)
				return true
			}
		}
		return false
	})
	t.Logf("new leader %v after the old one began closing", took)
	if took >= 900*time.Millisecond {
		t.Fatalf("new leader after %v: leadership was not handed off", took)
	}
	if _, err := c.Running()[0].Store().Put(ctx, "after", "v"); err != nil {
		t.Fatal(err)
	}
}

// PromoteMember refuses a learner that has not caught up (here: cut off while the cluster
// writes), and promotes it once it has.
func TestCluster_PromoteRefusedUntilCaughtUp(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	l := c.Join("l1", ember.WithLearner())
	c.Partition(l.ID)
	leader := c.Leader().Store()
	for i := 0; i < 200; i++ {
		if _, err := leader.Put(ctx, fmt.Sprintf("lag/%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	if err := leader.PromoteMember(ctx, l.ID); !errors.Is(err, ember.ErrLearnerNotReady) {
		t.Fatalf("promote a learner that is behind: %v, want ErrLearnerNotReady", err)
	}
	if !isLearner(t, leader, l.ID) {
		t.Fatal("a lagging learner was promoted")
	}
	c.Heal()
	waitFor(t, 20*time.Second, "learner promoted once caught up", func() bool {
		return leader.PromoteMember(ctx, l.ID) == nil
	})
	if isLearner(t, leader, l.ID) {
		t.Fatal("still a learner after a successful PromoteMember")
	}
}

// partitionLeader cuts old (the leader) off from the others and returns the leader the majority
// elects.
func partitionLeader(t testing.TB, c *embertest.Cluster, old *embertest.Member) *embertest.Member {
	t.Helper()
	c.Partition(old.ID)
	var nl *embertest.Member
	waitFor(t, 20*time.Second, "a new leader in the majority", func() bool {
		for _, m := range c.Running() {
			if m.ID != old.ID && m.Store().IsLeader() {
				nl = m
				return true
			}
		}
		return false
	})
	return nl
}

// Members keep their own log stores: a WAL member joins bbolt members, catches up, takes
// forwarded writes, survives a restart and leads.
func TestCluster_JoinWithWALLogStore(t *testing.T) {
	c := embertest.NewCluster(t, 2)
	ctx := ctxFor(t, time.Minute)
	l := c.Leader().Store()
	for i := range 50 {
		if _, err := l.Put(ctx, fmt.Sprintf("k/%02d", i), "before"); err != nil {
			t.Fatal(err)
		}
	}
	w := c.Join("wal", ember.WithLogStore(ember.LogStoreWAL))
	if _, err := w.Store().Put(ctx, "k/from-wal", "forwarded"); err != nil {
		t.Fatal(err)
	}
	count := func(s *ember.Store) int64 {
		resp, err := s.Get(ctx, "k/", ember.WithPrefix(), ember.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	if n := count(w.Store()); n != 51 {
		t.Fatalf("WAL member sees %d keys, want 51", n)
	}
	c.Restart("wal")
	if n := count(c.Member("wal").Store()); n != 51 {
		t.Fatalf("restarted WAL member sees %d keys, want 51", n)
	}
	waitFor(t, 30*time.Second, "the WAL member to be a voter", func() bool {
		ms, err := c.Member("wal").Store().Members(ctx)
		if err != nil {
			return false
		}
		for _, m := range ms {
			if m.ID == "wal" && !m.IsLearner {
				return true
			}
		}
		return false
	})
	if err := c.Member("wal").Store().TransferLeadership(ctx, "wal"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the WAL member to lead", func() bool { return c.Member("wal").Store().IsLeader() })
	if _, err := c.Members()[0].Store().Put(ctx, "k/under-wal-leader", "v"); err != nil {
		t.Fatal(err)
	}
}
