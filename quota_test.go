package ember_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// A write refused by the quota raises NOSPACE on every member, as etcd: growth stays refused
// everywhere, even after compaction has freed the space, until the alarm is disarmed.
func TestStore_QuotaRaisesNoSpaceUntilDisarmed(t *testing.T) {
	const quota = 48 << 10
	c := embertest.NewCluster(t, 3, ember.WithQuotaBackendBytes(quota))
	ctx := ctxFor(t, time.Minute)
	l, f := c.Leader().Store(), c.Followers()[0].Store()
	lease, err := l.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Put(ctx, "leased", "v", ember.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	value := strings.Repeat("x", 1024)
	var full bool
	for i := 0; i < 200 && !full; i++ {
		_, err := f.Put(ctx, "big", value)
		switch {
		case errors.Is(err, ember.ErrNoSpace):
			full = true
		case err != nil:
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("200 KiB of puts never hit a 48 KiB quota")
	}
	raised := waitNoSpaceEverywhere(t, c)
	// Growth is refused on every member and in every form.
	growth := []struct {
		name string
		do   func() error
	}{
		{"put on the leader", func() error { _, err := l.Put(ctx, "k", "v"); return err }},
		{"put on a follower", func() error { _, err := f.Put(ctx, "k", "v"); return err }},
		{"txn with a put in the else branch", func() error {
			_, err := f.Txn(ctx).If(ember.Compare(ember.Version("big"), ">", 0)).Else(ember.OpPut("k", "v")).Commit()
			return err
		}},
		{"lease grant", func() error { _, err := f.Grant(ctx, 60); return err }},
	}
	for _, g := range growth {
		if err := g.do(); !errors.Is(err, ember.ErrNoSpace) {
			t.Errorf("%s over quota: %v, want ErrNoSpace", g.name, err)
		}
	}
	// Everything that does not add data goes on.
	if _, err := f.Get(ctx, "big"); err != nil {
		t.Errorf("read over quota: %v", err)
	}
	if _, err := f.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Errorf("keepalive over quota: %v", err)
	}
	if _, err := f.Txn(ctx).Then(ember.OpDelete("nothing"), ember.OpGet("big")).Commit(); err != nil {
		t.Errorf("delete-only txn over quota: %v", err)
	}
	if _, err := l.Revoke(ctx, lease.ID); err != nil {
		t.Errorf("revoke over quota: %v", err)
	}
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Compacting drops the superseded versions of "big": the store is under quota again, but the
	// alarm still refuses growth.
	if _, err := f.Compact(ctx, st.Revision, ember.WithCompactPhysical()); err != nil {
		t.Fatalf("compact over quota: %v", err)
	}
	if st2, _ := l.Status(ctx); st2.DBSizeInUse >= quota {
		t.Fatalf("size in use %d after compaction, quota %d", st2.DBSizeInUse, quota)
	}
	if _, err := f.Put(ctx, "k", "v"); !errors.Is(err, ember.ErrNoSpace) {
		t.Fatalf("put under quota with NOSPACE raised: %v, want ErrNoSpace", err)
	}
	for _, a := range raised {
		if err := f.AlarmDisarm(ctx, a.MemberID, a.Alarm); err != nil {
			t.Fatalf("disarm %+v: %v", a, err)
		}
	}
	for _, m := range c.Members() {
		if r, err := m.Store().AlarmList(ctx); err != nil || len(r.Alarms) != 0 {
			t.Fatalf("%s: alarms after disarming: %+v, %v", m.ID, r, err)
		}
	}
	if _, err := f.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put after disarming: %v", err)
	}
}

// waitNoSpaceEverywhere waits until every running member lists NOSPACE, and returns the alarms
// (raised by whichever member led when the quota refused a write).
func waitNoSpaceEverywhere(t testing.TB, c *embertest.Cluster) []ember.AlarmMember {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	var alarms []ember.AlarmMember
	waitFor(t, 20*time.Second, "NOSPACE listed on every member", func() bool {
		alarms = nil
		for _, m := range c.Running() {
			r, err := m.Store().AlarmList(ctx)
			if err != nil || len(r.Alarms) == 0 {
				return false
			}
			for _, a := range r.Alarms {
				if a.Alarm != ember.AlarmNoSpace {
					t.Fatalf("%s lists %+v", m.ID, a)
				}
			}
			if alarms != nil && !slices.Equal(alarms, r.Alarms) {
				return false
			}
			alarms = r.Alarms
		}
		return true
	})
	return alarms
}

func TestStore_Status_ReportsQuota(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opt    int64
		wQuota int64
	}{
		{"default", 0, 2 << 30},
		{"set", 1 << 20, 1 << 20},
		{"disabled", -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := embertest.NewCluster(t, 1, ember.WithQuotaBackendBytes(tc.opt))
			st, err := c.Leader().Store().Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st.DBSizeQuota != tc.wQuota {
				t.Fatalf("DBSizeQuota = %d, want %d", st.DBSizeQuota, tc.wQuota)
			}
		})
	}
}

// NOSPACE is replicated state: a member that was away when it was raised gets it from the
// snapshot it installs (the alarm's log entry is truncated by then: the bolt log store truncates
// exactly, the WAL by whole 64 MiB segments), and every member still has
// it after the whole cluster restarts from its data dirs.
func TestStore_NoSpaceAlarm_SurvivesSnapshotInstallAndRestart(t *testing.T) {
	const quota = 32 << 10
	c := embertest.NewCluster(t, 3, ember.WithQuotaBackendBytes(quota),
		ember.WithLogStore(ember.LogStoreBolt), ember.WithSnapshotThreshold(64), ember.WithSnapshotInterval(100*time.Millisecond),
		ember.WithRaftConfig(func(rc *raft.Config) { rc.TrailingLogs = 16 }))
	ctx := ctxFor(t, 2*time.Minute)
	lagger := c.Followers()[0]
	c.Stop(lagger.ID)
	l := c.Leader().Store()
	value := strings.Repeat("x", 1024)
	for i := 0; ; i++ {
		_, err := l.Put(ctx, "big", value)
		if errors.Is(err, ember.ErrNoSpace) {
			break
		}
		if err != nil || i == 200 {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	raised := waitNoSpaceEverywhere(t, c)
	// Deletes go on under NOSPACE, and push the alarm's entry out of the log.
	for i := 0; i < 200; i++ {
		if _, err := l.Delete(ctx, fmt.Sprintf("nothing/%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := ember.TakeSnapshot(l); err != nil {
		t.Fatal(err)
	}
	s := c.Restart(lagger.ID)
	waitFor(t, 30*time.Second, "the lagging member to catch up", func() bool {
		r, err := s.AlarmList(ctx)
		return err == nil && slices.Equal(r.Alarms, raised)
	})
	if _, err := s.Put(ctx, "k", "v"); !errors.Is(err, ember.ErrNoSpace) {
		t.Fatalf("put through the member that installed a snapshot: %v, want ErrNoSpace", err)
	}

	for _, m := range c.Members() {
		c.Stop(m.ID)
	}
	for _, m := range c.Members() {
		c.Restart(m.ID)
	}
	c.WaitReady()
	for _, m := range c.Members() {
		r, err := m.Store().AlarmList(ctx)
		if err != nil || !slices.Equal(r.Alarms, raised) {
			t.Fatalf("%s after restart: alarms %+v, %v; want %+v", m.ID, r, err, raised)
		}
	}
}
