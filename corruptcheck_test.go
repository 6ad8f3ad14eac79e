package ember_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// alarmsOf lists the raised alarms as s sees them.
func alarmsOf(t testing.TB, s *ember.Store) []ember.AlarmMember {
	t.Helper()
	r, err := s.AlarmList(ctxFor(t, 20*time.Second))
	if err != nil {
		t.Fatalf("alarm list: %v", err)
	}
	return r.Alarms
}

// With the periodic hash check on, a follower whose state diverged (a put applied outside the
// log) gets a CORRUPT alarm that every member lists. While it is raised the cluster refuses
// every write with ErrCorrupt, a definite error, as etcd's "corrupt cluster", and serves reads;
// once the member is stopped and the alarm disarmed, writes are accepted again.
func TestCluster_CorruptCheck_RaisesAlarmForDivergedMember(t *testing.T) {
	c := embertest.NewCluster(t, 3, ember.WithCorruptCheckInterval(100*time.Millisecond))
	ctx := ctxFor(t, time.Minute)
	leader := c.Leader().Store()
	lease, err := leader.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := leader.Put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	bad := c.Followers()[0]
	good := c.Followers()[1]
	ember.DivergeState(bad.Store(), "k0", "damaged")
	want := []ember.AlarmMember{{MemberID: bad.ID, Alarm: ember.AlarmCorrupt}}
	waitFor(t, 20*time.Second, "CORRUPT raised for "+bad.ID, func() bool {
		return slices.Equal(alarmsOf(t, good.Store()), want)
	})

	writes := []struct {
		name string
		do   func(s *ember.Store) error
	}{
		{"put", func(s *ember.Store) error { _, err := s.Put(ctx, "new", "v"); return err }},
		{"delete", func(s *ember.Store) error { _, err := s.Delete(ctx, "k1"); return err }},
		{"txn that writes in its else branch", func(s *ember.Store) error {
			_, err := s.Txn(ctx).If(ember.Compare(ember.Version("k1"), ">", 0)).Else(ember.OpPut("x", "v")).Commit()
			return err
		}},
		{"compact", func(s *ember.Store) error { _, err := s.Compact(ctx, 2); return err }},
		{"grant", func(s *ember.Store) error { _, err := s.Grant(ctx, 60); return err }},
		{"revoke", func(s *ember.Store) error { _, err := s.Revoke(ctx, lease.ID); return err }},
	}
	for _, m := range []*embertest.Member{c.Leader(), good} {
		for _, w := range writes {
			err := w.do(m.Store())
			if !errors.Is(err, ember.ErrCorrupt) || errors.Is(err, ember.ErrTimeout) {
				t.Fatalf("%s on %s under CORRUPT: %v, want ErrCorrupt (and not ErrTimeout)", w.name, m.ID, err)
			}
		}
		if r, err := m.Store().Get(ctx, "k1"); err != nil || len(r.Kvs) != 1 {
			t.Fatalf("get on %s under CORRUPT: %v, %v", m.ID, r, err)
		}
		r, err := m.Store().Txn(ctx).If(ember.Compare(ember.Version("k1"), ">", 0)).Then(ember.OpGet("k2")).Commit()
		if err != nil || !r.Succeeded {
			t.Fatalf("read-only txn on %s under CORRUPT: %+v, %v", m.ID, r, err)
		}
	}

	// The check would raise it again at once while the member runs: take it out first.
	c.Stop(bad.ID)
	if err := good.Store().AlarmDisarm(ctx, bad.ID, ember.AlarmCorrupt); err != nil {
		t.Fatal(err)
	}
	if got := alarmsOf(t, c.Leader().Store()); len(got) != 0 {
		t.Fatalf("alarms after disarming: %+v", got)
	}
	if _, err := good.Store().Put(ctx, "new", "v"); err != nil {
		t.Fatalf("put after disarming: %v", err)
	}
}

// Members that applied the same log are never reported, with writes, compactions and lease
// grants going on while the check runs every few milliseconds; a member that diverges then is.
func TestCluster_CorruptCheck_EqualMembersNeverRaise(t *testing.T) {
	c := embertest.NewCluster(t, 3, ember.WithCorruptCheckInterval(20*time.Millisecond))
	ctx := ctxFor(t, time.Minute)
	stores := []*ember.Store{c.Members()[0].Store(), c.Members()[1].Store(), c.Members()[2].Store()}
	deadline := time.Now().Add(1500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		s := stores[i%3]
		r, err := s.Put(ctx, fmt.Sprintf("k%d", i%20), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		if i%25 == 24 {
			if _, err := s.Compact(ctx, r.Header.Revision-5); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Grant(ctx, 60); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(100 * time.Millisecond) // a few checks after the last write
	for _, s := range stores {
		if got := alarmsOf(t, s); len(got) != 0 {
			t.Fatalf("alarms on %s with equal members: %+v", s.ID(), got)
		}
	}
	// The check was running all along: a divergence is reported.
	bad := c.Followers()[0]
	ember.DivergeState(bad.Store(), "k0", "damaged")
	want := []ember.AlarmMember{{MemberID: bad.ID, Alarm: ember.AlarmCorrupt}}
	waitFor(t, 20*time.Second, "CORRUPT raised for "+bad.ID, func() bool {
		return slices.Equal(alarmsOf(t, c.Leader().Store()), want)
	})
}

func TestOpen_WithCorruptCheckInterval_Negative(t *testing.T) {
	s, err := ember.Open("", ember.WithCorruptCheckInterval(-time.Second))
	if err == nil {
		s.Close()
		t.Fatal("Open with a negative corrupt check interval succeeded")
	}
}

// One periodic hash check on a 3-member cluster holding b.N-independent data: 10,000 keys of
// 100 bytes, 5 versions each. Each check hashes the history on all three members.
func BenchmarkCorruptCheck(b *testing.B) {
	c := embertest.NewCluster(b, 3)
	ctx := ctxFor(b, 5*time.Minute)
	leader := c.Leader().Store()
	val := strings.Repeat("v", 100)
	for v := range 5 {
		ops := make([]ember.Op, 0, 100)
		for i := range 10000 {
			ops = append(ops, ember.OpPut(fmt.Sprintf("key/%05d", i), val+fmt.Sprint(v)))
			if len(ops) == cap(ops) {
				if _, err := leader.Txn(ctx).Then(ops...).Commit(); err != nil {
					b.Fatal(err)
				}
				ops = ops[:0]
			}
		}
	}
	for _, m := range c.Members() { // every member has applied everything
		if _, err := m.Store().Get(ctx, "key/00000"); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if err := ember.CorruptCheck(ctx, leader); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got := alarmsOf(b, leader); len(got) != 0 {
		b.Fatalf("alarms: %+v", got)
	}
}
