package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/concurrency"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/internal/watchcheck"
	"github.com/ember-kv/ember/internal/watchtest"
)

// G3: contenders take a concurrency.Mutex and update a guarded resource, while some of them
// pause past their session's TTL and one fault hits the cluster.
const (
	lockContenders = 8
	lockTTL        = 2 // seconds
	lockPrefix     = "lock"
	guardedKey     = "guarded" // written by holders in a Txn guarded by IsOwner
	// pauseChance is the chance that a holder pauses (a simulated GC pause: its keepalives stop
	// with Session.Orphan) for pauseFor, longer than the TTL, and then goes on writing.
	pauseChance = 0.1
	pauseFor    = lockTTL*time.Second + time.Second
)

// lockFaults are the G1 faults that G3 runs under.
var lockFaults = []string{"follower-partition", "leader-partition", "leader-kill"}

// register is the external resource the lock guards: a counter that holders read, then write
// back incremented. It fences with the lock's token: it admits a read or write only if the
// token is at least the highest it has seen, and a token equal to that one only from the holder
// that brought it (a new holder must bring a strictly greater one). Fencing reads as well as
// writes is what makes read-modify-write safe: once a newer holder has read, an older one can
// no longer write.
type register struct {
	mu       sync.Mutex
	maxToken int64
	holder   string // the holder that brought maxToken
	value    int64
	accepted int
	fenced   int // reads and writes refused for a stale token: the hazard fencing averts
	// Violations: a new holder with the same token as an earlier one, and a write admitted
	// although the counter changed since its holder read it (a lost update).
	shared, lost []string
}

func (r *register) admit(token int64, holder string) bool {
	switch {
	case token > r.maxToken:
		r.maxToken, r.holder = token, holder
		return true
	case token == r.maxToken && holder == r.holder:
		return true
	case token == r.maxToken:
		r.shared = append(r.shared, fmt.Sprintf("token %d brought by %s, then by %s", token, r.holder, holder))
	}
	r.fenced++
	return false
}

func (r *register) read(token int64, holder string) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.value, r.admit(token, holder)
}

func (r *register) write(token int64, holder string, read, v int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.admit(token, holder) {
		return false
	}
	if r.value != read {
		r.lost = append(r.lost, fmt.Sprintf("%s (token %d) wrote %d over %d, having read %d", holder, token, v, r.value, read))
	}
	r.value = v
	r.accepted++
	return true
}

// acquisition is one successful Lock.
type acquisition struct {
	contender  int
	key        string
	token, hdr int64 // FencingToken, and the revision of Lock's last read
	call, ret  int64 // Lock's call and return
	done       int64 // when the holder stopped acting as one
	paused     bool
}

// sessionEnd is a session that ended without its contender ending it.
type sessionEnd struct {
	contender int
	member    string
	lease     ember.LeaseID
	at        int64
	// leaseGone: a TimeToLive on the member right after found the lease missing (it expired
	// or was revoked), rather than the session giving up on a live lease.
	leaseGone bool
	ttlErr    error
}

type lockLog struct {
	mu    sync.Mutex
	acqs  []*acquisition
	ends  []sessionEnd
	pause int
}

// lockSession is a contender's session and whether the contender ended it itself.
type lockSession struct {
	*concurrency.Session
	quit atomic.Bool
}

type contender struct {
	id     int
	member string
	c      *embertest.Cluster
	clk    clock
	rng    *rand.Rand
	reg    *register
	log    *lockLog
	mon    *sync.WaitGroup // session monitors
}

