package concurrency_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ember-kv/ember/concurrency"
)

func TestMutex_KeyLayoutAndToken(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	sess := newSession(t, s)
	m := concurrency.NewMutex(sess, "/layout")
	if m.Key() != "" || m.FencingToken() != 0 {
		t.Fatalf("unlocked mutex: Key %q, FencingToken %d", m.Key(), m.FencingToken())
	}
	if guardedPut(t, s, m.IsOwner(), "/guarded") {
		t.Fatal("IsOwner held for a mutex that was never locked")
	}
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := m.Key(), keyOf("/layout", sess); got != want {
		t.Fatalf("Key = %q, want %q", got, want)
	}
	resp, err := s.Get(ctx, m.Key())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("lock key: %v %v", resp, err)
	}
	kv := resp.Kvs[0]
	if kv.Lease != int64(sess.Lease()) || len(kv.Value) != 0 {
		t.Fatalf("lock key lease %x value %q, want lease %x and no value", kv.Lease, kv.Value, sess.Lease())
	}
	if m.FencingToken() != kv.CreateRevision || m.Header().Revision != kv.CreateRevision {
		t.Fatalf("FencingToken %d, Header().Revision %d, want the key's create revision %d",
			m.FencingToken(), m.Header().Revision, kv.CreateRevision)
	}
	if !guardedPut(t, s, m.IsOwner(), "/guarded") {
		t.Fatal("IsOwner did not hold while locked")
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(t, s, keyOf("/layout", sess)) {
		t.Fatal("Unlock left the key")
	}
	if guardedPut(t, s, m.IsOwner(), "/guarded") {
		t.Fatal("IsOwner held after Unlock")
	}
	if err := m.Unlock(ctx); !errors.Is(err, concurrency.ErrLockReleased) {
		t.Fatalf("second Unlock: %v, want ErrLockReleased", err)
	}
}

func TestMutex_Lock_FIFO(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	const pfx = "/fifo"
	holder := concurrency.NewMutex(newSession(t, s), pfx)
	if err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 4
	var (
		mu     sync.Mutex
		order  []int
		tokens = []int64{holder.FencingToken()}
	)
	errc := make(chan error, n)
	for i := 0; i < n; i++ {
		m := concurrency.NewMutex(newSession(t, s), pfx)
		go func() {
			if err := m.Lock(ctx); err != nil {
				errc <- err
				return
			}
			mu.Lock()
			order = append(order, i)
			tokens = append(tokens, m.FencingToken())
			mu.Unlock()
			errc <- m.Unlock(ctx)
		}()
		// Queue the waiters one at a time, so their create revisions follow i.
		waitForKeys(t, s, pfx, int64(i+2))
	}
	notYet(t, "Lock of a waiter", errc)
	if err := holder.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := recv(t, "waiter", errc, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for i, got := range order {
		if got != i {
			t.Fatalf("waiters got the lock in order %v, want queue order", order)
		}
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("fencing tokens %v not strictly increasing", tokens)
		}
	}
}

func TestMutex_MutualExclusion(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	var holders, acquired atomic.Int32
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		m := concurrency.NewMutex(newSession(t, s), "/excl")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				if err := m.Lock(ctx); err != nil {
					t.Error(err)
					return
				}
				if n := holders.Add(1); n != 1 {
					t.Errorf("%d holders at once", n)
				}
				acquired.Add(1)
				time.Sleep(time.Millisecond)
				holders.Add(-1)
				if err := m.Unlock(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := acquired.Load(); n != 20 {
		t.Fatalf("%d acquisitions, want 20", n)
	}
}

func TestMutex_TryLock(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	s1, s2 := newSession(t, s), newSession(t, s)
	m1, m2 := concurrency.NewMutex(s1, "/try"), concurrency.NewMutex(s2, "/try")

	if err := m1.TryLock(ctx); err != nil {
		t.Fatalf("TryLock of a free lock: %v", err)
	}
	if err := m2.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
		t.Fatalf("TryLock of a held lock: %v, want ErrLocked", err)
	}
	if exists(t, s, keyOf("/try", s2)) {
		t.Fatal("failed TryLock left its key queued")
	}
	if m2.Key() != "" || m2.FencingToken() != 0 {
		t.Fatalf("failed TryLock: Key %q, FencingToken %d", m2.Key(), m2.FencingToken())
	}
	// The lock belongs to the session: another Mutex on it takes the same key.
	again := concurrency.NewMutex(s1, "/try")
	if err := again.TryLock(ctx); err != nil {
		t.Fatalf("TryLock by the holding session: %v", err)
	}
	if again.FencingToken() != m1.FencingToken() {
		t.Fatalf("same-session token %d, want %d", again.FencingToken(), m1.FencingToken())
	}
	if err := m1.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m2.TryLock(ctx); err != nil {
		t.Fatalf("TryLock after Unlock: %v", err)
	}
}

