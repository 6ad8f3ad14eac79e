package ember_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/internal/writecheck"
)

// forwardReplyLost returns a 3-member cluster, a follower and the leader, where the leader's
// answers to the follower's forwarded writes vanish: the leader applies them, the follower never
// hears back.
func forwardReplyLost(t *testing.T) (c *embertest.Cluster, f, l *embertest.Member) {
	t.Helper()
	c = embertest.NewCluster(t, 3)
	l = c.Leader()
	f = c.Followers()[0]
	c.Network().SetFault(f.ID, l.ID, embertest.Fault{LostReplies: true})
	return c, f, l
}

// requireUnknownAndApplied checks that err reports an unknown outcome only, and that the write
// of key=val it answered was in fact applied on the leader: a definite error would have lied.
func requireUnknownAndApplied(t *testing.T, err error, l *embertest.Member, key, val string) {
	t.Helper()
	if got := writecheck.Classify(err); got != writecheck.Unknown {
		t.Errorf("write error %q is %v, want unknown (ErrTimeout and no definite sentinel)", err, got)
	}
	ctx := ctxFor(t, 10*time.Second)
	waitFor(t, 10*time.Second, "the write on the leader", func() bool {
		g, gerr := l.Store().Get(ctx, key, ember.WithSerializable())
		return gerr == nil && len(g.Kvs) == 1 && string(g.Kvs[0].Value) == val
	})
}

// TestStore_Put_ForwardedReplyLostIsUnknown: a forwarded write whose answer never comes, with
// the caller's deadline passing, may have been applied (it was): its error matches ErrTimeout
// and the deadline, not ErrNoLeader.
func TestStore_Put_ForwardedReplyLostIsUnknown(t *testing.T) {
	_, f, l := forwardReplyLost(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := f.Store().Put(ctx, "k", "v1")
	if !errors.Is(err, ember.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put: %v, want ErrTimeout wrapping context.DeadlineExceeded", err)
	}
	requireUnknownAndApplied(t, err, l, "k", "v1")
}

// TestStore_Put_MemberStopsMidForwardIsUnknown: a member that closes while its forwarded write
// is unanswered cannot know whether the leader applied it (it did): ErrTimeout, not ErrStopped.
func TestStore_Put_MemberStopsMidForwardIsUnknown(t *testing.T) {
	c, f, l := forwardReplyLost(t)
	errc := make(chan error, 1)
	go func() {
		_, err := f.Store().Put(ctxFor(t, time.Minute), "k", "v1")
		errc <- err
	}()
	ctx := ctxFor(t, 10*time.Second)
	waitFor(t, 10*time.Second, "the write on the leader", func() bool {
		g, err := l.Store().Get(ctx, "k", ember.WithSerializable())
		return err == nil && len(g.Kvs) == 1
	})
	c.Stop(f.ID)
	err := <-errc
	if !errors.Is(err, ember.ErrTimeout) || errors.Is(err, ember.ErrStopped) {
		t.Fatalf("Put: %v, want ErrTimeout and not ErrStopped", err)
	}
	requireUnknownAndApplied(t, err, l, "k", "v1")
}

// TestStore_RemoveMember_LeaderStopsMidChangeIsUnknown: a membership change in flight on a
// leader that stops has been replicated and may be committed by the next leader; whatever the
// retries then find (the member gone, the store stopped), the outcome is unknown.
func TestStore_RemoveMember_LeaderStopsMidChangeIsUnknown(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	l := c.Leader()
	fs := c.Followers()
	for _, f := range fs {
		// The followers receive the leader's entries; their acknowledgements vanish, so the
		// change cannot commit while this leader leads.
		c.Network().SetFault(l.ID, f.ID, embertest.Fault{LostReplies: true})
	}
	errc := make(chan error, 1)
	go func() { errc <- l.Store().RemoveMember(ctxFor(t, time.Minute), fs[1].ID) }()
	time.Sleep(200 * time.Millisecond)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Stop(l.ID)
	}()
	err := <-errc
	c.Heal()
	<-done
	if got := writecheck.Classify(err); got != writecheck.Unknown {
		t.Fatalf("RemoveMember: %v is %v, want unknown (ErrTimeout and no definite sentinel)", err, got)
	}
}
