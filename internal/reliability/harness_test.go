package reliability

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// tier is how much a reliability test runs: the CI tier by default, the soak tier with
// EMBER_SOAK=1. Each knob can be overridden from the environment, so a failing scenario can be
// rerun alone, longer or more often.
type tier struct {
	soak     bool
	runs     int           // runs of each scenario
	duration time.Duration // traffic of one run, fault included
	// checkTimeout bounds one porcupine check; running out counts as a failure, as in etcd,
	// since an unchecked history proves nothing.
	checkTimeout time.Duration
	seed         int64 // base of every random choice; logged so a run can be repeated
}

// Environment variables read by loadTier.
const (
	envSoak     = "EMBER_SOAK"                 // "1": the soak tier
	envRuns     = "EMBER_RELIABILITY_RUNS"     // runs per scenario
	envDuration = "EMBER_RELIABILITY_DURATION" // Go duration of one run
	envSeed     = "EMBER_RELIABILITY_SEED"     // fixed base seed
	envResults  = "EMBER_RESULTS_DIR"          // keep failure artefacts here
)

// loadTier skips the test in -short mode and returns the tier the environment asks for.
func loadTier(t testing.TB) tier {
	t.Helper()
	if testing.Short() {
		t.Skip("reliability runs take minutes; skipped in -short mode")
	}
	tr := tier{runs: 1, duration: 24 * time.Second, checkTimeout: time.Minute, seed: time.Now().UnixNano()}
	if os.Getenv(envSoak) == "1" {
		tr = tier{soak: true, runs: 20, duration: time.Minute, checkTimeout: 5 * time.Minute, seed: tr.seed}
	}
	if v := os.Getenv(envRuns); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive integer", envRuns, v)
		}
		tr.runs = n
	}
	if v := os.Getenv(envDuration); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 3*time.Second {
			t.Fatalf("%s=%q: want a Go duration of at least 3s", envDuration, v)
		}
		tr.duration = d
	}
	if v := os.Getenv(envSeed); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want an integer", envSeed, v)
		}
		tr.seed = s
	}
	t.Logf("tier: soak=%v runs=%d duration=%v seed=%d (%s=%d reruns these choices)", tr.soak, tr.runs, tr.duration, tr.seed, envSeed, tr.seed)
	return tr
}

// phases splits a run of duration d: traffic alone, then one fault, then recovery.
func phases(d time.Duration) (warm, fault, recover time.Duration) {
	return d / 6, d / 3, d - d/6 - d/3
}

// artefactDir returns where a failing run leaves its files: a directory per test under
// EMBER_RESULTS_DIR when set (it outlives the test), else the test's temporary directory.
func artefactDir(t testing.TB) string {
	t.Helper()
	root := os.Getenv(envResults)
	if root == "" {
		return t.TempDir()
	}
	dir := filepath.Join(root, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("results dir: %v", err)
	}
	return dir
}

// clock gives every timestamp of a run from one monotonic origin, as porcupine needs.
type clock struct{ base time.Time }

func newClock() clock { return clock{base: time.Now()} }

func (c clock) now() int64 { return int64(time.Since(c.base)) }

// never is the return time of an operation whose outcome is unknown: it may take effect at any
// point after its call.
const never = int64(math.MaxInt64)

// newCluster starts an n-member cluster for a reliability run. Progress notifications every
// 100 ms let watchers be bookmarked while keys they watch stay quiet.
func newCluster(t testing.TB, n int, opts ...ember.Option) *embertest.Cluster {
	t.Helper()
	return embertest.NewCluster(t, n, append([]ember.Option{ember.WithWatchProgressNotifyInterval(100 * time.Millisecond)}, opts...)...)
}

// healthLog records when each member was faulted (partitioned, cut, stopped), on the run's
// clock, so that checks can tell effects of a fault from misbehaviour of a healthy member.
type healthLog struct {
	clk clock
	mu  sync.Mutex
	bad map[string][][2]int64 // member → [start, end] intervals; end is never while ongoing
}

func newHealthLog(clk clock) *healthLog { return &healthLog{clk: clk, bad: map[string][][2]int64{}} }

// begin marks members faulted from at on; at is taken before injecting the fault, whose
// first effects may come before the injection returns.
func (h *healthLog) begin(at int64, members ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range members {
		h.bad[m] = append(h.bad[m], [2]int64{at, never})
	}
}

// end marks every ongoing fault over; call it after healing.
func (h *healthLog) end() {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.clk.now()
	for _, ivs := range h.bad {
		for i := range ivs {
			if ivs[i][1] == never {
				ivs[i][1] = now
			}
		}
	}
}

// healthy reports whether member had no fault at any time in [from, to].
func (h *healthLog) healthy(member string, from, to int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, iv := range h.bad[member] {
		if iv[0] <= to && from <= iv[1] {
			return false
		}
	}
	return true
}

// leaderLog records when members saw a new leader, on the run's clock, to explain failures.
type leaderLog struct {
	clk     clock
	mu      sync.Mutex
	changes []leaderSeen
}

type leaderSeen struct {
	at             int64
	member, leader string
}

// watchLeaders subscribes to every running member's leader changes until the member stops.
func watchLeaders(c *embertest.Cluster, clk clock) *leaderLog {
	l := &leaderLog{clk: clk}
	for _, m := range c.Running() {
		ch := m.Store().LeaderChanges()
		<-ch // the leader at subscription time, not a change
		go func() {
			for lc := range ch {
				if lc.ID != "" {
					l.mu.Lock()
					l.changes = append(l.changes, leaderSeen{at: clk.now(), member: m.ID, leader: lc.ID})
					l.mu.Unlock()
				}
			}
		}()
	}
	return l
}

