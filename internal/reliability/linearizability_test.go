package reliability

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/internal/syncbuf"
	"github.com/ember-kv/ember/internal/watchcheck"
	"github.com/ember-kv/ember/internal/writecheck"
)

// installLogger logs the members' info lines into buf, where snapshotInstalls counts raft's
// notices of installed snapshots.
func installLogger(buf *syncbuf.Buffer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: buf, Level: hclog.Info})
}

// snapshotInstalls counts the snapshots members installed from their leader, from the lines
// hashicorp/raft logs at info level when it has.
func snapshotInstalls(buf *syncbuf.Buffer) int {
	return strings.Count(buf.String(), "Installed remote snapshot")
}

// Compaction during G1 runs, for the watchers' sake.
const (
	compactLag   = 500 // revisions kept behind the current one
	compactEvery = 300 * time.Millisecond
)

// g1Fault is the one fault of a G1 run.
type g1Fault struct {
	name string
	size int // members in the CI tier; the soak tier runs every fault on 3 and 5
	// inject starts the fault, avoiding member spare when it has a choice, and returns the
	// members it affects and how to heal it.
	inject func(c *embertest.Cluster, spare string) (faulted []string, heal func())
}

// g1Options configure the members of a fault's runs beyond newCluster's defaults.
var g1Options = map[string][]ember.Option{
	"leader-kill-bolt":            {ember.WithLogStore(ember.LogStoreBolt)},
	"follower-partition-snapshot": snapshotOptions,
	// m1 keeps the longest leader lease raft allows (as long as its heartbeat timeout; longer
	// would slow its heartbeats, sent every tenth of it, past the followers' election timeout):
	// a deposed m1 believes it leads for 5 s into the fault, seconds after the voters elected
	// another leader, so the run does not depend on winning that race. Its election timeout is
	// as long, so it leads only when handed leadership (g1Setup).
	"leader-learner-partition": {ember.WithRaftConfig(func(rc *raft.Config) {
		if rc.LocalID == "m1" {
			rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 5*time.Second, 5*time.Second, 5*time.Second
		}
	})},
}

// g1Learners are the members a fault's setup joins as learners on purpose: they stay learners.
var g1Learners = map[string][]string{"leader-learner-partition": {"l1"}}

