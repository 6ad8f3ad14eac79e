package concurrency

import (
	"context"
	"sync"
	"time"

	"github.com/ember-kv/ember"
)

// defaultSessionTTL is the lease TTL, in seconds, of a session made without WithTTL (as etcd).
const defaultSessionTTL = 60

// Session is a lease kept alive in the background for as long as the session lasts. Keys a
// Mutex or an Election writes are attached to it, so they vanish when the session ends: when
// the lease expires or is revoked, when the session's context is cancelled, or on Orphan or
// Close.
//
// A Session is safe for concurrent use by multiple goroutines.
type Session struct {
	store  *ember.Store
	opts   sessionOptions
	id     ember.LeaseID
	ctx    context.Context
	cancel context.CancelFunc
	donec  chan struct{}

	mu sync.Mutex
	// cleanups holds, for each contender key of this session still being deleted in the
	// background, a channel closed when that is done (see enqueue).
	cleanups map[string]chan struct{}
}

type sessionOptions struct {
	ttl     int
	leaseID ember.LeaseID
	ctx     context.Context
}

// SessionOption configures NewSession.
type SessionOption func(*sessionOptions)

// WithTTL sets the TTL, in seconds, of the lease NewSession grants. The default is 60; a value
// of 0 or less is ignored. The store may round it up to its minimum TTL.
func WithTTL(ttl int) SessionOption {
	return func(o *sessionOptions) {
		if ttl > 0 {
			o.ttl = ttl
		}
	}
}

// WithLease makes the session keep an existing lease alive instead of granting one, for
// example to resume a session after a process restart.
func WithLease(id ember.LeaseID) SessionOption {
	return func(o *sessionOptions) { o.leaseID = id }
}

// WithContext sets the context the session lives in. Cancelling it stops the keepalives and
// ends the session; the lease itself then expires after its TTL.
func WithContext(ctx context.Context) SessionOption {
	return func(o *sessionOptions) { o.ctx = ctx }
}

// NewSession grants a lease (unless WithLease names one) and keeps it alive until the session
// ends.
func NewSession(s *ember.Store, opts ...SessionOption) (*Session, error) {
	o := sessionOptions{ttl: defaultSessionTTL, ctx: context.Background()}
	for _, opt := range opts {
		opt(&o)
	}
	id := o.leaseID
	granted := false
	if id == ember.NoLease {
		resp, err := s.Grant(o.ctx, int64(o.ttl))
		if err != nil {
			return nil, err
		}
		id, granted = resp.ID, true
	}

	ctx, cancel := context.WithCancel(o.ctx)
	ka, err := s.KeepAlive(ctx, id)
	if err != nil {
		cancel()
		if granted {
			// Nobody else knows this lease; don't leave it to run out its TTL.
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(o.ctx), ttlDuration(o.ttl))
			s.Revoke(rctx, id)
			rcancel()
		}
		return nil, err
	}

	sess := &Session{store: s, opts: o, id: id, ctx: ctx, cancel: cancel, donec: make(chan struct{})}
	go func() {
		defer close(sess.donec)
		defer cancel()
		// The store closes the channel when the lease is gone or ctx is done; the responses
		// themselves carry nothing we need.
		for range ka {
		}
	}()
	return sess, nil
}

// Store returns the store the session was made on.
func (s *Session) Store() *ember.Store { return s.store }

// Lease returns the ID of the session's lease.
func (s *Session) Lease() ember.LeaseID { return s.id }

// Ctx returns a context that is cancelled when the session ends.
func (s *Session) Ctx() context.Context { return s.ctx }

// Done returns a channel that is closed when the session ends: its lease expired or was
// revoked, its context was cancelled, or Orphan or Close was called. A lease that is gone is
// noticed at the next renewal, up to a third of the TTL later. After Done the session's keys
// may vanish at any time, so any lock or leadership it held must be treated as lost.
func (s *Session) Done() <-chan struct{} { return s.donec }

// Orphan stops keeping the lease alive without revoking it. Keys attached to the lease stay
// until it expires.
func (s *Session) Orphan() {
	s.cancel()
	<-s.donec
}

// Close ends the session and revokes its lease, which deletes every key attached to it. The
// revoke is given the session's TTL to finish; like etcd, Close reports ember.ErrLeaseNotFound
// if the lease was already gone.
func (s *Session) Close() error {
	s.Orphan()
	ctx, cancel := context.WithTimeout(s.opts.ctx, ttlDuration(s.opts.ttl))
	defer cancel()
	_, err := s.store.Revoke(ctx, s.id)
	return err
}

// beginCleanup records that key is being deleted in the background; call the returned func
// when that is done.
func (s *Session) beginCleanup(key string) (end func()) {
	done := make(chan struct{})
	s.mu.Lock()
	if s.cleanups == nil {
		s.cleanups = make(map[string]chan struct{})
	}
	s.cleanups[key] = done
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.cleanups[key] == done {
			delete(s.cleanups, key)
		}
		s.mu.Unlock()
		close(done)
	}
}

// awaitCleanup waits until no background deletion of key is under way, so that queueing under
// key again cannot race with it.
func (s *Session) awaitCleanup(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	done := s.cleanups[key]
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func ttlDuration(ttl int) time.Duration { return time.Duration(ttl) * time.Second }
