package concurrency_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ember-kv/ember/concurrency"
	"github.com/ember-kv/ember/embertest"
)

// fencedRegister is the resource the contenders' lock guards: it accepts a write only if its
// token is above every token accepted before, or equal to the last one and from the same
// holder (the same critical section going on), and it records every write in order.
type fencedRegister struct {
	mu       sync.Mutex
	last     int64
	holder   string
	accepted []registerWrite
	rejected []registerWrite
}

type registerWrite struct {
	token  int64
	holder string
	op     string // "enter" or "exit": the two ends of one critical section
}

func (r *fencedRegister) write(w registerWrite) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w.token < r.last || (w.token == r.last && w.holder != r.holder) {
		r.rejected = append(r.rejected, w)
		return
	}
	r.last, r.holder = w.token, w.holder
	r.accepted = append(r.accepted, w)
}

// contentionStats counts what the contenders went through.
type contentionStats struct {
	acquisitions  atomic.Int64 // Lock returned nil
	confirmed     atomic.Int64 // ... and the lock key was there right after
	lostAfterLock atomic.Int64 // ... and the key was gone, with the session over
	unchecked     atomic.Int64 // ... and the check read failed (the member was stopping)
	lockErrors    atomic.Int64
	unlockErrors  atomic.Int64
	sessions      atomic.Int64

	mu         sync.Mutex
	violations []string // Lock returned nil although the key was gone and the session lived
}

func (s *contentionStats) violation(format string, args ...any) {
	s.mu.Lock()
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

// TestMutex_ContendersUnderLeaderKills runs contenders for one Mutex on every member of a
// cluster whose raft leader is stopped and restarted over and over, and checks that the lock
// still hands out strictly increasing fencing tokens, that no two holders' critical sections
// interleave at the resource, and that Lock never reports a lock whose key is already gone.
func TestMutex_ContendersUnderLeaderKills(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 14s")
	}
	const (
		pfx         = "/locks/contention"
		contenders  = 8
		kills       = 3
		killEvery   = 2500 * time.Millisecond
		downFor     = time.Second
		callTimeout = 3 * time.Second
		// checkGrace is how long a contender that finds its lock key gone waits for its
		// session to notice: Done closes from another goroutine once the member has applied
		// the lease's revoke, which the read just showed.
		checkGrace = time.Second
	)
	c := embertest.NewCluster(t, 3)
	reg := &fencedRegister{}
	stats := &contentionStats{}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range contenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := &contender{id: i, c: c, pfx: pfx, reg: reg, stats: stats,
				callTimeout: callTimeout, checkGrace: checkGrace}
			k.run(ctx)
		}()
	}

	// Stop and restart the raft leader from the test goroutine (embertest reports its own
	// failures with t.Fatal), a fixed number of times however slow a loaded machine makes each
	// cycle; the contenders run until the last restarted member has been back for a while.
	for range kills {
		time.Sleep(killEvery)
		leader := c.Leader()
		c.Stop(leader.ID)
		time.Sleep(downFor)
		c.Restart(leader.ID)
	}
	time.Sleep(killEvery)
	cancel()
	wg.Wait()

	t.Logf("%d acquisitions (%d confirmed, %d lost right after Lock as their session ended, %d unchecked) "+
		"by %d sessions over %d leader kills; %d Lock and %d Unlock errors; %d fenced writes accepted",
		stats.acquisitions.Load(), stats.confirmed.Load(), stats.lostAfterLock.Load(), stats.unchecked.Load(),
		stats.sessions.Load(), kills, stats.lockErrors.Load(), stats.unlockErrors.Load(), len(reg.accepted))
	if stats.confirmed.Load() == 0 {
		t.Fatal("no contender ever confirmed holding the lock")
	}

	// (c) Lock returned nil only with the key in place, unless the session had ended.
	for _, v := range stats.violations {
		t.Error(v)
	}
	// (a) and (b): a rejected write is a holder writing after a later holder had begun, that
	// is two critical sections that overlapped.
	for _, w := range reg.rejected {
		t.Errorf("register rejected %s by %s with token %d: another holder wrote with a token at least as high",
			w.op, w.holder, w.token)
	}
	for i := 1; i < len(reg.accepted); i++ {
		prev, cur := reg.accepted[i-1], reg.accepted[i]
		sameSection := cur.token == prev.token && cur.holder == prev.holder &&
			prev.op == "enter" && cur.op == "exit"
		nextSection := cur.token > prev.token && prev.op == "exit" && cur.op == "enter"
		if !sameSection && !nextSection {
			t.Errorf("accepted write %d: %s by %s (token %d) after %s by %s (token %d): sections interleave",
				i, cur.op, cur.holder, cur.token, prev.op, prev.holder, prev.token)
		}
	}
}

// contender loops on Lock, check, fenced writes, Unlock, moving to another member whenever its
// member stops.
type contender struct {
	id          int
	c           *embertest.Cluster
	pfx         string
	reg         *fencedRegister
	stats       *contentionStats
	callTimeout time.Duration
	checkGrace  time.Duration

	sess *concurrency.Session
	m    *concurrency.Mutex
}

