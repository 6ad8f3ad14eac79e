package ember_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// authSummary describes the auth state a member has applied, for comparing members.
func authSummary(t testing.TB, s *ember.Store) string {
	t.Helper()
	return describeAuth(s.GatewayAuth())
}

func describeAuth(a *mvcc.Auth) string {
	out := fmt.Sprintf("enabled %v rev %d disabled %d;", a.Enabled, a.Rev, a.DisabledRev)
	for _, n := range a.UserNames() {
		u := a.Users[n]
		out += fmt.Sprintf(" user %s %q %v rev %d;", n, u.Password, u.Roles, u.Rev)
	}
	for _, n := range a.RoleNames() {
		out += fmt.Sprintf(" role %s %+v;", n, a.Roles[n].Perms)
	}
	return out
}

// TestGatewayAuth_Replicated: the auth state the etcd gateway changes is replicated state. A
// change proposed on a follower is applied everywhere (and a refusal comes back across the
// forwarding), it moves no KV revision, and it survives a snapshot installed by a member that
// joins after the log was compacted, a restart of every member, and a backup and restore.
func TestGatewayAuth_Replicated(t *testing.T) {
	// bbolt drops compacted entries at once (the WAL only whole segments), so that the joiner
	// below gets a snapshot.
	c := embertest.NewCluster(t, 3, ember.WithLogStore(ember.LogStoreBolt), ember.WithSnapshotThreshold(64),
		ember.WithSnapshotInterval(100*time.Millisecond), ember.WithRaftConfig(func(rc *raft.Config) { rc.TrailingLogs = 16 }))
	ctx := ctxFor(t, 2*time.Minute)
	l, f := c.Leader().Store(), c.Followers()[0].Store()
	put, err := l.Put(ctx, "k", "v")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []*wire.Auth{
		{Op: wire.AuthRoleAdd, Name: "root"},
		{Op: wire.AuthUserAdd, Name: "root", Password: []byte("hash-of-root")},
		{Op: wire.AuthUserGrantRole, Name: "root", Role: "root"},
		{Op: wire.AuthRoleAdd, Name: "reader"},
		{Op: wire.AuthRoleGrantPermission, Name: "reader", Key: []byte("a"), End: []byte{0}, PermType: wire.PermRead},
		{Op: wire.AuthUserAdd, Name: "alice", Password: []byte("hash-of-alice")},
		{Op: wire.AuthUserGrantRole, Name: "alice", Role: "reader"},
		{Op: wire.AuthEnable},
	} {
		if _, code, err := f.GatewayAuthPropose(ctx, cmd); err != nil || code != wire.CodeOK {
			t.Fatalf("%+v: code %d, %v", cmd, code, err)
		}
	}
	if _, code, err := f.GatewayAuthPropose(ctx, &wire.Auth{Op: wire.AuthUserAdd, Name: "alice"}); err != nil || code != wire.CodeAuthUserExists {
		t.Fatalf("adding alice twice through a follower: code %d, %v; want CodeAuthUserExists", code, err)
	}
	a, h, err := l.GatewayAuthView(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.Revision != put.Header.Revision {
		t.Fatalf("KV revision %d after the auth changes, want %d: auth changes must not consume revisions", h.Revision, put.Header.Revision)
	}
	if !a.Enabled || a.Rev != 8 || !a.Permitted("alice", []byte("b"), nil, false) || a.Permitted("alice", []byte("b"), nil, true) {
		t.Fatalf("auth state on the leader: %s", describeAuth(a))
	}
	want := describeAuth(a)
	for _, m := range c.Running() {
		waitFor(t, 10*time.Second, m.ID+" applies the auth changes", func() bool { return authSummary(t, m.Store()) == want })
	}

	// Compact the log past the auth changes, then let a new member join: it can only get them
	// from a snapshot.
	for i := range 100 {
		if _, err := l.Put(ctx, fmt.Sprintf("fill/%d", i%10), "v"); err != nil {
			t.Fatal(err)
		}
	}
	if err := ember.TakeSnapshot(l); err != nil {
		t.Fatal(err)
	}
	m4 := c.Join("m4", ember.WithLogStore(ember.LogStoreBolt))
	waitFor(t, 30*time.Second, "the joiner installs the snapshot", func() bool { return authSummary(t, m4.Store()) == want })

	for _, m := range c.Members() {
		c.Stop(m.ID)
	}
	for _, m := range c.Members() {
		c.Restart(m.ID)
	}
	c.WaitReady()
	for _, m := range c.Running() {
		if got := authSummary(t, m.Store()); got != want {
			t.Fatalf("%s after a restart: %s, want %s", m.ID, got, want)
		}
	}

	var backup bytes.Buffer
	if err := c.Leader().Store().Snapshot(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if err := ember.Restore(bytes.NewReader(backup.Bytes()), dir, ember.WithNodeID("solo")); err != nil {
		t.Fatal(err)
	}
	s, err := ember.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if got := authSummary(t, s); got != want {
		t.Fatalf("restored from a backup: %s, want %s", got, want)
	}
	if !slices.Equal(s.GatewayAuth().UserNames(), []string{"alice", "root"}) {
		t.Fatalf("users after restore: %v", s.GatewayAuth().UserNames())
	}
}