func (ct *contender) run(stop <-chan struct{}) {
	var sess *lockSession
	for !closed(stop) {
		s := ct.c.Member(ct.member).Store()
		if s == nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if sess == nil || closed(sess.Done()) {
			var err error
			if sess, err = ct.newSession(s); err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		if !ct.hold(sess) {
			sess = nil
		}
	}
	if sess != nil {
		sess.quit.Store(true)
		sess.Close()
	}
}

// newSession starts a session with a monitor that records its end unless the contender ends
// it itself.
func (ct *contender) newSession(s *ember.Store) (*lockSession, error) {
	// The grant is bounded here; NewSession's own would wait for a leader indefinitely.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	g, err := s.Grant(ctx, lockTTL)
	cancel()
	if err != nil {
		return nil, err
	}
	cs, err := concurrency.NewSession(s, concurrency.WithLease(g.ID), concurrency.WithTTL(lockTTL))
	if err != nil {
		return nil, err
	}
	sess := &lockSession{Session: cs}
	ct.mon.Add(1)
	go func() {
		defer ct.mon.Done()
		<-sess.Done()
		if sess.quit.Load() {
			return
		}
		end := sessionEnd{contender: ct.id, member: ct.member, lease: sess.Lease(), at: ct.clk.now()}
		if s := ct.c.Member(ct.member).Store(); s != nil {
			tctx, tcancel := context.WithTimeout(context.Background(), 2*time.Second)
			ttl, err := s.TimeToLive(tctx, sess.Lease())
			tcancel()
			end.leaseGone, end.ttlErr = err == nil && ttl.TTL == -1, err
		}
		ct.log.mu.Lock()
		ct.log.ends = append(ct.log.ends, end)
		ct.log.mu.Unlock()
	}()
	return sess, nil
}

// hold takes the lock once and, holding it, updates the register twice and writes guardedKey
// under IsOwner. It reports whether the session is still usable.
func (ct *contender) hold(sess *lockSession) bool {
	m := concurrency.NewMutex(sess.Session, lockPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	call := ct.clk.now()
	err := m.Lock(ctx)
	ret := ct.clk.now()
	cancel()
	if err != nil {
		return !errors.Is(err, concurrency.ErrSessionExpired)
	}
	a := &acquisition{contender: ct.id, key: m.Key(), token: m.FencingToken(), hdr: m.Header().Revision, call: call, ret: ret}
	if ct.rng.Float64() < pauseChance {
		// The holder stops in its tracks, keepalives included, past its TTL; then it carries on
		// as if nothing happened, as a process back from a GC pause would.
		a.paused = true
		sess.quit.Store(true)
		sess.Orphan()
		time.Sleep(pauseFor)
	}
	s := sess.Store()
	for range 2 {
		v, ok := ct.reg.read(a.token, a.key)
		if !ok {
			break
		}
		time.Sleep(time.Duration(ct.rng.Intn(30)) * time.Millisecond)
		gctx, gcancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.Txn(gctx).If(m.IsOwner()).Then(ember.OpPut(guardedKey, fmt.Sprintf("%s@%d", a.key, a.token))).Commit()
		gcancel()
		if !ct.reg.write(a.token, a.key, v, v+1) {
			break
		}
	}
	a.done = ct.clk.now()
	uctx, ucancel := context.WithTimeout(context.Background(), 2*time.Second)
	m.Unlock(uctx)
	ucancel()
	ct.log.mu.Lock()
	ct.log.acqs = append(ct.log.acqs, a)
	if a.paused {
		ct.log.pause++
	}
	ct.log.mu.Unlock()
	return !a.paused
}

// lockStats is what one G3 run checked.
type lockStats struct {
	acquisitions, pauses, guarded, accepted, fenced, overlaps, faultEnds, gaveUp int
	violations                                                                   int
}

func (s *lockStats) add(o lockStats) {
	s.acquisitions += o.acquisitions
	s.pauses += o.pauses
	s.guarded += o.guarded
	s.accepted += o.accepted
	s.fenced += o.fenced
	s.overlaps += o.overlaps
	s.faultEnds += o.faultEnds
	s.gaveUp += o.gaveUp
	s.violations += o.violations
}

// TestLocks is goal G3: mutual exclusion through fencing, for concurrency.Mutex holders that
// pause past their TTL while partitions and leader kills hit the cluster. It checks that the
// fenced register never loses an update and never sees one token from two holders; that
// tokens strictly increase from a holder to any holder that called Lock after it returned;
// that Lock returns only when its key is first in line (etcd#11456), and that every write
// guarded by IsOwner landed while its key was first in line, both against the store's history;
// and that no session on a healthy member, not paused, loses its lease.
func TestLocks(t *testing.T) {
	tr := loadTier(t)
	var total lockStats
	runs, scheduled := 0, 0
	for _, name := range lockFaults {
		var f g1Fault
		for _, g := range g1Faults {
			if g.name == name {
				f = g
			}
		}
		for run := range tr.runs {
			seed := tr.seed + int64(scheduled)
			scheduled++
			t.Run(fmt.Sprintf("%s/%d", name, run), func(t *testing.T) {
				runs++
				total.add(lockRun(t, tr, f, seed))
			})
		}
	}
	t.Logf("G3 total: %d runs, %d faults injected, %d acquisitions (%d holders paused past the TTL), %d guarded writes, %d register updates accepted, %d fenced off, %d overlapping holds, %d sessions ended by faults, %d gave up on a healthy member, %d violations",
		runs, runs, total.acquisitions, total.pauses, total.guarded, total.accepted, total.fenced, total.overlaps, total.faultEnds, total.gaveUp, total.violations)
}

func lockRun(t *testing.T, tr tier, f g1Fault, seed int64) lockStats {
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	c := newCluster(t, 3)
	clk := newClock()
	health := newHealthLog(clk)
	var contenders, monitors sync.WaitGroup
	stop := make(chan struct{})
	// Registered after the cluster's own cleanup, so it runs first.
	t.Cleanup(func() {
		if !closed(stop) {
			close(stop)
		}
		contenders.Wait()
		monitors.Wait()
	})
	warm, faultFor, recover := phases(tr.duration)
	order := append([]*embertest.Member{c.Leader()}, c.Followers()...)
	leaders := watchLeaders(c, clk)
	reg, log := &register{}, &lockLog{}
	for i := range lockContenders {
		ct := &contender{id: i, member: order[i%len(order)].ID, c: c, clk: clk,
			rng: rand.New(rand.NewSource(rng.Int63())), reg: reg, log: log, mon: &monitors}
		contenders.Add(1)
		go func() {
			defer contenders.Done()
			ct.run(stop)
		}()
	}
	time.Sleep(warm)
	faultAt := clk.now()
	faulted, heal := f.inject(c, "")
	health.begin(faultAt, faulted...)
	t.Logf("%s on %v at %v", f.name, faulted, time.Duration(faultAt))
	time.Sleep(faultFor)
	heal()
	health.end()
	time.Sleep(recover)
	close(stop)
	contenders.Wait()
	monitors.Wait()

	rev := converge(t, c, finalWrite(t, c, "final"))
	h := readHistory(t, c.Leader().Store(), rev)

	st := lockStats{acquisitions: len(log.acqs), pauses: log.pause, accepted: reg.accepted, fenced: reg.fenced}
	fail := func(format string, args ...any) {
		st.violations++
		if st.violations <= 20 {
			t.Errorf(format, args...)
		}
	}
	for _, v := range reg.shared {
		fail("register: two holders, one token: %s", v)
	}
	for _, v := range reg.lost {
		fail("register: stale write accepted (lost update): %s", v)
	}
	for _, v := range tokenOrder(log.acqs) {
		fail("%s", v)
	}
	guarded, vs := checkOwnership(h, log.acqs)
	st.guarded = guarded
	for _, v := range vs {
		fail("%s", v)
	}
	for _, e := range log.ends {
		from := e.at - int64(lockTTL*time.Second+time.Second)
		if !health.healthy(e.member, from, e.at) {
			st.faultEnds++
			continue
		}
		if !e.leaseGone {
			// The session stopped renewing (its keepalives failed for a whole TTL, as etcd's
			// client also gives up) while the lease itself lived, or its state is unknown: no
			// expiry, but worth knowing about.
			st.gaveUp++
			t.Logf("contender %d's session (lease %x) on healthy member %s gave up at %v with its lease alive or unknown (TimeToLive: %v); in the TTL before: %s",
				e.contender, e.lease, e.member, time.Duration(e.at), e.ttlErr, leaders.describe(from, e.at))
			continue
		}
		fail("early lease expiry: contender %d's session (lease %x) on healthy member %s, not paused, ended at %v with its lease gone; in the TTL before: %s",
			e.contender, e.lease, e.member, time.Duration(e.at), leaders.describe(from, e.at))
	}
	st.overlaps = overlaps(log.acqs)
	if st.acquisitions < 10 {
		t.Errorf("only %d acquisitions: the run proves little", st.acquisitions)
	}
	t.Logf("%d acquisitions (%d paused), %d guarded writes, register: %d accepted, %d fenced off; %d overlapping holds; %d sessions ended by the fault, %d gave up on a healthy member",
		st.acquisitions, st.pauses, st.guarded, st.accepted, st.fenced, st.overlaps, st.faultEnds, st.gaveUp)
	return st
}

// tokenOrder checks that a holder whose Lock was called after another's returned got a
// greater token.
func tokenOrder(acqs []*acquisition) []string {
	byRet := append([]*acquisition(nil), acqs...)
	sort.Slice(byRet, func(i, j int) bool { return byRet[i].ret < byRet[j].ret })
	byCall := append([]*acquisition(nil), acqs...)
	sort.Slice(byCall, func(i, j int) bool { return byCall[i].call < byCall[j].call })
	var out []string
	var best *acquisition
	j := 0
	for _, b := range byCall {
		for ; j < len(byRet) && byRet[j].ret < b.call; j++ {
			if best == nil || byRet[j].token > best.token {
				best = byRet[j]
			}
		}
		if best != nil && b.token <= best.token {
			out = append(out, fmt.Sprintf("fencing token not increasing: contender %d got %d (Lock at %v) after contender %d got %d (returned at %v)",
				b.contender, b.token, time.Duration(b.call), best.contender, best.token, time.Duration(best.ret)))
		}
	}
	return out
}

// checkOwnership replays the lock's keys through h and checks, at the revision of each
// acquisition's last read and of each write to guardedKey, that the holder's key was first in
// line. It returns how many guarded writes it checked.
func checkOwnership(h []watchcheck.Revision, acqs []*acquisition) (int, []string) {
	type query struct {
		rev        int64
		key        string
		token      int64
		what       string
		guardedPut bool
	}
	var qs []query
	for _, a := range acqs {
		qs = append(qs, query{rev: a.hdr, key: a.key, token: a.token,
			what: fmt.Sprintf("Lock of contender %d returned at %v", a.contender, time.Duration(a.ret))})
	}
	for _, r := range h {
		for _, e := range r.Events {
			if e.Kv.Key != guardedKey || e.Type != watchcheck.Put {
				continue
			}
			key, tok, _ := strings.Cut(e.Kv.Value, "@")
			token, _ := strconv.ParseInt(tok, 10, 64)
			qs = append(qs, query{rev: r.Rev, key: key, token: token, guardedPut: true,
				what: fmt.Sprintf("write of %s guarded by IsOwner", guardedKey)})
		}
	}
	sort.SliceStable(qs, func(i, j int) bool { return qs[i].rev < qs[j].rev })
	live := map[string]int64{} // lock key → create revision
	var out []string
	guarded, q := 0, 0
	for _, r := range h {
		for _, e := range r.Events {
			if !strings.HasPrefix(e.Kv.Key, lockPrefix+"/") {
				continue
			}
			if e.Type == watchcheck.Delete {
				delete(live, e.Kv.Key)
			} else {
				live[e.Kv.Key] = e.Kv.CreateRevision
			}
		}
		for ; q < len(qs) && qs[q].rev <= r.Rev; q++ {
			qu := qs[q]
			if qu.guardedPut {
				guarded++
			}
			first, firstRev := "", int64(0)
			for k, cr := range live {
				if first == "" || cr < firstRev {
					first, firstRev = k, cr
				}
			}
			if create, ok := live[qu.key]; !ok || create != qu.token || first != qu.key {
				out = append(out, fmt.Sprintf("%s with key %s (token %d) at revision %d, when the key was present=%v (created %d) and first in line was %s (created %d)",
					qu.what, qu.key, qu.token, qu.rev, ok, create, first, firstRev))
			}
		}
	}
	return guarded, out
}

// overlaps counts holds that began while an earlier hold was still believed held: how often
// the lock alone would have let two holders act at once.
func overlaps(acqs []*acquisition) int {
	byRet := append([]*acquisition(nil), acqs...)
	sort.Slice(byRet, func(i, j int) bool { return byRet[i].ret < byRet[j].ret })
	n := 0
	var until int64
	for _, a := range byRet {
		if a.ret < until {
			n++
		}
		until = max(until, a.done)
	}
	return n
}

// readHistory reads every revision from 2 through final from s, by a watch from revision 1
// (G3 runs never compact), and checks that it is consistent.
func readHistory(t testing.TB, s *ember.Store, final int64) []watchcheck.Revision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var h []watchcheck.Revision
	wc := s.Watch(ctx, "", ember.WithFromKey(), ember.WithRev(1), ember.WithPrevKV())
	for len(h) == 0 || h[len(h)-1].Rev < final {
		resp, ok := <-wc
		if !ok || resp.Err() != nil {
			t.Fatalf("history watch ended: %v", resp.Err())
		}
		h = watchcheck.AppendEvents(h, watchtest.Response(resp).Events)
	}
	if vs := watchcheck.CheckHistory(h); len(vs) > 0 {
		t.Fatalf("history: %s", watchcheck.List(vs))
	}
	return h
}

// TestLeases_LeaderChangeExtendsDeadline pins down the lease expiries TestLocks finds across a
// leader partition. API.md: "A new leader extends every lease's deadline so that no lease
// expires because of a leader change." A lease renewed 1.5 s into its 2 s TTL is kept alive
// from a follower, which retries its renewal every 100 ms from the moment the leader is
// partitioned away; the majority elects a new leader, which must extend the lease (etcd adds
// the election timeout on promotion) so that the waiting renewal lands.
func TestLeases_LeaderChangeExtendsDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	c := newCluster(t, 3)
	clk := newClock()
	leaders := watchLeaders(c, clk)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old, f := c.Leader(), c.Followers()[0]
	s := f.Store()
	g, err := s.Grant(ctx, lockTTL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "leased", "v", ember.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	renewed := clk.now()
	if _, err := s.KeepAliveOnce(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Duration(renewed) + 1500*time.Millisecond - time.Duration(clk.now()))
	partitioned := clk.now()
	isolate(c, old.ID)
	defer c.Network().HealAll()
	for {
		call := clk.now()
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, err := s.KeepAliveOnce(rctx, g.ID)
		rcancel()
		if err == nil {
			t.Logf("renewed on the new leader at %v", time.Duration(clk.now()))
			break
		}
		if errors.Is(err, ember.ErrLeaseNotFound) {
			t.Fatalf("lease %x (TTL %ds) expired across a leader change: renewed at %v, leader %s partitioned at %v, renewal retried every 100ms from %s since; the renewal at %v found it gone (%s)",
				g.ID, lockTTL, time.Duration(renewed), old.ID, time.Duration(partitioned), f.ID,
				time.Duration(call), leaders.describe(partitioned, clk.now()))
		}
		if ctx.Err() != nil {
			t.Fatalf("no renewal succeeded within a minute: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	gr, err := s.Get(ctx, "leased")
	if err != nil || len(gr.Kvs) != 1 {
		t.Fatalf("key attached to the kept-alive lease: %v %+v", err, gr)
	}
}