func (k *contender) run(ctx context.Context) {
	defer k.dropSession()
	for ctx.Err() == nil {
		if !k.ensureSession(ctx) {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, k.callTimeout)
		err := k.m.Lock(lctx)
		cancel()
		if err != nil {
			// Failover, a stopped member or an ended session: all expected; start over,
			// on a new session if this one is over.
			k.stats.lockErrors.Add(1)
			continue
		}
		k.stats.acquisitions.Add(1)
		if k.confirm(ctx) {
			holder := fmt.Sprintf("contender %d (lease %x)", k.id, int64(k.sess.Lease()))
			token := k.m.FencingToken()
			k.reg.write(registerWrite{token: token, holder: holder, op: "enter"})
			// Some work inside the critical section, so that an overlapping holder would
			// write in between.
			time.Sleep(5 * time.Millisecond)
			k.reg.write(registerWrite{token: token, holder: holder, op: "exit"})
		}
		uctx, cancel := context.WithTimeout(context.Background(), k.callTimeout)
		err = k.m.Unlock(uctx)
		cancel()
		if err != nil {
			// The key may still be there; revoking the session's lease removes it, so that
			// the others need not wait for the lease to expire.
			k.stats.unlockErrors.Add(1)
			k.dropSession()
		}
	}
}

// confirm reads the lock key right after Lock returned, on the same member, and reports
// whether it is there with the create revision Lock reported. A key that is gone is a
// violation unless the session has ended: a lease can expire right after Lock returns, but
// then the session's Done closes.
func (k *contender) confirm(ctx context.Context) bool {
	key, token := k.m.Key(), k.m.FencingToken()
	gctx, cancel := context.WithTimeout(ctx, k.callTimeout)
	resp, err := k.sess.Store().Get(gctx, key)
	cancel()
	if err != nil {
		k.stats.unchecked.Add(1)
		return false
	}
	if len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision == token {
		k.stats.confirmed.Add(1)
		return true
	}
	select {
	case <-k.sess.Done():
		k.stats.lostAfterLock.Add(1)
	case <-time.After(k.checkGrace):
		state := "gone"
		if len(resp.Kvs) == 1 {
			state = fmt.Sprintf("created at revision %d", resp.Kvs[0].CreateRevision)
		}
		k.stats.violation("contender %d: Lock returned nil with token %d, but at revision %d its key %s is %s "+
			"while its session lives (lease %s)", k.id, token, resp.Header.Revision, key, state, k.leaseState())
	}
	return false
}

// leaseState describes the session's lease as the leader sees it, for a violation report.
func (k *contender) leaseState() string {
	ctx, cancel := context.WithTimeout(context.Background(), k.callTimeout)
	defer cancel()
	ttl, err := k.sess.Store().TimeToLive(ctx, k.sess.Lease())
	switch {
	case err != nil:
		return fmt.Sprintf("unknown: %v", err)
	case ttl.TTL < 0:
		return "expired"
	default:
		return fmt.Sprintf("alive, %ds left", ttl.TTL)
	}
}

// ensureSession makes sure the contender has a live session on a running member, preferring
// its own member, and reports whether it has one.
func (k *contender) ensureSession(ctx context.Context) bool {
	if k.sess != nil {
		select {
		case <-k.sess.Done():
		default:
			if k.c.Member(k.sess.Store().ID()).Store() == k.sess.Store() {
				return true
			}
		}
		// The member stopped (perhaps to restart with a new store) or the lease is gone.
		k.dropSession()
	}
	members := k.c.Members()
	for j := range members {
		s := members[(k.id+j)%len(members)].Store()
		if s == nil {
			continue
		}
		// No WithContext: it would bound the session's life as well as its grant. A grant
		// waits at most for the next leader, or fails at once on a stopped store.
		sess, err := concurrency.NewSession(s, concurrency.WithTTL(2))
		if err != nil {
			continue
		}
		k.stats.sessions.Add(1)
		k.sess, k.m = sess, concurrency.NewMutex(sess, k.pfx)
		return true
	}
	// No member is running, or none could grant a lease yet.
	select {
	case <-ctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
	return false
}

// dropSession closes the contender's session, revoking its lease if the member can still
// reach the leader, so that its lock key does not hold up the others until the lease expires.
// When the revoke fails (the lease is gone, or the member stopped), the lease expires on its
// own.
func (k *contender) dropSession() {
	if k.sess == nil {
		return
	}
	k.sess.Close()
	k.sess, k.m = nil, nil
}

// TestMutex_CallsReturnWhenStoreCloses closes a store while contenders, each on its own lock so
// that many writes are in flight at once, call Lock and Unlock with a context that never ends.
// Every call must return once the store is closed, with an error if it could not finish.
//
// It fails because a write that raft has committed but not yet applied when the store closes
// waits forever: Store.applyLocal waits on the raft future in waitFuture (write.go), which
// selects only on the future and ctx, and hashicorp/raft never responds to a future whose
// batch is still queued for its FSM goroutine at Shutdown. With a ctx that has a deadline,
// the call returns at the deadline but the goroutine waitFuture started stays behind.
func TestMutex_CallsReturnWhenStoreCloses(t *testing.T) {
	const contenders = 16
	for iter := range 40 {
		s := openStore(t)
		var wg sync.WaitGroup
		for i := range contenders {
			m := concurrency.NewMutex(newSession(t, s), fmt.Sprintf("/closing-under-load/%d", i))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for m.Lock(context.Background()) == nil && m.Unlock(context.Background()) == nil {
				}
			}()
		}
		time.Sleep(20 * time.Millisecond)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		returned := make(chan struct{})
		go func() {
			wg.Wait()
			close(returned)
		}()
		select {
		case <-returned:
		case <-time.After(5 * time.Second):
			t.Fatalf("close %d: Lock or Unlock still blocked 5s after Store.Close", iter+1)
		}
	}
}
