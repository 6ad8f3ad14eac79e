package ember_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// perOpen returns an Option that applies opts[i] to the i-th Open it is passed to. NewCluster
// gives its options to every member and opens the members one at a time in ID order, so
// perOpen(WithMetricsRegisterer(r1), WithMetricsRegisterer(r2), ...) gives m1 r1, m2 r2, and so
// on. The type parameters let a test build an ember.Option, whose argument type is unexported.
func perOpen[O ~func(C) error, C any](opts ...O) O {
	var n atomic.Int32
	return func(c C) error {
		i := int(n.Add(1)) - 1
		if i >= len(opts) {
			return fmt.Errorf("perOpen: open #%d, but only %d options", i+1, len(opts))
		}
		return opts[i](c)
	}
}

// metricsCluster starts a 3-member cluster in which every member registers on its own registry,
// returned by member ID.
func metricsCluster(t *testing.T, opts ...ember.Option) (*embertest.Cluster, map[string]*prometheus.Registry) {
	t.Helper()
	const n = 3
	var regs []*prometheus.Registry
	var regOpts []ember.Option
	for range n {
		r := prometheus.NewRegistry()
		regs = append(regs, r)
		regOpts = append(regOpts, ember.WithMetricsRegisterer(r))
	}
	c := embertest.NewCluster(t, n, append(opts, perOpen(regOpts...))...)
	byID := map[string]*prometheus.Registry{}
	for i, m := range c.Members() {
		byID[m.ID] = regs[i]
	}
	return c, byID
}

