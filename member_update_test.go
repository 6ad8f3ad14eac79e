package ember_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// memberAddrs lists the members as s sees them: ID → address and suffrage.
func memberAddrs(t testing.TB, s *ember.Store) map[string]ember.Member {
	t.Helper()
	ms, err := s.Members(ctxFor(t, 20*time.Second))
	if err != nil {
		t.Fatalf("members: %v", err)
	}
	out := map[string]ember.Member{}
	for _, m := range ms {
		m.IsLeader = false
		out[m.ID] = m
	}
	return out
}

func TestStore_UpdateMember(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	// A learner that is not running: changing its address costs nothing.
	if err := c.Leader().Store().AddLearner(ctx, "l9", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	m1, m2 := c.Member("m1"), c.Member("m2")
	tests := []struct {
		name     string
		id, addr string
		wantErr  error
		want     ember.Member // the member afterwards
	}{
		{name: "unknown ID", id: "nope", addr: "127.0.0.1:3", wantErr: ember.ErrMemberNotFound},
		{name: "address of another member", id: "l9", addr: m1.Addr, wantErr: ember.ErrMemberExists,
			want: ember.Member{ID: "l9", Addr: "127.0.0.1:1", IsLearner: true}},
		{name: "same address", id: "m2", addr: m2.Addr, want: ember.Member{ID: "m2", Addr: m2.Addr}},
		{name: "learner stays a learner", id: "l9", addr: "127.0.0.1:2",
			want: ember.Member{ID: "l9", Addr: "127.0.0.1:2", IsLearner: true}},
		{name: "empty address", id: "l9", addr: "", wantErr: errAny,
			want: ember.Member{ID: "l9", Addr: "127.0.0.1:2", IsLearner: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Through a follower: the change is sent on to the leader.
			err := c.Followers()[0].Store().UpdateMember(ctx, tt.id, tt.addr)
			switch {
			case tt.wantErr == errAny && err == nil, tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("UpdateMember(%q, %q) = %v, want %v", tt.id, tt.addr, err, tt.wantErr)
			}
			got := memberAddrs(t, c.Leader().Store())
			if len(got) != 4 {
				t.Fatalf("members: %+v", got)
			}
			if tt.want.ID != "" && got[tt.want.ID] != tt.want {
				t.Fatalf("member %s = %+v, want %+v", tt.want.ID, got[tt.want.ID], tt.want)
			}
		})
	}
}

// errAny stands for "some error" in a table: the call is refused before reaching the cluster.
var errAny = errors.New("any error")

// A voter moved to a new address stays a voter, and the cluster replicates to it there.
func TestCluster_UpdateMember_VoterMovesAddress(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	moved := c.Followers()[0]
	c.Stop(moved.ID)
	newAddr := embertest.FreeAddr(t)
	if err := c.Leader().Store().UpdateMember(ctx, moved.ID, newAddr); err != nil {
		t.Fatalf("update %s to %s: %v", moved.ID, newAddr, err)
	}
	if _, err := c.Leader().Store().Put(ctx, "while-away", "1"); err != nil {
		t.Fatal(err)
	}
	moved.Addr = newAddr
	c.Network().SetAddr(newAddr, moved.ID)
	s := c.Restart(moved.ID)
	if _, err := c.Leader().Store().Put(ctx, "after-move", "2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the moved member to replicate", func() bool {
		g, err := s.Get(ctx, "after-move", ember.WithSerializable())
		return err == nil && len(g.Kvs) == 1
	})
	got := memberAddrs(t, s)[moved.ID]
	if want := (ember.Member{ID: moved.ID, Addr: newAddr}); got != want {
		t.Fatalf("moved member = %+v, want %+v", got, want)
	}
	// It votes at its new address: with it, a member may stop and a quorum is left.
	other := c.Followers()
	for _, f := range other {
		if f.ID != moved.ID {
			c.Stop(f.ID)
			break
		}
	}
	if _, err := c.Leader().Store().Put(ctxFor(t, 30*time.Second), "quorum-with-moved", "3"); err != nil {
		t.Fatalf("write with the moved voter as the quorum's second member: %v", err)
	}
}
