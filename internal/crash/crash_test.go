//go:build unix

package crash

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ember-kv/ember"
)

func TestHelperMember(t *testing.T) { HelperMember(t) }

// Member timing for the crash tests: a killed leader is replaced within about a second, and two
// loaded cores under -race still see no spurious elections. Snapshots are taken often and keep
// little log behind them, so that restarts load snapshots and restarted followers are sent one.
var crashOptions = Options{
	HeartbeatTimeout:  500 * time.Millisecond,
	ElectionTimeout:   500 * time.Millisecond,
	SnapshotThreshold: 256,
	SnapshotInterval:  200 * time.Millisecond,
	TrailingLogs:      64,
}

// cycles returns how many kill cycles to run: ci normally, many more with EMBER_SOAK=1
// (EMBER_CRASH_CYCLES, default 50 × ci).
func cycles(t *testing.T, ci int) int {
	if testing.Short() {
		t.Skip("kills and restarts member processes")
	}
	if os.Getenv("EMBER_SOAK") != "1" {
		return ci
	}
	if s := os.Getenv("EMBER_CRASH_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("EMBER_CRASH_CYCLES=%q", s)
		}
		return n
	}
	return 50 * ci
}

// ack is an acknowledged write.
type ack struct {
	value string
	rev   int64
}

// history records every acknowledged write. Fresh keys are written once each; hot keys are
// overwritten, and keep only their latest acknowledgement.
type history struct {
	mu     sync.Mutex
	fresh  map[string]ack
	hot    map[string]ack
	maxRev int64
	acks   int
}

func newHistory() *history {
	return &history{fresh: map[string]ack{}, hot: map[string]ack{}}
}

func (h *history) record(key string, hot bool, a ack) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.acks++
	h.maxRev = max(h.maxRev, a.rev)
	if !hot {
		h.fresh[key] = a
	} else if a.rev > h.hot[key].rev {
		h.hot[key] = a
	}
}

func (h *history) max() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.maxRev
}

func (h *history) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.acks
}

func (h *history) snapshot() (fresh, hot map[string]ack, maxRev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fresh, hot = make(map[string]ack, len(h.fresh)), make(map[string]ack, len(h.hot))
	for k, a := range h.fresh {
		fresh[k] = a
	}
	for k, a := range h.hot {
		hot[k] = a
	}
	return fresh, hot, h.maxRev
}

// runWriters starts n writers that put through random members until the returned stop is
// called. Writer i writes fresh keys c/<i>/<seq> and, every fourth write, one of eight hot
// keys. Each writer's writes are sequential, so their revisions must increase, across kills
// and restarts included.
func runWriters(t *testing.T, c *Cluster, h *history, n int) (stop func()) {
	var wg sync.WaitGroup
	done := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last int64
			for seq := 0; ; seq++ {
				select {
				case <-done:
					return
				default:
				}
				key, hot := fmt.Sprintf("c/%d/%06d", i, seq), seq%4 == 3
				if hot {
					key = fmt.Sprintf("hot/%d", seq%8)
				}
				value := fmt.Sprintf("w%d.%d", i, seq)
				ms := c.Members()
				rev, err := ms[rand.IntN(len(ms))].Put(key, value)
				if err != nil {
					// The member is down, electing, or lost the write's outcome.
					time.Sleep(time.Duration(5+rand.IntN(20)) * time.Millisecond)
					continue
				}
				if rev <= last {
					t.Errorf("writer %d: write acknowledged at revision %d after one at %d", i, rev, last)
				}
				last = rev
				h.record(key, hot, ack{value: value, rev: rev})
			}
		}()
	}
	var once sync.Once
	stop = func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
	t.Cleanup(stop)
	return stop
}

// verify reads everything through m and checks every write acknowledged before the read
// began (see check), failing the test on any loss. It returns how many acknowledged keys it
// checked.
func verify(t *testing.T, m *Member, h *history, when string) int {
	t.Helper()
	checked, problems, err := check(m, h)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	for i, p := range problems {
		if i == 10 {
			break
		}
		t.Errorf("%s: through %s: %s", when, m.Config.ID, p)
	}
	if len(problems) > 0 {
		t.Fatalf("%s: %d of %d acknowledged writes lost or wrong", when, len(problems), checked)
	}
	return checked
}

