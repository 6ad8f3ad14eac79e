package ember_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// embertest's election timeout; the lease bounds below are stated in terms of it.
const electionTimeout = 500 * time.Millisecond

// schedSlack widens the "not late" bounds for shared 2-core CI machines running -race with other
// packages in parallel; "never early" is checked without slack.
const schedSlack = time.Second

// deletedAt watches key on s and reports when its delete event arrives, with its revision.
func deletedAt(ctx context.Context, s *ember.Store, key string) <-chan [2]int64 {
	out := make(chan [2]int64, 1)
	wc := s.Watch(ctx, key)
	go func() {
		for wr := range wc {
			for _, ev := range wr.Events {
				if ev.Type == ember.EventTypeDelete {
					out <- [2]int64{time.Now().UnixNano(), ev.Kv.ModRevision}
					return
				}
			}
		}
	}()
	return out
}

func TestLease_KeptAliveThroughFollowerSurvivesLeaderKill(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	f := c.Followers()[0]
	g, err := f.Store().Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Store().Put(ctx, "alive", "v", ember.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	ka, err := f.Store().KeepAlive(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range ka {
		}
	}()
	time.Sleep(time.Second)
	c.Stop(c.Leader().ID)
	time.Sleep(3 * time.Duration(g.TTL) * time.Second)
	r, err := f.Store().Get(ctx, "alive")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 1 {
		t.Fatal("a lease kept alive through a follower expired across a leader change")
	}
}

// An unkept lease expires no earlier than grant+TTL and, across a leader change, no later than
// grant+TTL+election timeout+1s; its keys go at one revision.
func TestLease_UnkeptExpiresWithinBoundAcrossLeaderChange(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	l := c.Leader()
	f := c.Followers()[0]
	before := time.Now()
	g, err := f.Store().Grant(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	granted := time.Now()
	for _, k := range []string{"e/1", "e/2", "e/3"} {
		if _, err := f.Store().Put(ctx, k, "v", ember.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
	}
	gone := deletedAt(ctx, f.Store(), "e/2")
	wc := f.Store().Watch(ctx, "e/", ember.WithPrefix(), ember.WithFilterPut())
	time.Sleep(time.Second)
	c.Stop(l.ID)
	ttl := time.Duration(g.TTL) * time.Second
	select {
	case d := <-gone:
		at := time.Unix(0, d[0])
		if at.Before(before.Add(ttl)) {
			t.Fatalf("lease expired %v after grant, TTL %v", at.Sub(before), ttl)
		}
		late := at.Sub(granted.Add(ttl))
		t.Logf("expired %v after grant+TTL across a leader change", late)
		if late > electionTimeout+time.Second+schedSlack {
			t.Fatalf("lease expired %v late across a leader change (bound %v)", late, electionTimeout+time.Second)
		}
		wr := <-wc
		if len(wr.Events) != 3 {
			t.Fatalf("expiry deleted %d keys in one response, want 3", len(wr.Events))
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision != d[1] {
				t.Fatalf("expiry deletes at revisions %d and %d", ev.Kv.ModRevision, d[1])
			}
		}
	case <-ctx.Done():
		t.Fatal("lease never expired")
	}
}

// Without faults, expiry comes within a second of the TTL.
func TestLease_ExpiresOnTime(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	s := c.Leader().Store()
	g, err := s.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	granted := time.Now()
	if _, err := s.Put(ctx, "t", "v", ember.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	gone := deletedAt(ctx, c.Followers()[0].Store(), "t")
	// Renewals move the deadline: the last one counts.
	time.Sleep(time.Second)
	if _, err := s.KeepAliveOnce(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	renewed := time.Now()
	ttl := time.Duration(g.TTL) * time.Second
	select {
	case d := <-gone:
		at := time.Unix(0, d[0])
		if at.Before(granted.Add(ttl)) || at.Before(renewed.Add(ttl).Add(-100*time.Millisecond)) {
			t.Fatalf("expired %v after the last renewal, TTL %v", at.Sub(renewed), ttl)
		}
		late := at.Sub(renewed.Add(ttl))
		t.Logf("expired %v after the last renewal+TTL", late)
		if late > time.Second+schedSlack {
			t.Fatalf("expired %v late", late)
		}
	case <-ctx.Done():
		t.Fatal("lease never expired")
	}
}

func TestLease_SurvivesFullRestart(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	g, err := c.Leader().Store().Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leader().Store().Put(ctx, "r", "v", ember.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Members() {
		c.Stop(m.ID)
	}
	for _, m := range c.Members() {
		c.Restart(m.ID)
	}
	c.WaitReady()
	s := c.Followers()[0].Store()
	ttl, err := s.TimeToLive(ctx, g.ID, ember.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	// The new leader adds one election timeout (500 ms here) to every lease, so at most 31 s.
	if ttl.TTL <= 0 || ttl.TTL > 31 || ttl.GrantedTTL != 30 || len(ttl.Keys) != 1 {
		t.Fatalf("lease after restart: %+v", ttl)
	}
	if _, err := s.Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Get(ctx, "r"); len(r.Kvs) != 0 {
		t.Fatal("revoke after restart left the key")
	}
}

func TestLease_GrantLimitsAndErrors(t *testing.T) {
	c := embertest.NewCluster(t, 1)
	ctx := ctxFor(t, time.Minute)
	s := c.Leader().Store()
	g, err := s.Grant(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if g.TTL != 1 { // ceil(1.5 × 500ms)
		t.Fatalf("TTL 0 raised to %d, want the minimum 1", g.TTL)
	}
	if _, err := s.Grant(ctx, 9_000_000_001); !errors.Is(err, ember.ErrTTLTooLarge) {
		t.Fatalf("huge TTL: %v", err)
	}
	if _, err := s.Revoke(ctx, 42); !errors.Is(err, ember.ErrLeaseNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	if _, err := s.KeepAliveOnce(ctx, 42); !errors.Is(err, ember.ErrLeaseNotFound) {
		t.Fatalf("keepalive unknown: %v", err)
	}
	if _, err := s.KeepAlive(ctx, 42); !errors.Is(err, ember.ErrLeaseNotFound) {
		t.Fatalf("KeepAlive unknown: %v", err)
	}
	r, err := s.TimeToLive(ctx, 42)
	if err != nil || r.TTL != -1 {
		t.Fatalf("TimeToLive unknown: %v %+v, want TTL -1", err, r)
	}
	// A put with a lease, then a put without: the key is detached and survives the revoke.
	if _, err := s.Put(ctx, "d", "1", ember.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "d", "2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Get(ctx, "d"); len(r.Kvs) != 1 || r.Kvs[0].Lease != 0 {
		t.Fatalf("detached key after revoke: %+v", r.Kvs)
	}
}

// The keepalive channel closes when the lease is revoked, and an unread channel blocks nothing.
func TestLease_KeepAliveChannel(t *testing.T) {
	c := embertest.NewCluster(t, 1)
	ctx := ctxFor(t, time.Minute)
	s := c.Leader().Store()
	g, err := s.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	ka, err := s.KeepAlive(ctx, g.ID) // never read until the end
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if r, err := s.TimeToLive(ctx, g.ID); err != nil || r.TTL < 0 {
		t.Fatalf("lease with an unread keepalive channel expired: %v %+v", err, r)
	}
	if _, err := s.Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ka:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("keepalive channel still open after revoke")
		}
	}
}

// Leases lists soonest-to-expire first, as etcd, on the leader and on followers, whatever the
// lease IDs.
func TestStore_Leases_SoonestExpiryFirst(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	l := c.Leader().Store()
	var want []ember.LeaseID
	for _, ttl := range []int64{300, 30, 600, 60} {
		g, err := l.Grant(ctx, ttl)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, g.ID)
	}
	want = []ember.LeaseID{want[1], want[3], want[0], want[2]} // by TTL: 30, 60, 300, 600
	for _, m := range c.Running() {
		r, err := m.Store().Leases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []ember.LeaseID
		for _, ls := range r.Leases {
			got = append(got, ls.ID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: Leases = %x, want %x (by expiry)", m.ID, got, want)
		}
	}
}

// GrantAndDo grants a lease and writes keys attached to it in one entry: the keys live as long
// as the lease (it is armed like any grant), and a refused grant or op applies nothing.
func TestStore_GrantAndDo(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	s := c.Followers()[0].Store() // forwarded to the leader as one command

	g, r, err := s.GrantAndDo(ctx, 42, 2, ember.OpTxn(nil,
		[]ember.Op{ember.OpPut("svc/a", "addr-a", ember.WithLease(42)), ember.OpPut("svc/b", "addr-b", ember.WithLease(42))}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if g.ID != 42 || g.TTL != 2 || !r.Txn().Succeeded || g.Header.Revision != r.Txn().Header.Revision {
		t.Fatalf("grant %+v, txn %+v", g, r.Txn())
	}
	ttl, err := s.TimeToLive(ctx, 42, ember.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if len(ttl.Keys) != 2 || ttl.GrantedTTL != 2 {
		t.Fatalf("lease 42: %+v, want 2 keys, TTL 2", ttl)
	}
	gone := deletedAt(ctx, s, "svc/a")

	// Refused: the lease exists; a put with an unknown lease. Nothing of either is applied.
	if _, _, err := s.GrantAndDo(ctx, 42, 5, ember.OpPut("other", "v", ember.WithLease(42))); !errors.Is(err, ember.ErrLeaseExists) {
		t.Fatalf("grant of a lease in use: %v, want ErrLeaseExists", err)
	}
	if _, _, err := s.GrantAndDo(ctx, 43, 5, ember.OpPut("other", "v", ember.WithLease(44))); !errors.Is(err, ember.ErrLeaseNotFound) {
		t.Fatalf("put with an unknown lease: %v, want ErrLeaseNotFound", err)
	}
	if _, _, err := s.GrantAndDo(ctx, ember.NoLease, 5, ember.OpPut("other", "v")); !errors.Is(err, ember.ErrLeaseNotFound) {
		t.Fatalf("NoLease: %v, want ErrLeaseNotFound", err)
	}
	if resp, err := s.Get(ctx, "other"); err != nil || resp.Count != 0 {
		t.Fatalf("refused requests wrote other: %+v %v", resp, err)
	}
	if l, err := s.TimeToLive(ctx, 43); err != nil || l.TTL != -1 {
		t.Fatalf("lease 43 after a refused op: %+v %v, want none", l, err)
	}

	// Not kept alive, the lease expires and takes its keys.
	select {
	case <-gone:
	case <-ctx.Done():
		t.Fatal("svc/a outlived its lease")
	}
	if resp, err := s.Get(ctx, "svc/", ember.WithPrefix()); err != nil || resp.Count != 0 {
		t.Fatalf("after expiry: %+v %v", resp, err)
	}
}
