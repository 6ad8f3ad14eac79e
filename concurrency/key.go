package concurrency

import (
	"context"
	"errors"
	"fmt"

	"github.com/ember-kv/ember"
)

// errWatchClosed reports a watch that ended without an error of its own, which happens when
// the store shuts down.
var errWatchClosed = errors.New("ember: concurrency: watch closed while waiting")

// contenderKey is the key a session queues under in a Mutex or Election prefix (which ends in
// "/"): etcd's layout, so tools that inspect etcd lock keys read ember's the same way.
func contenderKey(pfx string, id ember.LeaseID) string {
	return fmt.Sprintf("%s%x", pfx, int64(id))
}

// waitTurn blocks until no key under pfx created before myRev is left, that is until the
// contender that created myKey at myRev is first in line. fromRev is a revision at which myKey
// is known to exist.
//
// It waits on the immediate predecessor only, so a release wakes one waiter rather than all of
// them, and the queue is FIFO by create revision. It gives up with ErrSessionExpired as soon as
// the session ends or myKey is deleted: the key is what makes the caller a contender, so
// waiting on could only end in a lock or leadership that is already lost (etcd#19597).
func waitTurn(ctx context.Context, s *Session, pfx, myKey string, myRev, fromRev int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &turnWaiter{
		store: s.Store(),
		done:  s.Done(),
		own:   s.Store().Watch(ctx, myKey, ember.WithRev(fromRev), ember.WithFilterPut()),
	}
	predecessor := append(ember.WithLastCreate(), ember.WithMaxCreateRev(myRev-1))
	for {
		select {
		case <-w.done:
			return ErrSessionExpired
		default:
		}
		resp, err := w.store.Get(ctx, pfx, predecessor...)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		if err := w.waitDelete(ctx, string(resp.Kvs[0].Key), resp.Header.Revision); err != nil {
			return err
		}
	}
}

type turnWaiter struct {
	store *ember.Store
	done  <-chan struct{}
	own   ember.WatchChan // deletes of the waiter's own key; nil once that watch has ended
}

// waitDelete returns once key, which exists at rev, has been deleted, or the predecessor must
// be looked up again.
func (w *turnWaiter) waitDelete(ctx context.Context, key string, rev int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := w.store.Watch(ctx, key, ember.WithRev(rev), ember.WithFilterPut())
	for {
		select {
		case wr, ok := <-wch:
			if !ok {
				return watchEnded(ctx)
			}
			if err := wr.Err(); err != nil {
				if errors.Is(err, ember.ErrCompacted) {
					// The deletion may be in the compacted history; the caller's next Get
					// tells.
					return nil
				}
				return err
			}
			if hasDelete(wr.Events) {
				return nil
			}
		case wr, ok := <-w.own:
			if !ok || wr.Err() != nil {
				// Only an early exit is lost: callers re-read their key after waiting.
				w.own = nil
				continue
			}
			if hasDelete(wr.Events) {
				return ErrSessionExpired
			}
		case <-w.done:
			return ErrSessionExpired
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// watchEnded is the error for a watch channel that closed without a final error response.
func watchEnded(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return errWatchClosed
}

func hasDelete(evs []*ember.Event) bool {
	for _, ev := range evs {
		if ev.Type == ember.EventTypeDelete {
			return true
		}
	}
	return false
}

// enqueue commits txn, which puts the contender key key unless the session has it already.
// Commit does not tell whether a write whose wait was cancelled happened, and a key left
// behind would stall the queue once it came first, until the session ended. So the txn runs
// detached from ctx's cancellation (bounded by the session TTL), and if ctx ends first, a
// goroutine waits for the outcome and deletes the key if this txn created it. Until that is
// done, the session does not queue under key again: the new request would find the doomed key
// and wait on it.
func enqueue(ctx context.Context, s *Session, key string, txn func(context.Context) ember.Txn) (*ember.TxnResponse, error) {
	select {
	case <-s.Done():
		// An orphaned session's lease is still there to put the key with, but would
		// expire under it.
		return nil, ErrSessionExpired
	default:
	}
	if err := s.awaitCleanup(ctx, key); err != nil {
		return nil, err
	}
	type result struct {
		resp *ember.TxnResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ttlDuration(s.opts.ttl))
		defer cancel()
		resp, err := txn(tctx).Commit()
		done <- result{resp, err}
	}()
	select {
	case r := <-done:
		return r.resp, r.err
	case <-ctx.Done():
		end := s.beginCleanup(key)
		go func() {
			defer end()
			if r := <-done; r.err == nil && r.resp.Succeeded {
				abandon(ctx, s, key, r.resp.Header.Revision)
			}
		}()
		return nil, ctx.Err()
	}
}

// abandon deletes a contender key whose wait failed, so that it does not hold up the queue
// until the session ends. Only the key created at rev is deleted: a key of the same name
// created later belongs to another Mutex or Election on the same session. ctx may be done
// already, so only its values are kept.
func abandon(ctx context.Context, s *Session, key string, rev int64) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ttlDuration(s.opts.ttl))
	defer cancel()
	_, err := s.Store().Txn(ctx).
		If(ember.Compare(ember.CreateRevision(key), "=", rev)).
		Then(ember.OpDelete(key)).
		Commit()
	return err
}
