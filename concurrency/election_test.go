package concurrency_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/concurrency"
)

func TestElection_CampaignProclaimResign(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	sess := newSession(t, s)
	e := concurrency.NewElection(sess, "/elect")

	if _, err := e.Leader(ctx); !errors.Is(err, concurrency.ErrElectionNoLeader) {
		t.Fatalf("Leader with no candidates: %v, want ErrElectionNoLeader", err)
	}
	if err := e.Proclaim(ctx, "x"); !errors.Is(err, concurrency.ErrElectionNotLeader) {
		t.Fatalf("Proclaim before Campaign: %v, want ErrElectionNotLeader", err)
	}
	if err := e.Campaign(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got, want := e.Key(), keyOf("/elect", sess); got != want {
		t.Fatalf("Key = %q, want %q", got, want)
	}
	l, err := e.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(l.Kvs[0].Key) != e.Key() || string(l.Kvs[0].Value) != "a" || l.Kvs[0].CreateRevision != e.Rev() {
		t.Fatalf("Leader = %s=%s@%d, want %s=a@%d", l.Kvs[0].Key, l.Kvs[0].Value, l.Kvs[0].CreateRevision, e.Key(), e.Rev())
	}
	leaderCmp := ember.Compare(ember.CreateRevision(e.Key()), "=", e.Rev())
	if !guardedPut(t, s, leaderCmp, "/guarded") {
		t.Fatal("the leader's fenced write failed")
	}

	if err := e.Proclaim(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if v := value(t, s, e.Key()); v != "b" {
		t.Fatalf("value after Proclaim = %q, want b", v)
	}
	// Campaigning again with another value keeps the place and proclaims it.
	rev := e.Rev()
	if err := e.Campaign(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if e.Rev() != rev || value(t, s, e.Key()) != "c" {
		t.Fatalf("re-Campaign: Rev %d value %q, want %d and c", e.Rev(), value(t, s, e.Key()), rev)
	}

	key := e.Key()
	if err := e.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(t, s, key) || e.Key() != "" {
		t.Fatal("Resign left the leader key")
	}
	if guardedPut(t, s, leaderCmp, "/guarded") {
		t.Fatal("the resigned leader's fenced write succeeded")
	}
	if err := e.Resign(ctx); err != nil {
		t.Fatalf("Resign when not leading: %v", err)
	}
	if err := e.Proclaim(ctx, "d"); !errors.Is(err, concurrency.ErrElectionNotLeader) {
		t.Fatalf("Proclaim after Resign: %v, want ErrElectionNotLeader", err)
	}
}

func TestElection_ProclaimAfterLosingKey(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	e := concurrency.NewElection(newSession(t, s), "/lost")
	if err := e.Campaign(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, e.Key()); err != nil {
		t.Fatal(err)
	}
	if err := e.Proclaim(ctx, "b"); !errors.Is(err, concurrency.ErrElectionNotLeader) {
		t.Fatalf("Proclaim without a key: %v, want ErrElectionNotLeader", err)
	}
}

func TestElection_ObserveSeesEveryLeader(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	const pfx = "/observe"
	ea := concurrency.NewElection(newSession(t, s), pfx)
	eb := concurrency.NewElection(newSession(t, s), pfx)
	ec := concurrency.NewElection(newSession(t, s), pfx)

	obsCtx, stop := context.WithCancel(ctx)
	defer stop()
	obs := concurrency.NewElection(newSession(t, s), pfx).Observe(obsCtx)

	if err := ea.Campaign(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	bc := make(chan error, 1)
	go func() { bc <- eb.Campaign(ctx, "b") }()
	waitForKeys(t, s, pfx, 2)
	cc := make(chan error, 1)
	go func() { cc <- ec.Campaign(ctx, "c") }()
	waitForKeys(t, s, pfx, 3)
	notYet(t, "queued Campaign", bc)

	// Go through all leaders before reading the observer: it must still report each one.
	if err := ea.Proclaim(ctx, "a2"); err != nil {
		t.Fatal(err)
	}
	if err := ea.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, "Campaign b", bc, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	notYet(t, "queued Campaign", cc)
	if err := eb.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, "Campaign c", cc, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		val string
		e   *concurrency.Election
	}{{"a", ea}, {"a2", ea}, {"b", eb}, {"c", ec}}
	for _, w := range want {
		select {
		case r, ok := <-obs:
			if !ok {
				t.Fatal("Observe closed early")
			}
			kv := r.Kvs[0]
			if string(kv.Value) != w.val {
				t.Fatalf("observed %q, want %q", kv.Value, w.val)
			}
			if w.e == ec && (string(kv.Key) != ec.Key() || kv.CreateRevision != ec.Rev()) {
				t.Fatalf("observed leader %s@%d, want %s@%d", kv.Key, kv.CreateRevision, ec.Key(), ec.Rev())
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Observe did not report %q", w.val)
		}
	}
	stop()
	for r := range obs {
		t.Fatalf("unexpected observation %q after the last leader", r.Kvs[0].Value)
	}
}

func TestElection_ObserveStartsWithCurrentLeader(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	e := concurrency.NewElection(newSession(t, s), "/current")
	if err := e.Campaign(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	if err := e.Proclaim(ctx, "now"); err != nil {
		t.Fatal(err)
	}
	obsCtx, stop := context.WithCancel(ctx)
	obs := e.Observe(obsCtx)
	r := <-obs
	if string(r.Kvs[0].Value) != "now" {
		t.Fatalf("first observation %q, want the current value", r.Kvs[0].Value)
	}
	stop()
	if _, ok := <-obs; ok {
		t.Fatal("Observe did not close when its context ended")
	}
}

func TestElection_CampaignCancelWithdraws(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	const pfx = "/withdraw"
	leader := concurrency.NewElection(newSession(t, s), pfx)
	if err := leader.Campaign(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	sess := newSession(t, s)
	e := concurrency.NewElection(sess, pfx)
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- e.Campaign(cctx, "b") }()
	waitForKeys(t, s, pfx, 2)
	cancel()
	if err := recv(t, "Campaign", errc, 3*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("Campaign: %v, want context.Canceled", err)
	}
	if e.Key() != "" {
		t.Fatalf("cancelled Campaign: Key %q", e.Key())
	}
	// If the cancel caught Campaign's first request in flight, the key goes in the background.
	waitForKeys(t, s, pfx, 1)
}

func TestElection_CampaignReturnsWhenSessionEnds(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	const pfx = "/elect-expire"
	leader := concurrency.NewElection(newSession(t, s), pfx)
	if err := leader.Campaign(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	sess := newSession(t, s)
	e := concurrency.NewElection(sess, pfx)
	errc := make(chan error, 1)
	go func() { errc <- e.Campaign(ctx, "b") }()
	waitForKeys(t, s, pfx, 2)
	sess.Orphan()
	if err := recv(t, "Campaign", errc, 3*time.Second); !errors.Is(err, concurrency.ErrSessionExpired) {
		t.Fatalf("Campaign: %v, want ErrSessionExpired", err)
	}
	if exists(t, s, keyOf(pfx, sess)) {
		t.Fatal("the orphaned candidate's key is still queued")
	}
}

func TestResumeElection(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	sess := newSession(t, s)
	e := concurrency.NewElection(sess, "/resume")
	if err := e.Campaign(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	resumed := concurrency.ResumeElection(sess, "/resume", e.Key(), e.Rev())
	if resumed.Key() != e.Key() || resumed.Rev() != e.Rev() {
		t.Fatalf("resumed Key/Rev %q/%d, want %q/%d", resumed.Key(), resumed.Rev(), e.Key(), e.Rev())
	}
	if err := resumed.Proclaim(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if v := value(t, s, e.Key()); v != "b" {
		t.Fatalf("value after resumed Proclaim = %q, want b", v)
	}
	if err := resumed.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Leader(ctx); !errors.Is(err, concurrency.ErrElectionNoLeader) {
		t.Fatalf("Leader after resumed Resign: %v, want ErrElectionNoLeader", err)
	}
}

// TestElection_ObserveSurvivesCompaction compacts the history an observer still has to walk:
// it must skip to the current leader rather than fail.
func TestElection_ObserveSurvivesCompaction(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	const pfx = "/compacted"
	ea := concurrency.NewElection(newSession(t, s), pfx)
	eb := concurrency.NewElection(newSession(t, s), pfx)
	if err := ea.Campaign(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	obsCtx, stop := context.WithCancel(ctx)
	defer stop()
	obs := ea.Observe(obsCtx)

	bc := make(chan error, 1)
	go func() { bc <- eb.Campaign(ctx, "b") }()
	waitForKeys(t, s, pfx, 2)
	if err := ea.Proclaim(ctx, "a2"); err != nil {
		t.Fatal(err)
	}
	if err := ea.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, "Campaign b", bc, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// The observer is most likely still stuck on reporting a, with a2 and b ahead of it.
	resp, err := s.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	// Whether a2 is reported depends on whether the observer read it before the compaction;
	// what it reports must be in order and end with the current leader.
	history := []string{"a", "a2", "b"}
	var seen []string
	for len(seen) == 0 || seen[len(seen)-1] != "b" {
		select {
		case r := <-obs:
			v := string(r.Kvs[0].Value)
			for len(history) > 0 && history[0] != v {
				history = history[1:]
			}
			if len(history) == 0 {
				t.Fatalf("observed %q after %v, out of order", v, seen)
			}
			seen = append(seen, v)
		case <-time.After(5 * time.Second):
			t.Fatalf("Observe reported %v, never the current leader b", seen)
		}
	}
	t.Logf("observed %v", seen)
}
