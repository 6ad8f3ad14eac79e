// Package embertest starts in-process ember clusters for tests: n members on loopback, each
// with its own data dir, with helpers to stop, restart, partition and heal members and to wait
// for a leader. Hosts use it to test code that embeds ember; ember's own multi-node tests use
// it too.
//
// A Cluster and its Members are safe for concurrent use: a test may stop and restart members
// while other goroutines send requests through them.
package embertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/internal/freeport"
)

// Member is one member of a test cluster.
type Member struct {
	ID   string
	Addr string
	Dir  string

	store atomic.Pointer[ember.Store]
}

// Store returns the running store, or nil while the member is stopped.
func (m *Member) Store() *ember.Store { return m.store.Load() }

// Cluster is a set of members started by NewCluster.
type Cluster struct {
	t    testing.TB
	opts []ember.Option
	net  *Network

	mu      sync.Mutex // guards members and byID
	members []*Member
	byID    map[string]*Member
}

// Fast raft timings for tests: elections finish in well under a second, and the 2-core,
// -race machines CI runs on still do not see spurious elections.
var defaultTimings = []ember.Option{
	ember.WithHeartbeatTimeout(500 * time.Millisecond),
	ember.WithElectionTimeout(500 * time.Millisecond),
}

// NewCluster starts n members with a static initial cluster and waits until every member is
// ready. opts apply to every member, after embertest's own (shorter raft timeouts), so they can
// override them. Everything is stopped in t.Cleanup.
//
// To test with peer admission, pass ember.WithClusterToken (and ember.WithTLS, if wanted) in
// opts: every member gets it, and so does a member added with Join. The Network's faults then
// act on TLS records: a connection that lost bytes to Blackhole or LostReplies fails once bytes
// flow on it again (its records no longer authenticate).
func NewCluster(t testing.TB, n int, opts ...ember.Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, opts: append(append([]ember.Option(nil), defaultTimings...), opts...),
		byID: map[string]*Member{}, net: NewNetwork()}
	peers := map[string]string{}
	for i := 1; i <= n; i++ {
		m := &Member{ID: fmt.Sprintf("m%d", i), Addr: FreeAddr(t), Dir: t.TempDir()}
		c.members = append(c.members, m)
		c.byID[m.ID] = m
		peers[m.ID] = m.Addr
		c.net.SetAddr(m.Addr, m.ID)
	}
	t.Cleanup(c.Close)
	for _, m := range c.members {
		c.open(m, ember.WithInitialCluster(peers))
	}
	c.WaitReady()
	return c
}

// Network returns the fault-injecting network the members dial through.
func (c *Cluster) Network() *Network { return c.net }

func (c *Cluster) open(m *Member, extra ...ember.Option) {
	c.t.Helper()
	opts := append([]ember.Option{
		ember.WithNodeID(m.ID),
		ember.WithBindAddr(m.Addr),
		ember.WithDialer(c.net.Dialer(m.ID)),
	}, c.opts...)
	// A member's own options come last, so that they override the cluster's.
	opts = append(opts, extra...)
	s, err := ember.Open(m.Dir, opts...)
	if err != nil {
		c.t.Fatalf("embertest: open %s: %v", m.ID, err)
	}
	m.store.Store(s)
}

// Members returns every member, running or not, in ID order.
func (c *Cluster) Members() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Member(nil), c.members...)
}

// Member returns the member with id.
func (c *Cluster) Member(id string) *Member {
	c.mu.Lock()
	m, ok := c.byID[id]
	c.mu.Unlock()
	if !ok {
		c.t.Fatalf("embertest: no member %q", id)
	}
	return m
}

// Running returns the members whose store is open.
func (c *Cluster) Running() []*Member {
	var out []*Member
	for _, m := range c.Members() {
		if m.Store() != nil {
			out = append(out, m)
		}
	}
	return out
}

// WaitReady waits until every running member is ready (WaitReady on each).
func (c *Cluster) WaitReady() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range c.Running() {
		if s := m.Store(); s != nil {
			if err := s.WaitReady(ctx); err != nil {
				c.t.Fatalf("embertest: %s not ready: %v", m.ID, err)
			}
		}
	}
}

