package ember_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

func TestStore_TransferLeadership(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	old := c.Leader()
	target := c.Followers()[0]
	// Asked on a follower, the transfer runs on the leader.
	if err := target.Store().TransferLeadership(ctx, target.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the target leads", func() bool { return target.Store().IsLeader() })
	if old.Store().IsLeader() {
		t.Fatal("old leader still leads")
	}
	if err := target.Store().TransferLeadership(ctx, "ghost"); !errors.Is(err, ember.ErrMemberNotFound) {
		t.Fatalf("transfer to an unknown member: %v", err)
	}
	// "" picks any voter.
	if err := old.Store().TransferLeadership(ctx, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "leadership moved on", func() bool { return !target.Store().IsLeader() && c.Leader() != nil })
}

// WithSlog receives ember's and raft's logs; raft's own chatter comes through as structured
// records naming the member.
func TestStore_WithSlog(t *testing.T) {
	var buf logBuffer
	s := openMemStore(t, ember.WithSlog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if _, err := s.Put(ctxFor(t, 10*time.Second), "k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	out := buf.String()
	if !strings.Contains(out, "entering leader state") || !strings.Contains(out, "member="+s.ID()) {
		t.Fatalf("slog output lacks raft's leader election or the member ID:\n%s", out)
	}
}