// metric reads the series called name from g, summed over those whose labels include labels
// (name, value pairs): a counter's or gauge's value, or a histogram's count of observations. A
// metric g does not have fails the test.
func metric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !found {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
		return sum
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// waitMetric waits until cond holds for the value of a metric.
func waitMetric(t *testing.T, g prometheus.Gatherer, what, name string, cond func(float64) bool, labels ...string) {
	t.Helper()
	var v float64
	deadline := time.Now().Add(15 * time.Second)
	for {
		if v = metric(t, g, name, labels...); cond(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s%v = %v", what, name, labels, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func atLeast(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }
func equal(n float64) func(float64) bool   { return func(v float64) bool { return v == n } }

// Every metric moves as the cluster works: writes through the leader and a follower,
// linearizable reads, a watch, a kept-alive lease, a compaction, snapshots.
func TestMetrics_MoveUnderLoad(t *testing.T) {
	c, regs := metricsCluster(t, ember.WithSnapshotThreshold(16), ember.WithSnapshotInterval(50*time.Millisecond))
	ctx := ctxFor(t, 2*time.Minute)
	leader := c.Leader()
	f := c.Followers()[0]
	lr, fr := regs[leader.ID], regs[f.ID]

	committed0, applied0 := map[string]float64{}, map[string]float64{}
	for id, reg := range regs {
		waitMetric(t, reg, id, "etcd_server_has_leader", equal(1))
		waitMetric(t, reg, id, "etcd_server_leader_changes_seen_total", atLeast(1))
		committed0[id] = metric(t, reg, "etcd_server_proposals_committed_total")
		applied0[id] = metric(t, reg, "etcd_server_proposals_applied_total")
	}
	inUse0 := metric(t, lr, "etcd_mvcc_db_total_size_in_use_in_bytes")

	// 20 puts, half through the follower, over 10 keys: the compaction below has 10 old
	// versions to drop.
	const puts = 20
	for i := range puts {
		s := leader.Store()
		if i%2 == 1 {
			s = f.Store()
		}
		if _, err := s.Put(ctx, fmt.Sprintf("m/%d", i%10), strings.Repeat("x", 100)); err != nil {
			t.Fatal(err)
		}
	}
	for id, reg := range regs {
		waitMetric(t, reg, id, "etcd_server_proposals_committed_total", atLeast(committed0[id]+puts))
		waitMetric(t, reg, id, "etcd_server_proposals_applied_total", atLeast(applied0[id]+puts))
	}
	inUse := metric(t, lr, "etcd_mvcc_db_total_size_in_use_in_bytes")
	if inUse < inUse0+puts*100 {
		t.Fatalf("in use %v after %d puts of 100 bytes, %v before", inUse, puts, inUse0)
	}
	if v := metric(t, fr, "ember_forwarded_requests_total", "method", "write"); v < puts/2 {
		t.Fatalf("follower forwarded %v writes, want >= %d", v, puts/2)
	}
	if v := metric(t, lr, "ember_forwarded_requests_total"); v != 0 {
		t.Fatalf("leader forwarded %v requests", v)
	}

	// Linearizable reads on the follower wait for a read index fetched from the leader.
	wait0 := metric(t, fr, "ember_read_index_wait_seconds")
	for range 5 {
		if _, err := f.Store().Get(ctx, "m/0"); err != nil {
			t.Fatal(err)
		}
	}
	if v := metric(t, fr, "ember_read_index_wait_seconds"); v < wait0+5 {
		t.Fatalf("read index waits %v after 5 reads, %v before", v, wait0)
	}
	if v := metric(t, fr, "ember_forwarded_requests_total", "method", "read_index"); v < 1 {
		t.Fatalf("follower fetched %v read indexes from the leader", v)
	}

	wctx, wcancel := context.WithCancel(ctx)
	wc := f.Store().Watch(wctx, "m/", ember.WithPrefix())
	waitMetric(t, fr, "watch open", "ember_watchers", equal(1))
	wcancel()
	for range wc {
	}
	waitMetric(t, fr, "watch cancelled", "ember_watchers", equal(0))

	g, err := f.Store().Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	if _, err := f.Store().KeepAlive(kctx, g.ID); err != nil {
		t.Fatal(err)
	}
	for id, reg := range regs {
		waitMetric(t, reg, id, "ember_leases", equal(1))
	}
	if v := metric(t, fr, "ember_forwarded_requests_total", "method", "keepalive"); v < 1 {
		t.Fatalf("follower forwarded %v keepalives", v)
	}

	last, err := leader.Store().Put(ctx, "m/last", "x")
	if err != nil {
		t.Fatal(err)
	}
	beforeCompact := metric(t, lr, "etcd_mvcc_db_total_size_in_use_in_bytes")
	// Physical: the removal, which frees the size, runs in steps after the apply.
	if _, err := leader.Store().Compact(ctx, last.Header.Revision, ember.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if v := metric(t, lr, "etcd_mvcc_db_total_size_in_use_in_bytes"); v >= beforeCompact {
		t.Fatalf("in use %v after compaction, %v before", v, beforeCompact)
	}

	for id, reg := range regs {
		waitMetric(t, reg, id+" idle", "etcd_server_proposals_pending", equal(0))
		for _, name := range []string{"etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes",
			"etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds"} {
			if v := metric(t, reg, name); v <= 0 {
				t.Fatalf("%s: %s = %v", id, name, v)
			}
		}
		waitMetric(t, reg, id, "etcd_debugging_snap_save_total_duration_seconds", atLeast(1))
	}
}

// A proposal fails when it cannot commit, here because its member is cut off from the leader; a
// committed proposal whose result is an error does not.
func TestMetrics_FailedProposals(t *testing.T) {
	c, regs := metricsCluster(t)
	ctx := ctxFor(t, time.Minute)
	f := c.Followers()[0]
	fr := regs[f.ID]
	applied0 := metric(t, fr, "etcd_server_proposals_applied_total")

	if _, err := f.Store().Revoke(ctx, 12345); !errors.Is(err, ember.ErrLeaseNotFound) {
		t.Fatalf("revoke of an unknown lease: %v", err)
	}
	waitMetric(t, fr, "revoke applied", "etcd_server_proposals_applied_total", atLeast(applied0+1))
	if v := metric(t, fr, "etcd_server_proposals_failed_total"); v != 0 {
		t.Fatalf("failed = %v after a committed revoke of an unknown lease", v)
	}

	changes := metric(t, fr, "etcd_server_leader_changes_seen_total")
	c.Partition(f.ID)
	waitMetric(t, fr, "partitioned", "etcd_server_has_leader", equal(0))
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err := f.Store().Put(pctx, "cut", "off")
	cancel()
	if !errors.Is(err, ember.ErrNoLeader) && !errors.Is(err, ember.ErrTimeout) {
		t.Fatalf("put on a partitioned member: %v", err)
	}
	if v := metric(t, fr, "etcd_server_proposals_failed_total"); v != 1 {
		t.Fatalf("failed = %v after a put that could not commit", v)
	}
	if v := metric(t, fr, "etcd_server_proposals_pending"); v != 0 {
		t.Fatalf("pending = %v after the failed put", v)
	}
	c.Heal()
	waitMetric(t, fr, "healed", "etcd_server_has_leader", equal(1))
	waitMetric(t, fr, "leader seen again", "etcd_server_leader_changes_seen_total", atLeast(changes+1))
}

// Without a registerer the store works and registers nothing, not even on the global registry.
func TestMetrics_NoRegisterer(t *testing.T) {
	s, err := ember.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := ctxFor(t, 30*time.Second)
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "etcd_") || strings.HasPrefix(mf.GetName(), "ember_") {
			t.Fatalf("%s on the default registry", mf.GetName())
		}
	}
}

// Two stores in one process, each with its own registry, report their own state: only the
// persistent one times log writes.
func TestMetrics_TwoStoresTwoRegistries(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a, err := ember.Open(t.TempDir(), ember.WithMetricsRegisterer(regA))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := ember.Open("", ember.WithMetricsRegisterer(regB))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, s := range []*ember.Store{a, b} {
		if err := s.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	appliedB := metric(t, regB, "etcd_server_proposals_applied_total")
	for i := range 5 {
		if _, err := a.Put(ctx, fmt.Sprint(i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	if va, vb := metric(t, regA, "etcd_server_proposals_applied_total"), metric(t, regB, "etcd_server_proposals_applied_total"); vb != appliedB || va < vb+5 {
		t.Fatalf("applied: a %v, b %v (b %v before a's puts)", va, vb, appliedB)
	}
	for name, reg := range map[string]*prometheus.Registry{"a": regA, "b": regB} {
		waitMetric(t, reg, name, "etcd_server_has_leader", equal(1))
	}
	if v := metric(t, regA, "etcd_disk_wal_fsync_duration_seconds"); v == 0 {
		t.Fatal("persistent store timed no log write")
	}
	if v := metric(t, regB, "etcd_disk_wal_fsync_duration_seconds"); v != 0 {
		t.Fatalf("in-memory store timed %v log writes", v)
	}
}

// A registerer serves one open store at a time: a second Open on it fails clearly and leaves the
// first store's metrics alone, and a closed store frees its registerer for a reopened one. Stores
// that share a registry through registerers wrapped with distinct labels all work.
func TestMetrics_RegistererInUse(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	open := func(reg prometheus.Registerer) *ember.Store {
		t.Helper()
		s, err := ember.Open("", ember.WithMetricsRegisterer(reg))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if err := s.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		return s
	}
	reg := prometheus.NewRegistry()
	a := open(reg)
	b, err := ember.Open("", ember.WithMetricsRegisterer(reg))
	if !errors.As(err, &prometheus.AlreadyRegisteredError{}) || b != nil {
		t.Fatalf("second Open on a registerer in use: %v", err)
	}
	waitMetric(t, reg, "first store after the refused Open", "etcd_server_has_leader", equal(1))
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 0 {
		t.Fatalf("after Close: %d metric families left, %v", len(mfs), err)
	}
	open(reg)
	waitMetric(t, reg, "reopened store", "etcd_server_has_leader", equal(1))

	shared := prometheus.NewRegistry()
	for _, name := range []string{"x", "y"} {
		open(prometheus.WrapRegistererWith(prometheus.Labels{"store": name}, shared))
	}
	for _, name := range []string{"x", "y"} {
		waitMetric(t, shared, "store "+name, "etcd_server_has_leader", equal(1), "store", name)
	}
}