// g1Setup prepares the cluster of a fault's runs before the traffic starts.
var g1Setup = map[string]func(t testing.TB, c *embertest.Cluster){
	"leader-learner-partition": func(t testing.TB, c *embertest.Cluster) {
		c.Join("l1", ember.WithLearner())
		waitFor(t, 30*time.Second, "m1 leading", func() bool {
			if c.Member("m1").Store().IsLeader() {
				return true
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c.Leader().Store().TransferLeadership(ctx, "m1")
			return false
		})
	},
}

// snapshotOptions make the leader snapshot and truncate its log every few dozen entries, so that
// a member kept behind for a second or more can only catch up by installing a snapshot. On the
// bbolt log store: raft-wal serves entries below a truncated head until their whole (64 MiB)
// segment is deleted, so on the default store a member that far behind still catches up from
// the log.
var snapshotOptions = []ember.Option{
	ember.WithLogStore(ember.LogStoreBolt),
	ember.WithSnapshotThreshold(32), ember.WithSnapshotInterval(50 * time.Millisecond),
	ember.WithRaftConfig(func(rc *raft.Config) { rc.TrailingLogs = 8 }),
}

// g1InstallsSnapshot names the faults whose runs must make a member install a snapshot; the run
// fails if none did, since it would prove nothing about snapshot installs.
var g1InstallsSnapshot = map[string]bool{"follower-partition-snapshot": true}

// g1RemovesMember names the faults that take the members they fault out of the configuration.
var g1RemovesMember = map[string]bool{"member-replace": true}

var g1Faults = []g1Fault{
	{"leader-partition", 5, func(c *embertest.Cluster, _ string) ([]string, func()) {
		l := c.Leader().ID
		isolate(c, l)
		return []string{l}, c.Network().HealAll
	}},
	{"follower-partition", 3, func(c *embertest.Cluster, spare string) ([]string, func()) {
		f := follower(c, spare)
		isolate(c, f)
		return []string{f}, c.Network().HealAll
	}},
	// The same with snapshotOptions: the healed follower installs a snapshot while its watchers
	// (some catching up from the past) run.
	{"follower-partition-snapshot", 3, func(c *embertest.Cluster, spare string) ([]string, func()) {
		f := follower(c, spare)
		isolate(c, f)
		return []string{f}, c.Network().HealAll
	}},
	{"oneway-cut-to-leader", 3, func(c *embertest.Cluster, _ string) ([]string, func()) {
		// The leader still sends, and hears nothing back.
		l := c.Leader().ID
		toward(c, l, embertest.Fault{Blackhole: true})
		return []string{l}, c.Network().HealAll
	}},
	{"lost-replies-from-leader", 5, func(c *embertest.Cluster, _ string) ([]string, func()) {
		// Forwarded writes, read indexes and keepalives reach the leader and are served; the
		// answers never come back.
		l := c.Leader().ID
		toward(c, l, embertest.Fault{LostReplies: true})
		return []string{l}, c.Network().HealAll
	}},
	{"leader-learner-partition", 3, func(c *embertest.Cluster, _ string) ([]string, func()) {
		// The leader keeps the learner and loses every voter. Every member spends a while as a
		// learner when it joins, and a learner's heartbeat ack must not stand in for a voter's.
		l := c.Leader().ID
		side := []string{l, "l1"}
		for _, m := range c.Members() {
			if !slices.Contains(side, m.ID) {
				for _, id := range side {
					c.Network().SetFault(id, m.ID, embertest.Fault{Cut: true})
					c.Network().SetFault(m.ID, id, embertest.Fault{Cut: true})
				}
			}
		}
		return side, c.Network().HealAll
	}},
	{"delay-jitter", 3, func(c *embertest.Cluster, _ string) ([]string, func()) {
		everywhere(c, embertest.Fault{Delay: 75 * time.Millisecond, Jitter: 50 * time.Millisecond})
		return ids(c.Members()), c.Network().HealAll
	}},
	{"drop", 5, func(c *embertest.Cluster, _ string) ([]string, func()) {
		everywhere(c, embertest.Fault{DropRate: 0.05})
		return ids(c.Members()), c.Network().HealAll
	}},
	{"leader-kill", 3, func(c *embertest.Cluster, _ string) ([]string, func()) {
		l := c.Leader().ID
		c.Stop(l)
		return []string{l}, func() { c.Restart(l) }
	}},
	{"follower-kill", 5, func(c *embertest.Cluster, spare string) ([]string, func()) {
		f := follower(c, spare)
		c.Stop(f)
		return []string{f}, func() { c.Restart(f) }
	}},
	// etcd's MemberReplace: a follower is removed and loses its disk; once healed it joins
	// again under its old ID, copies the log while traffic runs, and must end a voter.
	{"member-replace", 3, func(c *embertest.Cluster, spare string) ([]string, func()) {
		f := follower(c, spare)
		c.Remove(f)
		return []string{f}, func() { c.Rejoin(f) }
	}},
	// The bbolt log store (the default's alternative, and the store of older data dirs) under
	// the fault that exercises recovery and truncation most: a stopped leader's uncommitted tail
	// is cut when it rejoins.
	{"leader-kill-bolt", 3, func(c *embertest.Cluster, _ string) ([]string, func()) {
		l := c.Leader().ID
		c.Stop(l)
		return []string{l}, func() { c.Restart(l) }
	}},
}

// follower returns a follower other than spare, if there is one.
func follower(c *embertest.Cluster, spare string) string {
	fs := c.Followers()
	for _, f := range fs {
		if f.ID != spare {
			return f.ID
		}
	}
	return fs[0].ID
}

func ids(ms []*embertest.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

// g1Stats is what one run checked.
type g1Stats struct {
	ops, unknown, resolved, failed, grants int
	violations                             int
	g2                                     g2Stats
	hashes                                 int
	installs                               int // snapshots installed by members
}

func (s *g1Stats) add(o g1Stats) {
	s.ops += o.ops
	s.unknown += o.unknown
	s.resolved += o.resolved
	s.failed += o.failed
	s.grants += o.grants
	s.violations += o.violations
	s.g2.watches += o.g2.watches
	s.g2.events += o.g2.events
	s.g2.violations += o.g2.violations
	s.hashes += o.hashes
	s.installs += o.installs
}

// TestLinearizability is goal G1 (with G2 riding along): client histories recorded under one
// fault per run, checked with porcupine, plus revision and durability checks against the
// recorded history, equal HashKV on every member after healing, and every watcher's stream
// checked with watchcheck.
func TestLinearizability(t *testing.T) {
	tr := loadTier(t)
	var total g1Stats
	runs, scheduled := 0, 0
	for _, f := range g1Faults {
		sizes := []int{f.size}
		if tr.soak {
			sizes = []int{3, 5}
		}
		for _, n := range sizes {
			for run := range tr.runs {
				// Each scheduled run has its own seed, the same whichever runs -run selects.
				seed := tr.seed + int64(scheduled)
				scheduled++
				t.Run(fmt.Sprintf("%s/n=%d/%d", f.name, n, run), func(t *testing.T) {
					runs++
					st := g1Run(t, tr, f, n, seed)
					total.add(st)
				})
			}
		}
	}
	t.Logf("G1 total: %d runs, %d faults injected, %d operations checked (%d unknown, %d of them resolved by the recorder; %d definite failures not checked), %d lease grants, %d HashKV comparisons, %d snapshot installs, %d violations",
		runs, runs, total.ops, total.unknown, total.resolved, total.failed, total.grants, total.hashes, total.installs, total.violations)
	t.Logf("G2 total: %d watches, %d events checked, %d violations", total.g2.watches, total.g2.events, total.g2.violations)
}

func g1Run(t *testing.T, tr tier, f g1Fault, n int, seed int64) g1Stats {
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	opts := append([]ember.Option(nil), g1Options[f.name]...)
	var logs *syncbuf.Buffer
	if g1InstallsSnapshot[f.name] {
		logs = &syncbuf.Buffer{}
		opts = append(opts, ember.WithLogger(installLogger(logs)))
	}
	c := newCluster(t, n, opts...)
	if setup := g1Setup[f.name]; setup != nil {
		setup(t, c)
	}
	clk := newClock()
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	// Registered after the cluster's own cleanup, so it runs first: nothing runs on a closed
	// cluster, and nothing outlives the test.
	t.Cleanup(func() {
		cancel()
		bg.Wait()
	})
	warm, faultFor, recover := phases(tr.duration)
	order := append([]*embertest.Member{c.Leader()}, c.Followers()...) // learners included
	traffic := make(chan struct{})

	rec := newWatcher(watchSpec{name: "recorder", end: "\x00", start: startNow, prevKV: true}, order[1], clk, traffic)
	rec.seen = map[string]int64{}
	bg.Add(1)
	go func() { defer bg.Done(); rec.run(ctx) }()
	waitFor(t, 10*time.Second, "the recorder's watch", func() bool { return rec.reached.Load() > 0 })

	specs := []watchSpec{
		{name: "all keys now, prevKV", end: "\x00", start: startNow, prevKV: true},
		{name: "prefix k/, 300 back, prevKV, progress", key: "k/", prefix: true, start: startPast, delta: 300,
			at: warm / 2, prevKV: true, progress: true},
		{name: "k/3, 50 ahead", key: "k/3", start: startFuture, delta: 50, at: warm / 3},
		{name: "prefix k/, below the compaction", key: "k/", prefix: true, start: startCompacted,
			at: warm + faultFor/2, prevKV: true},
		{name: "range [k/2, k/6) now, deletes filtered, progress", key: "k/2", end: "k/6", start: startNow,
			at: warm, filterDelete: true, progress: true},
		{name: "prefix k/, 100 back, prevKV, slow reader", key: "k/", prefix: true, start: startPast, delta: 100,
			at: warm / 2, prevKV: true, slow: 3 * time.Millisecond},
		{name: "prefix k/, 200 ahead, puts filtered", key: "k/", prefix: true, start: startFuture, delta: 200,
			at: warm + faultFor, filterPut: true},
		{name: "k/0 now, prevKV", key: "k/0", start: startNow, at: warm + faultFor/4, prevKV: true},
	}
	var watchers []*watcher
	for i, sp := range specs {
		w := newWatcher(sp, order[i%len(order)], clk, traffic)
		watchers = append(watchers, w)
		bg.Add(1)
		go func() {
			defer bg.Done()
			sleepCtx(ctx, sp.at)
			w.run(ctx)
		}()
	}

	var maxCompact atomic.Int64 // highest compaction requested
	bg.Add(1)
	go func() { // never past what the recorder reached, so it is never canceled
		defer bg.Done()
		tick := time.NewTicker(compactEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-traffic:
				return
			case <-tick.C:
			}
			ms := c.Running()
			s := ms[i%len(ms)].Store()
			if s == nil {
				continue
			}
			cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
			if st, err := s.Status(cctx); err == nil {
				if target := min(st.Revision-compactLag, rec.reached.Load()); target > maxCompact.Load() {
					maxCompact.Store(target)
					s.Compact(cctx, target)
				}
			}
			ccancel()
		}
	}()

	h := &history{}
	var clients sync.WaitGroup
	grants := make([]int, g1Clients)
	for i := range g1Clients {
		cl := &kvClient{id: i, c: c, rng: rand.New(rand.NewSource(rng.Int63())), clk: clk, h: h,
			applied: rec.sawPut, seen: map[string]seenKV{}}
		if i < g1Pinned {
			cl.pinned = order[i%len(order)].ID
		}
		clients.Add(1)
		go func() {
			defer clients.Done()
			cl.run(traffic)
			grants[i] = cl.grants
		}()
	}

	mc := &membershipClient{c: c, rng: rand.New(rand.NewSource(rng.Int63()))}
	clients.Add(1)
	go func() {
		defer clients.Done()
		mc.run(traffic)
	}()

	time.Sleep(warm)
	faultAt := clk.now()
	faulted, heal := f.inject(c, rec.member.ID)
	t.Logf("%s on %v at %v", f.name, faulted, time.Duration(faultAt))
	time.Sleep(faultFor)
	heal()
	healAt := clk.now()
	time.Sleep(recover)
	close(traffic)
	clients.Wait()

	finalRev := finalWrite(t, c, "final")
	rev := converge(t, c, finalRev)
	allVoters(t, c, g1Learners[f.name]...)
	if !rec.awaitReached(rev, time.Now().Add(30*time.Second)) {
		t.Fatalf("the recorder did not reach revision %d (reached %d)", rev, rec.reached.Load())
	}
	hist := recordedHistory(t, rec, rev)
	st := g1Stats{hashes: len(order) - 1}
	if logs != nil {
		st.installs = snapshotInstalls(logs)
		t.Logf("snapshot installs: %d", st.installs)
		if st.installs == 0 {
			st.violations++
			t.Errorf("%s: no member installed a snapshot; the run proves nothing about installs", f.name)
		}
	}
	st.g2 = checkWatchers(t, watchers, hist, rev, maxCompact.Load())
	for _, g := range grants {
		st.grants += g
	}

	ops := h.records()
	t.Logf("errors seen by clients:%s", errorSummary(ops))
	st.violations += checkRecords(t, ops, hist[:rev-1], rec)
	var removed []string
	if g1RemovesMember[f.name] {
		removed = faulted
	}
	st.violations += mc.report(t, removed)
	model := resolved(ops, &st)
	if st.ops < 200 {
		t.Errorf("only %d operations recorded: the run proves little", st.ops)
	}
	res, info := porcupine.CheckOperationsVerbose(kvModel, model, tr.checkTimeout)
	if res != porcupine.Ok {
		st.violations++
		info.AddAnnotations([]porcupine.Annotation{{Tag: "fault", Start: faultAt, End: healAt,
			Description: f.name, Details: fmt.Sprintf("%s on %v", f.name, faulted), BackgroundColor: "#f8d7da"}})
		path := filepath.Join(artefactDir(t), "history.html")
		if err := porcupine.VisualizePath(kvModel, info, path); err != nil {
			t.Errorf("visualization: %v", err)
		}
		t.Errorf("linearizability check: %s over %d operations; visualization: %s", res, len(model), path)
	}
	t.Logf("%d revisions, %d operations checked (%d unknown, %d resolved by the recorder, %d definite failures), compacted through %d; G2: %d watches, %d events",
		rev, st.ops, st.unknown, st.resolved, st.failed, maxCompact.Load(), st.g2.watches, st.g2.events)
	return st
}

// sawPut reports whether the recorder has received a put of val.
func (w *watcher) sawPut(val string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.seen[val]
	return ok
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// resolved turns the records into porcupine operations. An ambiguous put or CAS whose value the
// recorder received took effect before it was received: its return time becomes the receipt
// (and a CAS is known to have succeeded), which keeps it from overlapping everything after it.
func resolved(ops []*opRecord, st *g1Stats) []porcupine.Operation {
	var out []porcupine.Operation
	for _, r := range ops {
		switch {
		case r.status == statusFailed:
			st.failed++
			continue
		case !r.modelled:
			continue
		}
		st.ops++
		o := porcupine.Operation{ClientId: r.client, Input: r.in, Output: r.out, Call: r.call, Return: r.ret,
			Metadata: r.member}
		if r.status == statusUnknown {
			st.unknown++
			if r.seenAt != 0 {
				st.resolved++
				o.Return = r.seenAt
				if r.in.Kind == opCAS {
					o.Output = kvOutput{OK: true}
				}
			}
		}
		out = append(out, o)
	}
	return out
}

// checkRecords checks every record against the recorded history h (revisions 2 through the
// final one) and returns how many violations it reported:
//   - an acknowledged write is in the history at the revision its response gave;
//   - a value a read returned is in the history with the same create and mod revision,
//     version and lease;
//   - a write that failed definitely is not in the history;
//   - revisions respect real time: an operation that began after another ended never
//     reports a lower revision (reads included, across keys: the per-key model cannot see
//     this);
//   - a lease granted in the run is never reported missing (none expires within a run).
//
// It also resolves ambiguous puts and CASes the recorder saw (opRecord.seenAt).
func checkRecords(t testing.TB, ops []*opRecord, h []watchcheck.Revision, rec *watcher) int {
	t.Helper()
	puts := map[string]watchcheck.KeyValue{} // value → the version that put wrote
	for _, r := range h {
		for _, e := range r.Events {
			if e.Type == watchcheck.Put {
				puts[e.Kv.Value] = e.Kv
			}
		}
	}
	at := func(rev int64) []watchcheck.Event {
		if rev < 2 || rev-2 >= int64(len(h)) {
			return nil
		}
		return h[rev-2].Events
	}
	rec.mu.Lock()
	seen := maps.Clone(rec.seen)
	rec.mu.Unlock()

	violations := 0
	fail := func(r *opRecord, format string, args ...any) {
		violations++
		if violations <= 20 {
			t.Errorf("client %d via %s, %s [%v..%v]: %s", r.client, r.member, describeOp(r.in, r.out),
				time.Duration(r.call), time.Duration(r.ret), fmt.Sprintf(format, args...))
		}
	}
	unexpected := map[string]int{}
	for _, r := range ops {
		writesVal := r.in.Kind == opPut || r.in.Kind == opCAS
		kv, applied := puts[r.in.Val]
		noEffect := r.status == statusFailed || r.status == statusOK && r.in.Kind == opCAS && !r.out.OK
		switch {
		case r.write && writecheck.Classify(r.err) == writecheck.Both:
			fail(r, "error %q is both unknown (ErrTimeout) and definite", r.err)
		case errors.Is(r.err, ember.ErrLeaseNotFound):
			fail(r, "lease %x reported not found, though granted in this run with TTL %ds: %v", r.lease, leaseTTL, r.err)
		case r.status == statusUnknown && r.write && !errors.Is(r.err, ember.ErrTimeout):
			unexpected[r.err.Error()]++
		}
		switch {
		case noEffect && writesVal && applied:
			fail(r, "reported no effect (%v), but the write took effect at revision %d", r.err, kv.ModRevision)
		case r.status == statusUnknown && writesVal && applied:
			r.seenAt = seen[r.in.Val]
			if r.seenAt < r.call {
				fail(r, "value received by the recorder at %v, before the call", time.Duration(r.seenAt))
			}
		case r.status != statusOK:
		case writesVal && (r.in.Kind == opPut || r.out.OK):
			if !applied || kv.ModRevision != r.out.Rev || kv.Key != r.in.Key || kv.Lease != int64(r.lease) {
				fail(r, "acknowledged at revision %d, history has %+v (present %v)", r.out.Rev, kv, applied)
			}
		case r.in.Kind == opDelete && r.out.Deleted == 1:
			found := false
			for _, e := range at(r.out.Rev) {
				found = found || e.Type == watchcheck.Delete && e.Kv.Key == r.in.Key
			}
			if !found {
				fail(r, "acknowledged delete at revision %d is not in the history", r.out.Rev)
			}
		}
		if r.status == statusOK && r.kv != nil {
			if want, ok := puts[r.kv.Value]; !ok || want != *r.kv {
				fail(r, "read %+v, history has %+v (present %v)", *r.kv, want, ok)
			}
		}
	}
	for msg, n := range unexpected {
		violations++
		t.Errorf("%d writes failed with an error outside ember's contract (ErrTimeout or a definite ember error): %s", n, msg)
	}
	violations += checkRealTime(t, ops)
	return violations
}

// checkRealTime checks that no acknowledged operation reports a lower revision than one that
// returned before it was called.
func checkRealTime(t testing.TB, ops []*opRecord) int {
	t.Helper()
	var acked []*opRecord
	for _, r := range ops {
		if r.status == statusOK {
			acked = append(acked, r)
		}
	}
	byRet := append([]*opRecord(nil), acked...)
	sort.Slice(byRet, func(i, j int) bool { return byRet[i].ret < byRet[j].ret })
	sort.Slice(acked, func(i, j int) bool { return acked[i].call < acked[j].call })
	violations := 0
	var best *opRecord // highest revision among the operations returned so far
	j := 0
	for _, r := range acked {
		for ; j < len(byRet) && byRet[j].ret < r.call; j++ {
			if best == nil || byRet[j].out.Rev > best.out.Rev {
				best = byRet[j]
			}
		}
		if best != nil && r.out.Rev < best.out.Rev {
			violations++
			if violations <= 20 {
				t.Errorf("revision went back in time: client %d via %s, %s [%v..%v] after client %d via %s, %s [%v..%v]",
					r.client, r.member, describeOp(r.in, r.out), time.Duration(r.call), time.Duration(r.ret),
					best.client, best.member, describeOp(best.in, best.out), time.Duration(best.call), time.Duration(best.ret))
			}
		}
	}
	return violations
}

// errorSummary lists distinct error messages with counts, most frequent first.
func errorSummary(ops []*opRecord) string {
	counts := map[string]int{}
	for _, r := range ops {
		if r.err != nil {
			counts[r.err.Error()]++
		}
	}
	var msgs []string
	for m := range counts {
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool { return counts[msgs[i]] > counts[msgs[j]] })
	var b strings.Builder
	for i, m := range msgs {
		if i == 8 {
			break
		}
		fmt.Fprintf(&b, "\n\t%5d × %s", counts[m], m)
	}
	return b.String()
}