// check reads everything through m: a fresh key must hold exactly its acknowledged value,
// written once, at its acknowledged revision; a hot key its latest acknowledged value or a
// later one; and the read's revision must not be below any acknowledged one.
func check(m *Member, h *history) (checked int, problems []string, err error) {
	fresh, hot, maxRev := h.snapshot()
	var r RangeResult
	for deadline := time.Now().Add(time.Minute); ; {
		if r, err = m.Range(""); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("read through %s: %w", m.Config.ID, err)
	}
	got := make(map[string]KV, len(r.KVs))
	for _, kv := range r.KVs {
		got[kv.Key] = kv
	}
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if r.Revision < maxRev {
		report("read at revision %d, below the acknowledged %d", r.Revision, maxRev)
	}
	for k, a := range fresh {
		kv, ok := got[k]
		switch {
		case !ok:
			report("acknowledged %s=%s at revision %d is missing", k, a.value, a.rev)
		case kv.Value != a.value || kv.ModRevision != a.rev || kv.Version != 1:
			report("acknowledged %s=%s at revision %d, read %s at revision %d version %d",
				k, a.value, a.rev, kv.Value, kv.ModRevision, kv.Version)
		}
	}
	for k, a := range hot {
		kv, ok := got[k]
		switch {
		case !ok:
			report("acknowledged %s=%s at revision %d is missing", k, a.value, a.rev)
		case kv.ModRevision < a.rev:
			report("acknowledged %s=%s at revision %d, read an older %s at revision %d", k, a.value, a.rev, kv.Value, kv.ModRevision)
		case kv.ModRevision == a.rev && kv.Value != a.value:
			report("acknowledged %s=%s at revision %d, read %s at that revision", k, a.value, a.rev, kv.Value)
		}
	}
	return len(fresh) + len(hot), problems, nil
}

// leader returns the member that the running members agree leads.
func leader(t *testing.T, c *Cluster) *Member {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, m := range c.Members() {
			if st, err := m.Status(); err == nil && st.IsLeader {
				return m
			}
		}
	}
	t.Fatal("no leader within a minute")
	return nil
}

// killSet names a set of members to kill in one cycle.
type killSet struct {
	name string
	pick func(t *testing.T, c *Cluster) []*Member
}

var (
	killAny = killSet{"any member", func(t *testing.T, c *Cluster) []*Member {
		ms := c.Members()
		return []*Member{ms[rand.IntN(len(ms))]}
	}}
	killLeader = killSet{"the leader", func(t *testing.T, c *Cluster) []*Member {
		return []*Member{leader(t, c)}
	}}
	killMajority = killSet{"a majority", func(t *testing.T, c *Cluster) []*Member {
		ms := append([]*Member(nil), c.Members()...)
		rand.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		return ms[:len(ms)/2+1]
	}}
	killAll = killSet{"every member", func(t *testing.T, c *Cluster) []*Member {
		return c.Members()
	}}
)

// crashCycles runs the kill/restart cycles against c while writers load it, then checks that
// the members converge to equal hashes. The checks after each cycle:
//   - a restarted member, once ready, is at or past every revision acknowledged before the
//     kill: revision never goes backwards;
//   - every acknowledged write is readable, with its value or a later one.
func crashCycles(t *testing.T, c *Cluster, sets []killSet, n, writers int) {
	h := newHistory()
	stop := runWriters(t, c, h, writers)
	checked := 0
	start := time.Now()
	for cycle := 0; cycle < n; cycle++ {
		// Kill at a uniformly random moment of the traffic.
		time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
		for _, m := range c.Members() {
			if gone := m.Exited(); gone != "" {
				t.Fatalf("cycle %d: %s", cycle, gone)
			}
		}
		set := sets[cycle%len(sets)]
		victims := set.pick(t, c)
		acked := h.max()
		for _, m := range victims {
			m.Kill()
		}
		// Let the survivors, if any, go on without the victims for a moment.
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		for _, m := range victims {
			c.Start(m)
		}
		errs := make([]error, len(victims))
		var wg sync.WaitGroup
		for i, m := range victims {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = m.WaitReady(time.Minute)
			}()
		}
		wg.Wait()
		when := fmt.Sprintf("cycle %d (killed %s)", cycle, set.name)
		for i, m := range victims {
			if errs[i] != nil {
				t.Fatalf("%s: %v", when, errs[i])
			}
			st, err := m.Status()
			if err != nil {
				t.Fatalf("%s: status of %s: %v", when, m.Config.ID, err)
			}
			if st.Revision < acked {
				t.Errorf("%s: %s restarted at revision %d, below the %d acknowledged before the kill",
					when, m.Config.ID, st.Revision, acked)
			}
		}
		ms := c.Members()
		checked += verify(t, ms[rand.IntN(len(ms))], h, when)
	}
	stop()
	for _, m := range c.Members() {
		checked += verify(t, m, h, "after the last cycle")
	}
	checkHashes(t, c)
	t.Logf("%d kill cycles in %v: %d writes acknowledged, %d acknowledged keys checked, 0 lost",
		n, time.Since(start).Round(time.Second), h.count(), checked)
}

