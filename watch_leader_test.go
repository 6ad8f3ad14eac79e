package ember_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// putValues collects the values of the put events a watch delivers until it has n of them.
func putValues(t *testing.T, wc ember.WatchChan, n int) []string {
	t.Helper()
	var vals []string
	for len(vals) < n {
		wr := next(t, wc)
		if wr.Canceled {
			t.Fatalf("watch canceled: %v", wr.Err())
		}
		for _, e := range wr.Events {
			vals = append(vals, string(e.Kv.Value))
		}
	}
	return vals
}

// A WithRequireLeader watch on a member cut off from the leader ends with ErrNoLeader; a watch
// without it stays open and resumes after the heal, and a WithRequireLeader watch on the
// majority's side goes on.
func TestWatch_RequireLeader_CutOff(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	l, f := c.Leader().Store(), c.Followers()[0]
	cut, plain := f.Store().Watch(ember.WithRequireLeader(ctx), "k"), f.Store().Watch(ctx, "k")
	majority := l.Watch(ember.WithRequireLeader(ctx), "k")
	if _, err := l.Put(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	for _, wc := range []ember.WatchChan{cut, plain, majority} {
		putValues(t, wc, 1)
	}

	c.Partition(f.ID)
	if _, err := l.Put(ctx, "k", "2"); err != nil {
		t.Fatal(err)
	}
	putValues(t, majority, 1)
	wr := next(t, cut)
	if !wr.Canceled || !errors.Is(wr.Err(), ember.ErrNoLeader) {
		t.Fatalf("require-leader watch on the cut-off member: %+v (err %v), want canceled with ErrNoLeader", wr, wr.Err())
	}
	if wr.Header.Revision != 0 {
		t.Fatalf("cancel reports revision %d, want none, as etcd's", wr.Header.Revision)
	}
	if _, ok := <-cut; ok {
		t.Fatal("channel still open after the canceled response")
	}
	select {
	case wr := <-plain:
		t.Fatalf("plain watch on the cut-off member got %+v", wr)
	default:
	}
	// While the member knows no leader, a new require-leader watch is refused at once, not
	// after the three election timeouts (1.5 s) an open one waits.
	select {
	case wr = <-f.Store().Watch(ember.WithRequireLeader(ctx), "k"):
	case <-time.After(time.Second):
		t.Fatal("require-leader watch opened without a leader was not refused at once")
	}
	if !wr.Canceled || !errors.Is(wr.Err(), ember.ErrNoLeader) {
		t.Fatalf("require-leader watch opened without a leader: %+v, want canceled with ErrNoLeader", wr)
	}

	c.Heal()
	if _, err := l.Put(ctx, "k", "3"); err != nil {
		t.Fatal(err)
	}
	if got := putValues(t, plain, 2); got[0] != "2" || got[1] != "3" {
		t.Fatalf("plain watch after the heal got %q, want [2 3]", got)
	}
	if got := putValues(t, majority, 1); got[0] != "3" {
		t.Fatalf("majority-side watch got %q, want [3]", got)
	}
}

// A WithRequireLeader watch in a healthy cluster sees a leader change through without ending:
// only a lasting absence of a leader ends it.
func TestWatch_RequireLeader_SurvivesLeaderChange(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	f := c.Followers()[0].Store()
	wc := f.Watch(ember.WithRequireLeader(ctx), "k")
	old := c.Leader()
	if err := old.Store().TransferLeadership(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Put(ctx, "k", "after"); err != nil {
		t.Fatal(err)
	}
	if got := putValues(t, wc, 1); got[0] != "after" {
		t.Fatalf("got %q", got)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second) // 4 election timeouts
	defer cancel()
	select {
	case wr := <-wc:
		t.Fatalf("watch ended with a leader in place: %+v", wr)
	case <-wctx.Done():
	}
}

// A leader cut off from the others steps down; its WithRequireLeader watches end with
// ErrNoLeader like a follower's.
func TestWatch_RequireLeader_CutOffLeader(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	old := c.Leader()
	wc := old.Store().Watch(ember.WithRequireLeader(ctx), "k")
	c.Partition(old.ID)
	wr := next(t, wc)
	if !wr.Canceled || !errors.Is(wr.Err(), ember.ErrNoLeader) {
		t.Fatalf("require-leader watch on the cut-off leader: %+v (err %v), want canceled with ErrNoLeader", wr, wr.Err())
	}
}