func TestMutex_WaiterReturnsWhenSessionEnds(t *testing.T) {
	s := openStore(t)
	tests := []struct {
		name string
		// start makes the waiter's session; end ends it, or deletes its key, while it waits.
		start func(t *testing.T) (sess *concurrency.Session, end func())
	}{
		{"lease revoked", func(t *testing.T) (*concurrency.Session, func()) {
			sess := newSession(t, s)
			return sess, func() {
				if _, err := s.Revoke(testCtx(t), sess.Lease()); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"session orphaned", func(t *testing.T) (*concurrency.Session, func()) {
			sess := newSession(t, s)
			return sess, sess.Orphan
		}},
		{"session context cancelled", func(t *testing.T) (*concurrency.Session, func()) {
			ctx, cancel := context.WithCancel(context.Background())
			return newSession(t, s, concurrency.WithContext(ctx)), cancel
		}},
		{"key deleted", func(t *testing.T) (*concurrency.Session, func()) {
			sess := newSession(t, s)
			return sess, func() {
				if _, err := s.Delete(testCtx(t), keyOf("/"+t.Name(), sess)); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			pfx := "/" + t.Name()
			holder := concurrency.NewMutex(newSession(t, s), pfx)
			if err := holder.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			sess, end := tt.start(t)
			waiter := concurrency.NewMutex(sess, pfx)
			errc := make(chan error, 1)
			go func() { errc <- waiter.Lock(ctx) }()
			waitForKeys(t, s, pfx, 2)

			end()
			// The holder still holds the lock, so only an early exit can return now.
			if err := recv(t, "Lock", errc, 3*time.Second); !errors.Is(err, concurrency.ErrSessionExpired) {
				t.Fatalf("Lock: %v, want ErrSessionExpired", err)
			}
			if exists(t, s, keyOf(pfx, sess)) {
				t.Fatal("the waiter's key is still queued")
			}
			if waiter.Key() != "" || waiter.FencingToken() != 0 {
				t.Fatalf("failed Lock: Key %q, FencingToken %d", waiter.Key(), waiter.FencingToken())
			}
			if !guardedPut(t, s, holder.IsOwner(), "/guarded") {
				t.Fatal("the holder lost the lock")
			}
		})
	}
}

func TestMutex_CancelCleansUpKey(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	const pfx = "/cancel"
	holder := concurrency.NewMutex(newSession(t, s), pfx)
	if err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	waiterSess := newSession(t, s)
	waiter := concurrency.NewMutex(waiterSess, pfx)
	lockCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- waiter.Lock(lockCtx) }()
	waitForKeys(t, s, pfx, 2)

	cancel()
	if err := recv(t, "Lock", errc, 3*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock: %v, want context.Canceled", err)
	}
	// If the cancel caught Lock's first request in flight, the key goes in the background.
	waitForKeys(t, s, pfx, 1)
	select {
	case <-waiterSess.Done():
		t.Fatal("cancelling Lock ended the session")
	default:
	}
	// Nothing stale is left in the queue: the next waiter gets the lock on release.
	next := concurrency.NewMutex(newSession(t, s), pfx)
	go func() { errc <- next.Lock(ctx) }()
	waitForKeys(t, s, pfx, 2)
	if err := holder.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, "Lock", errc, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	// The same waiter may queue again on its live session.
	go func() { errc <- waiter.Lock(ctx) }()
	waitForKeys(t, s, pfx, 2)
	if err := next.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, "Lock", errc, 3*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestMutex_CancelNeverLeaksKey cancels Lock at arbitrary points, including while its first
// request is in flight, and checks that no key stays queued.
func TestMutex_CancelNeverLeaksKey(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	const pfx = "/cancel-race"
	holder := concurrency.NewMutex(newSession(t, s), pfx)
	if err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	waiter := concurrency.NewMutex(newSession(t, s), pfx)
	for i := 0; i < 40; i++ {
		lctx, cancel := context.WithTimeout(ctx, time.Duration(i%8)*250*time.Microsecond)
		err := waiter.Lock(lctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock: %v, want context.DeadlineExceeded", err)
		}
	}
	// Clean-up of a request that was in flight finishes in the background.
	waitForKeys(t, s, pfx, 1)
}

func TestMutex_LockOnEndedSession(t *testing.T) {
	s := openStore(t)
	sess := newSession(t, s)
	sess.Orphan()
	m := concurrency.NewMutex(sess, "/ended")
	if err := m.Lock(testCtx(t)); !errors.Is(err, concurrency.ErrSessionExpired) {
		t.Fatalf("Lock on an orphaned session: %v, want ErrSessionExpired", err)
	}
	waitForKeys(t, s, "/ended", 0)
}

func TestMutex_StaleHolderIsFenced(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	s1 := newSession(t, s)
	m1 := concurrency.NewMutex(s1, "/fenced")
	if err := m1.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, s1.Lease()); err != nil {
		t.Fatal(err)
	}
	m2 := concurrency.NewMutex(newSession(t, s), "/fenced")
	if err := m2.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	// m1 still believes it holds the lock; only the fence tells it otherwise.
	if guardedPut(t, s, m1.IsOwner(), "/guarded") {
		t.Fatal("the stale holder's guarded write succeeded")
	}
	if !guardedPut(t, s, m2.IsOwner(), "/guarded") {
		t.Fatal("the new holder's guarded write failed")
	}
	if m2.FencingToken() <= m1.FencingToken() {
		t.Fatalf("new token %d not above stale token %d", m2.FencingToken(), m1.FencingToken())
	}
}

func TestNewLocker(t *testing.T) {
	s := openStore(t)
	sess := newSession(t, s)
	l := concurrency.NewLocker(sess, "/locker")
	l.Lock()
	if !exists(t, s, keyOf("/locker", sess)) {
		t.Fatal("Locker.Lock did not put the lock key")
	}
	l.Unlock()
	defer func() {
		if r := recover(); !errors.Is(asError(r), concurrency.ErrLockReleased) {
			t.Fatalf("Unlock of an unheld Locker panicked with %v, want ErrLockReleased", r)
		}
	}()
	l.Unlock()
}

func TestNewLocker_ExcludesGoroutines(t *testing.T) {
	s := openStore(t)
	l := concurrency.NewLocker(newSession(t, s), "/locker-shared")
	var holders atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				l.Lock()
				if n := holders.Add(1); n != 1 {
					t.Errorf("%d goroutines hold the Locker", n)
				}
				holders.Add(-1)
				l.Unlock()
			}
		}()
	}
	wg.Wait()
}

func asError(r any) error {
	err, _ := r.(error)
	return err
}

func TestMutex_LockReturnsWhenStoreCloses(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	holder := concurrency.NewMutex(newSession(t, s), "/closing")
	if err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	waiter := concurrency.NewMutex(newSession(t, s), "/closing")
	errc := make(chan error, 1)
	go func() { errc <- waiter.Lock(ctx) }()
	waitForKeys(t, s, "/closing", 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	err := recv(t, "Lock", errc, 5*time.Second)
	if err == nil {
		t.Fatal("Lock succeeded on a closed store")
	}
	t.Logf("Lock on a closing store: %v", err)
}
