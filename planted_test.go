//go:build plantbugs

package ember_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/internal/planted"
	"github.com/ember-kv/ember/internal/watchcheck"
)

// Reliability goal G7: each planted bug (see package internal/planted) must be caught by the
// check that guards against it. Run with
//
//	go test -tags plantbugs -run TestPlanted -count=1 .
//
// Each test passes only if its check reports the bug.

func plant(t *testing.T, bug planted.Bug) {
	t.Helper()
	t.Setenv(planted.EnvVar, bug.String())
}

// A leader cut off from the majority must not serve a linearizable read: with the read index
// skipped, the read returns a value older than an acknowledged write.
func TestPlanted_LocalReadsCaught(t *testing.T) {
	plant(t, planted.LocalReads)
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	old := c.Leader()
	if _, err := old.Store().Put(ctx, "p", "before"); err != nil {
		t.Fatal(err)
	}
	nl := partitionLeader(t, c, old)
	if _, err := nl.Store().Put(ctx, "p", "after"); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	g, err := old.Store().Get(rctx, "p")
	if err == nil && string(g.Kvs[0].Value) == "before" {
		return // caught: a linearizable read missed a write acknowledged before it began
	}
	t.Fatalf("planted local reads not caught: read %v, %v", g, err)
}

// A write acknowledged before it commits is lost when its leader was cut off.
func TestPlanted_AckBeforeCommitCaught(t *testing.T) {
	plant(t, planted.AckBeforeCommit)
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	old := c.Leader()
	c.Partition(old.ID)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := old.Store().Put(wctx, "acked", "v")
	cancel()
	if err != nil {
		t.Fatalf("the planted bug should acknowledge at once, got %v", err)
	}
	// Heal only once the majority has moved on to a new term: its log then replaces the old
	// leader's uncommitted entry. Healing sooner could let the entry commit after all.
	waitFor(t, 20*time.Second, "a new leader in the majority", func() bool {
		for _, m := range c.Running() {
			if m.ID != old.ID && m.Store().IsLeader() {
				return true
			}
		}
		return false
	})
	c.Heal()
	c.WaitReady()
	g, err := c.Leader().Store().Get(ctx, "acked")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Kvs) == 0 {
		return // caught: an acknowledged write is not in the cluster
	}
	t.Fatal("planted early acknowledgement not caught")
}

// The watch checker reports the revisions the dispatcher skipped.
func TestPlanted_SkippedWatchEventCaught(t *testing.T) {
	plant(t, planted.SkipWatchEvent)
	s := openMemStore(t)
	ctx := ctxFor(t, 30*time.Second)
	rec := recordWatch(ctx, s, "w/", 0, false)
	time.Sleep(50 * time.Millisecond)
	var last int64
	for i := 0; i < 30; i++ {
		p, err := s.Put(ctx, fmt.Sprintf("w/%d", i%5), "v")
		if err != nil {
			t.Fatal(err)
		}
		last = p.Header.Revision
	}
	if err := s.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	h := historyOf(t, s, last)
	rec.mu.Lock()
	w := rec.w
	rec.mu.Unlock()
	for _, v := range watchcheck.Check(h, w) {
		if v.Kind == watchcheck.KindReliable || v.Kind == watchcheck.KindBookmarkable {
			return // caught
		}
	}
	t.Fatal("planted skipped watch events not caught by watchcheck")
}

// A revoke must delete every attached key at one revision.
func TestPlanted_SplitRevokeCaught(t *testing.T) {
	plant(t, planted.SplitRevoke)
	s := openMemStore(t)
	ctx := ctxFor(t, 30*time.Second)
	g, err := s.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"l/1", "l/2", "l/3"} {
		if _, err := s.Put(ctx, k, "v", ember.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
	}
	wc := s.Watch(ctx, "l/", ember.WithPrefix(), ember.WithFilterPut())
	if _, err := s.Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	revs := map[int64]bool{}
	for n := 0; n < 3; {
		wr := <-wc
		for _, ev := range wr.Events {
			revs[ev.Kv.ModRevision] = true
			n++
		}
	}
	if len(revs) > 1 {
		return // caught: the revoke's deletes span revisions
	}
	t.Fatal("planted split revoke not caught")
}