// Leader waits until exactly one running member leads and every running member that can reach
// it agrees, and returns it.
func (c *Cluster) Leader() *Member {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var leaders []*Member
		for _, m := range c.Running() {
			if s := m.Store(); s != nil && s.IsLeader() {
				leaders = append(leaders, m)
			}
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("embertest: no single leader within 30s")
	return nil
}

// Followers returns the running members that do not lead.
func (c *Cluster) Followers() []*Member {
	c.t.Helper()
	l := c.Leader()
	var out []*Member
	for _, m := range c.Running() {
		if m != l {
			out = append(out, m)
		}
	}
	return out
}

// Stop closes a member's store; its data dir stays for Restart.
func (c *Cluster) Stop(id string) {
	c.t.Helper()
	s := c.Member(id).store.Swap(nil)
	if s == nil {
		return
	}
	if err := s.Close(); err != nil {
		c.t.Logf("embertest: close %s: %v", id, err)
	}
}

// Restart reopens a stopped member from its data dir (it stops it first if it runs).
func (c *Cluster) Restart(id string) *ember.Store {
	c.t.Helper()
	c.Stop(id)
	m := c.Member(id)
	c.open(m)
	return m.Store()
}

// Join starts a new member that joins through the running members with WithJoin, and returns it
// once it is ready. Extra options (such as WithLearner) apply to it only, after the cluster's.
func (c *Cluster) Join(id string, opts ...ember.Option) *Member {
	c.t.Helper()
	m := &Member{ID: id, Addr: FreeAddr(c.t), Dir: c.t.TempDir()}
	var seeds []string
	for _, r := range c.Running() {
		seeds = append(seeds, r.Addr)
	}
	c.mu.Lock()
	if _, ok := c.byID[id]; ok {
		c.mu.Unlock()
		c.t.Fatalf("embertest: member %q exists", id)
	}
	c.members = append(c.members, m)
	c.byID[id] = m
	c.mu.Unlock()
	c.net.SetAddr(m.Addr, id)
	c.open(m, append([]ember.Option{ember.WithJoin(seeds...)}, opts...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Store().WaitReady(ctx); err != nil {
		c.t.Fatalf("embertest: joined member %s not ready: %v", id, err)
	}
	return m
}

// Remove removes a member from the cluster with RemoveMember, through another running member,
// and stops it; its data dir stays. The removal is retried for up to 30 s (the cluster may be
// electing a leader); the test fails if it does not succeed.
func (c *Cluster) Remove(id string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	for attempt := 0; ctx.Err() == nil; attempt++ {
		for _, m := range c.Running() {
			if s := m.Store(); s != nil && m.ID != id {
				err = s.RemoveMember(ctx, id)
				// Not found after an attempt whose outcome was unknown: that one removed it.
				if err == nil || attempt > 0 && errors.Is(err, ember.ErrMemberNotFound) {
					c.Stop(id)
					return
				}
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("embertest: remove %s: %v", id, err)
}

// Rejoin replaces a member under its old ID, as after a lost disk: it stops the member if it
// runs, empties its data dir and starts it again with WithJoin through the running members. The
// member must have been removed first (Remove). Extra options apply to it only. Rejoin
// does not wait for the member to be ready: it is a learner until it has caught up.
func (c *Cluster) Rejoin(id string, opts ...ember.Option) *ember.Store {
	c.t.Helper()
	c.Stop(id)
	m := c.Member(id)
	if err := os.RemoveAll(m.Dir); err != nil {
		c.t.Fatalf("embertest: empty the data dir of %s: %v", id, err)
	}
	var seeds []string
	for _, r := range c.Running() {
		seeds = append(seeds, r.Addr)
	}
	c.open(m, append([]ember.Option{ember.WithJoin(seeds...)}, opts...)...)
	return m.Store()
}

// Partition cuts every connection between the member id and all others, both ways.
func (c *Cluster) Partition(id string) {
	for _, m := range c.Members() {
		if m.ID != id {
			c.net.Cut(id, m.ID)
			c.net.Cut(m.ID, id)
		}
	}
}

// Heal removes every network fault.
func (c *Cluster) Heal() { c.net.HealAll() }

// Close stops every member. It is registered with t.Cleanup by NewCluster.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, m := range c.Members() {
		if s := m.store.Swap(nil); s != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.Close()
			}()
		}
	}
	wg.Wait()
}

// FreeAddr returns a loopback address with a port that was free a moment ago and that no
// earlier call in this process returned, so the members of a cluster never share one.
func FreeAddr(t testing.TB) string {
	t.Helper()
	a, err := freeport.Addr()
	if err != nil {
		t.Fatalf("embertest: %v", err)
	}
	return a
}