// describe lists the leader changes seen in [from, to].
func (l *leaderLog) describe(from, to int64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for _, ch := range l.changes {
		if ch.at >= from && ch.at <= to {
			parts = append(parts, fmt.Sprintf("%s saw leader %s at %v", ch.member, ch.leader, time.Duration(ch.at)))
		}
	}
	if len(parts) == 0 {
		return "no leader change"
	}
	return strings.Join(parts, ", ")
}

// finalWrite puts key through the running members in turn until a put succeeds, and returns
// its revision. Called once every fault is healed, it must succeed: a cluster that cannot take
// a write then has not recovered.
func finalWrite(t testing.TB, c *embertest.Cluster, key string) int64 {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last error
	for i := 0; time.Now().Before(deadline); i++ {
		ms := c.Running()
		if len(ms) == 0 {
			t.Fatal("no member is running after the run")
		}
		s := ms[i%len(ms)].Store()
		if s == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p, err := s.Put(ctx, key, "end")
		cancel()
		if err == nil {
			return p.Header.Revision
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no write succeeded within a minute of healing: %v", last)
	return 0
}

// converge waits until every member has applied the same log (same applied index and
// revision, twice in a row) at or past revision atLeast, then compares HashKV at that revision:
// members that applied the same log must hold the same data. It returns the common revision.
func converge(t testing.TB, c *embertest.Cluster, atLeast int64) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type pos struct{ applied, rev int64 }
	var prev pos
	stable := 0
	for stable < 2 {
		if ctx.Err() != nil {
			t.Fatalf("members did not converge on one applied index at or past revision %d: %s", atLeast, statusLine(c))
		}
		time.Sleep(100 * time.Millisecond)
		var cur pos
		same := true
		for i, m := range c.Members() {
			s := m.Store()
			if s == nil {
				t.Fatalf("member %s is not running after the run", m.ID)
			}
			st, err := s.Status(ctx)
			if err != nil {
				same = false
				break
			}
			p := pos{int64(st.AppliedIndex), st.Revision}
			if i == 0 {
				cur = p
			} else if p != cur {
				same = false
			}
		}
		if same && cur.rev >= atLeast && cur == prev {
			stable++
		} else {
			stable = 0
		}
		prev = cur
	}
	var first *ember.HashKVResponse
	for _, m := range c.Members() {
		h, err := m.Store().HashKV(ctx, prev.rev)
		if err != nil {
			t.Fatalf("HashKV(%d) on %s: %v", prev.rev, m.ID, err)
		}
		if first == nil {
			first = h
			continue
		}
		if h.Hash != first.Hash || h.CompactRevision != first.CompactRevision {
			t.Errorf("state diverged at revision %d: %s has hash %08x (compacted %d), %s has %08x (compacted %d)",
				prev.rev, c.Members()[0].ID, first.Hash, first.CompactRevision, m.ID, h.Hash, h.CompactRevision)
		}
	}
	return prev.rev
}

// allVoters checks that every member but the learners joined as such ends a voter in the
// leader's configuration, within 30 s of converging: a member restarted or replaced during the
// run that stayed a learner would leave the cluster tolerating one failure fewer than it should.
func allVoters(t testing.TB, c *embertest.Cluster, learners ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ms, err := c.Leader().Store().Members(ctx)
		cancel()
		voters := map[string]bool{}
		for _, m := range ms {
			voters[m.ID] = !m.IsLearner
		}
		all := err == nil
		for _, m := range c.Members() {
			all = all && (voters[m.ID] || slices.Contains(learners, m.ID))
		}
		if all {
			return
		}
		last = fmt.Sprintf("%+v (%v)", ms, err)
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("30 s after the run, not every member of %v is a voter: %s", ids(c.Members()), last)
}

func statusLine(c *embertest.Cluster) string {
	var b strings.Builder
	for _, m := range c.Members() {
		s := m.Store()
		if s == nil {
			fmt.Fprintf(&b, " %s:stopped", m.ID)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := s.Status(ctx)
		cancel()
		if err != nil {
			fmt.Fprintf(&b, " %s:%v", m.ID, err)
			continue
		}
		fmt.Fprintf(&b, " %s:leader=%s,applied=%d,rev=%d", m.ID, st.Leader, st.AppliedIndex, st.Revision)
	}
	return b.String()
}

// isolate cuts member id from every other member, both ways, through the network's fault API.
func isolate(c *embertest.Cluster, id string) {
	for _, m := range c.Members() {
		if m.ID != id {
			c.Network().SetFault(id, m.ID, embertest.Fault{Cut: true})
			c.Network().SetFault(m.ID, id, embertest.Fault{Cut: true})
		}
	}
}

// toward applies f to the traffic every other member sends to id.
func toward(c *embertest.Cluster, id string, f embertest.Fault) {
	for _, m := range c.Members() {
		if m.ID != id {
			c.Network().SetFault(m.ID, id, f)
		}
	}
}

// everywhere applies f to every direction between members.
func everywhere(c *embertest.Cluster, f embertest.Fault) {
	for _, a := range c.Members() {
		for _, b := range c.Members() {
			if a.ID != b.ID {
				c.Network().SetFault(a.ID, b.ID, f)
			}
		}
	}
}
