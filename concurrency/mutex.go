package concurrency

import (
	"context"
	"errors"
	"sync"

	"github.com/ember-kv/ember"
)

// Mutex is a distributed lock: the session whose key under the mutex's prefix has the lowest
// create revision holds it, and the others queue behind it in create-revision order.
//
// Holding a Mutex does not by itself give mutual exclusion: the holder's session can end (a
// pause longer than the TTL, a revoke) while it still thinks it holds the lock. Guard every
// protected write with IsOwner in a Txn, or pass FencingToken to the protected resource; see the
// package documentation.
//
// The lock belongs to the session, not to the Mutex or the goroutine: two Mutexes on one Session
// and prefix share one key, so both hold the lock at once. Use one Session per contender.
//
// Lock, TryLock and Unlock must not be called concurrently on one Mutex. Key, Header, IsOwner
// and FencingToken may be called at any time from any goroutine.
type Mutex struct {
	s   *Session
	pfx string

	mu  sync.Mutex
	key string // the held lock's key; "" when not held
	rev int64  // the key's create revision
	hdr ember.ResponseHeader
}

// NewMutex returns a Mutex for the lock named by pfx, used through session s. The lock key is
// pfx + "/" + the session's lease ID in lowercase hex.
func NewMutex(s *Session, pfx string) *Mutex {
	return &Mutex{s: s, pfx: pfx + "/"}
}

// TryLock takes the lock if no other session holds it or waits for it, and returns ErrLocked
// otherwise, without staying queued.
func (m *Mutex) TryLock(ctx context.Context) error {
	a, err := m.tryAcquire(ctx)
	if err != nil {
		return err
	}
	if a.owner {
		m.held(a.key, a.rev, a.hdr)
		return nil
	}
	if err := abandon(ctx, m.s, a.key, a.rev); err != nil {
		return err
	}
	return ErrLocked
}

// Lock takes the lock, waiting for every session queued before this one to release it. It
// returns ErrSessionExpired if the session has ended, or ends or loses its lock key while
// waiting. If ctx ends or an error occurs, Lock takes its key out of the queue again (in the
// background if ctx ended while the key was being put).
func (m *Mutex) Lock(ctx context.Context) error {
	a, err := m.tryAcquire(ctx)
	if err != nil {
		return err
	}
	if a.owner {
		m.held(a.key, a.rev, a.hdr)
		return nil
	}
	if err := waitTurn(ctx, m.s, m.pfx, a.key, a.rev, a.hdr.Revision); err != nil {
		abandon(ctx, m.s, a.key, a.rev)
		return err
	}
	// The Jepsen fix (etcd#11456): the key may have gone with the session while waiting, and
	// then the turn that came is not ours.
	resp, err := m.s.Store().Get(ctx, a.key)
	if err != nil {
		abandon(ctx, m.s, a.key, a.rev)
		return err
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != a.rev {
		return ErrSessionExpired
	}
	m.held(a.key, a.rev, resp.Header)
	return nil
}

// Unlock releases the lock by deleting its key. It returns ErrLockReleased if the Mutex does
// not hold the lock.
func (m *Mutex) Unlock(ctx context.Context) error {
	m.mu.Lock()
	key := m.key
	m.mu.Unlock()
	if key == "" {
		return ErrLockReleased
	}
	if _, err := m.s.Store().Delete(ctx, key); err != nil {
		return err
	}
	m.held("", 0, ember.ResponseHeader{})
	return nil
}

// Key returns the key of the held lock, or "" when the Mutex does not hold it.
func (m *Mutex) Key() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.key
}

// Header returns the response header of the request that took the lock, or the zero header
// when the Mutex does not hold the lock.
func (m *Mutex) Header() ember.ResponseHeader {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hdr
}

// IsOwner returns a compare that holds while the lock taken by the last Lock or TryLock is
// still held. Put it in a Txn's If to make writes conditional on holding the lock. When the
// Mutex does not hold the lock the compare never holds.
func (m *Mutex) IsOwner() ember.Cmp {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.key == "" {
		// No key has a create revision below 0, so this never holds; the key is not empty
		// because the store rejects empty keys.
		return ember.Compare(ember.CreateRevision("\x00"), "<", 0)
	}
	return ember.Compare(ember.CreateRevision(m.key), "=", m.rev)
}

// FencingToken returns the create revision of the held lock's key, or 0 when the Mutex does not
// hold the lock. Tokens strictly increase from one holder of a lock to the next, so a resource
// that remembers the highest token it has seen can reject writes from a stale holder.
func (m *Mutex) FencingToken() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev
}

func (m *Mutex) held(key string, rev int64, hdr ember.ResponseHeader) {
	m.mu.Lock()
	m.key, m.rev, m.hdr = key, rev, hdr
	m.mu.Unlock()
}

// acquisition is the outcome of queueing for the lock.
type acquisition struct {
	key   string
	rev   int64 // create revision of key
	hdr   ember.ResponseHeader
	owner bool // key is first in line
}

// tryAcquire puts the session's key under the prefix unless it is there already, and reports
// whether it is first in line, all in one round trip.
func (m *Mutex) tryAcquire(ctx context.Context) (acquisition, error) {
	id := m.s.Lease()
	key := contenderKey(m.pfx, id)
	first := ember.OpGet(m.pfx, ember.WithFirstCreate()...)
	resp, err := enqueue(ctx, m.s, key, func(ctx context.Context) ember.Txn {
		return m.s.Store().Txn(ctx).
			If(ember.Compare(ember.CreateRevision(key), "=", 0)).
			Then(ember.OpPut(key, "", ember.WithLease(id)), first).
			Else(ember.OpGet(key), first)
	})
	if err != nil {
		return acquisition{}, err
	}
	a := acquisition{key: key, rev: resp.Header.Revision, hdr: resp.Header}
	if !resp.Succeeded {
		// The session queued before (or holds the lock already): keep its place.
		a.rev = resp.Responses[0].Get().Kvs[0].CreateRevision
	}
	owners := resp.Responses[1].Get().Kvs
	a.owner = len(owners) == 0 || owners[0].CreateRevision == a.rev
	return a, nil
}

// NewLocker returns a sync.Locker backed by a Mutex on session s. Lock and Unlock panic on
// error, for example when the session ends while Lock waits. Unlike a Mutex, the Locker also
// excludes the goroutines that share it, so it may be used like a sync.Mutex within the
// process as well as across sessions.
func NewLocker(s *Session, pfx string) sync.Locker {
	return &locker{m: NewMutex(s, pfx)}
}

type locker struct {
	local sync.Mutex // the session's key is shared, so goroutines queue here first
	m     *Mutex
}

func (l *locker) Lock() {
	l.local.Lock()
	if err := l.m.Lock(context.Background()); err != nil {
		l.local.Unlock()
		panic(err)
	}
}

func (l *locker) Unlock() {
	err := l.m.Unlock(context.Background())
	if errors.Is(err, ErrLockReleased) {
		// Not locked, so l.local is not held either.
		panic(err)
	}
	l.local.Unlock()
	if err != nil {
		panic(err)
	}
}