// checkHashes waits until every member is at the same revision, then compares their HashKV.
func checkHashes(t *testing.T, c *Cluster) {
	t.Helper()
	var revs []int64
	for deadline := time.Now().Add(time.Minute); ; {
		revs = revs[:0]
		for _, m := range c.Members() {
			st, err := m.Status()
			if err != nil {
				t.Fatalf("status of %s: %v", m.Config.ID, err)
			}
			revs = append(revs, st.Revision)
		}
		if allEqual(revs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members did not converge within a minute: revisions %v", revs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var first HashResult
	for i, m := range c.Members() {
		hr, err := m.Hash(revs[0])
		if err != nil {
			t.Fatalf("hash of %s at %d: %v", m.Config.ID, revs[0], err)
		}
		if i == 0 {
			first = hr
		} else if hr.Hash != first.Hash || hr.CompactRevision != first.CompactRevision {
			t.Errorf("%s: HashKV(%d) = %08x (compacted at %d), %s has %08x (compacted at %d)",
				m.Config.ID, revs[0], hr.Hash, hr.CompactRevision, c.Members()[0].Config.ID, first.Hash, first.CompactRevision)
		}
	}
}

func allEqual(revs []int64) bool {
	for _, r := range revs {
		if r != revs[0] {
			return false
		}
	}
	return true
}

// Three members on ember's default log store (the WAL): kill one, the leader, a majority or all
// of them, in turn, and restart them.
func TestCrash_ThreeMembers(t *testing.T) {
	n := cycles(t, 48)
	opts := crashOptions
	opts.Members = 3
	c := NewCluster(t, opts)
	crashCycles(t, c, []killSet{killAny, killLeader, killMajority, killAll}, n, 4)
}

// Three members on the bbolt log store, which data dirs created before the WAL was the default
// keep: the same kills.
func TestCrash_ThreeMembersBolt(t *testing.T) {
	n := cycles(t, 16)
	opts := crashOptions
	opts.Members = 3
	opts.LogStore = ember.LogStoreBolt
	c := NewCluster(t, opts)
	crashCycles(t, c, []killSet{killAny, killLeader, killMajority, killAll}, n, 4)
}

// One member, the embedded default: every kill takes the whole cluster down (etcd #14370 lost
// acknowledged writes exactly so).
func TestCrash_SingleMember(t *testing.T) {
	n := cycles(t, 24)
	opts := crashOptions
	opts.Members = 1
	c := NewCluster(t, opts)
	crashCycles(t, c, []killSet{killAll}, n, 3)
}

// The checker catches what it is there to catch: a lost write, an overwritten one, and a read
// behind an acknowledged revision.
func TestHarness_CheckDetectsLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a member process")
	}
	c := NewCluster(t, Options{Members: 1})
	m := c.Members()[0]
	h := newHistory()
	for i, k := range []string{"c/a", "c/b", "hot/x"} {
		rev, err := m.Put(k, "v")
		if err != nil {
			t.Fatal(err)
		}
		h.record(k, i == 2, ack{value: "v", rev: rev})
	}
	if checked, problems, err := check(m, h); err != nil || len(problems) > 0 || checked != 3 {
		t.Fatalf("clean history: checked %d, problems %v, err %v", checked, problems, err)
	}
	rev, err := m.Put("c/b", "again")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := m.Get("c/b"); err != nil || len(r.KVs) != 1 || r.KVs[0].Value != "again" || r.KVs[0].ModRevision != rev {
		t.Fatalf("get c/b after overwriting it at revision %d: %+v, %v", rev, r, err)
	}
	h.record("c/never", false, ack{value: "v", rev: h.max()})
	h.record("hot/x", true, ack{value: "later", rev: h.max() + 100})
	_, problems, err := check(m, h)
	if err != nil {
		t.Fatal(err)
	}
	// c/b written twice, c/never missing, hot/x behind its acknowledgement, the read behind
	// the highest acknowledged revision.
	if len(problems) != 4 {
		t.Errorf("want 4 problems, got %d: %v", len(problems), problems)
	}
}

// Kill leaves no process behind, and neither does the cluster's cleanup, nor the parent's death
// (seen by the member as its stdin closing).
func TestHarness_NoProcessSurvives(t *testing.T) {
	if testing.Short() {
		t.Skip("starts member processes")
	}
	var pids []int
	t.Run("cluster", func(t *testing.T) {
		c := NewCluster(t, Options{Members: 1})
		m := c.Members()[0]
		pid := m.PID()
		m.Kill()
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d after Kill: signal 0 gave %v, want ESRCH", pid, err)
		}
		c.Start(m)
		if err := m.WaitReady(time.Minute); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, m.PID())
	})
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d after the cluster's cleanup: signal 0 gave %v, want ESRCH", pid, err)
		}
	}
	t.Run("parent gone", func(t *testing.T) {
		c := NewCluster(t, Options{Members: 1})
		m := c.Members()[0]
		m.mu.Lock()
		p := m.proc
		m.proc = nil
		m.mu.Unlock()
		p.stdin.Close()
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			t.Fatal("the member outlived its parent's end of the stdin pipe by 30s")
		}
	})
}
