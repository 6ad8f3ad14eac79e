package concurrency

import (
	"context"
	"errors"
	"sync"

	"github.com/ember-kv/ember"
)

// Election is one session's part in a leader election: the session whose key under the
// election's prefix has the lowest create revision leads, and the others queue behind it in
// create-revision order. The leader's key holds its proclaimed value.
//
// Like a Mutex, leadership is not exclusive by itself: the leader's session can end while it
// still acts as leader. Guard a leader's writes with a Txn comparing
// CreateRevision(Key()) = Rev(), or hand Rev() to the resource as a fencing token.
//
// Campaign, Proclaim and Resign must not be called concurrently on one Election. Leader,
// Observe, Key, Rev and Header may be called at any time from any goroutine.
type Election struct {
	s   *Session
	pfx string

	mu  sync.Mutex
	key string // this session's key while campaigning or leading; "" otherwise
	rev int64  // the key's create revision
	hdr ember.ResponseHeader
}

// NewElection returns an Election on prefix pfx for session s. The candidate key is
// pfx + "/" + the session's lease ID in lowercase hex.
func NewElection(s *Session, pfx string) *Election {
	return &Election{s: s, pfx: pfx + "/"}
}

// ResumeElection returns an Election that leads with the key leaderKey created at leaderRev,
// for example one taken from Key and Rev before a restart, with a session that reuses the
// lease (WithLease).
func ResumeElection(s *Session, pfx, leaderKey string, leaderRev int64) *Election {
	return &Election{s: s, pfx: pfx + "/", key: leaderKey, rev: leaderRev}
}

// Campaign puts val as the session's candidate value and blocks until the session leads or ctx
// ends. It returns ErrSessionExpired if the session has ended, or ends or loses its key while
// waiting. If ctx ends or an error occurs, the candidate key is withdrawn (in the background if
// ctx ended while the key was being put).
func (e *Election) Campaign(ctx context.Context, val string) error {
	store := e.s.Store()
	id := e.s.Lease()
	key := contenderKey(e.pfx, id)
	resp, err := enqueue(ctx, e.s, key, func(ctx context.Context) ember.Txn {
		return store.Txn(ctx).
			If(ember.Compare(ember.CreateRevision(key), "=", 0)).
			Then(ember.OpPut(key, val, ember.WithLease(id))).
			Else(ember.OpGet(key))
	})
	if err != nil {
		return err
	}
	rev := resp.Header.Revision
	var existing *ember.KeyValue
	if !resp.Succeeded {
		// The session is a candidate already: keep its place in the queue.
		existing = resp.Responses[0].Get().Kvs[0]
		rev = existing.CreateRevision
	}
	e.setKey(key, rev)
	if existing != nil && string(existing.Value) != val {
		if err := e.Proclaim(ctx, val); err != nil {
			e.withdraw(ctx, key, rev)
			return err
		}
	}

	if err := waitTurn(ctx, e.s, e.pfx, key, rev, resp.Header.Revision); err != nil {
		e.withdraw(ctx, key, rev)
		return err
	}
	// As for Mutex.Lock: the key may have gone with the session while waiting.
	got, err := store.Get(ctx, key)
	if err != nil {
		e.withdraw(ctx, key, rev)
		return err
	}
	if len(got.Kvs) == 0 || got.Kvs[0].CreateRevision != rev {
		e.setKey("", 0)
		return ErrSessionExpired
	}
	e.setHeader(got.Header)
	return nil
}

// withdraw deletes a candidate key whose campaign failed and forgets it.
func (e *Election) withdraw(ctx context.Context, key string, rev int64) {
	abandon(ctx, e.s, key, rev)
	e.setKey("", 0)
}

// Proclaim replaces the leader's value without giving up leadership. It returns
// ErrElectionNotLeader if this Election does not lead (or no longer does).
func (e *Election) Proclaim(ctx context.Context, val string) error {
	key, rev := e.candidate()
	if key == "" {
		return ErrElectionNotLeader
	}
	resp, err := e.s.Store().Txn(ctx).
		If(ember.Compare(ember.CreateRevision(key), "=", rev)).
		Then(ember.OpPut(key, val, ember.WithLease(e.s.Lease()))).
		Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		e.setKey("", 0)
		return ErrElectionNotLeader
	}
	e.setHeader(resp.Header)
	return nil
}

// Resign gives up leadership by deleting the leader key, so the next candidate in line leads.
// It is a no-op if this Election does not lead. If it fails, the Election still counts itself
// leader, so that Resign can be retried.
func (e *Election) Resign(ctx context.Context) error {
	key, rev := e.candidate()
	if key == "" {
		return nil
	}
	resp, err := e.s.Store().Txn(ctx).
		If(ember.Compare(ember.CreateRevision(key), "=", rev)).
		Then(ember.OpDelete(key)).
		Commit()
	if err != nil {
		return err
	}
	e.setKey("", 0)
	e.setHeader(resp.Header)
	return nil
}

// Leader returns the current leader's key and value in Kvs[0], or ErrElectionNoLeader.
func (e *Election) Leader(ctx context.Context) (*ember.GetResponse, error) {
	resp, err := e.s.Store().Get(ctx, e.pfx, ember.WithFirstCreate()...)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrElectionNoLeader
	}
	return resp, nil
}

// Observe returns a channel that receives the leader's key and value (in Kvs[0]) each time
// the leader or its proclaimed value changes, starting with the current leader. It walks the
// election's history in revision order, so a slow reader misses no leader unless that history
// is compacted first; it then skips to the latest leader. The channel is closed when ctx ends
// or the store fails.
func (e *Election) Observe(ctx context.Context) <-chan ember.GetResponse {
	ch := make(chan ember.GetResponse)
	go e.observe(ctx, ch)
	return ch
}

func (e *Election) observe(ctx context.Context, ch chan<- ember.GetResponse) {
	defer close(ch)
	store := e.s.Store()
	at := int64(0) // the revision to read the leader at; 0 for the latest
	for {
		resp, err := store.Get(ctx, e.pfx, append(ember.WithFirstCreate(), ember.WithRev(at))...)
		if errors.Is(err, ember.ErrCompacted) {
			at = 0
			continue
		}
		if err != nil {
			return
		}
		if at == 0 {
			at = resp.Header.Revision
		}
		if len(resp.Kvs) == 0 {
			at, err = e.nextPut(ctx, at+1)
		} else {
			if !send(ctx, ch, *resp) {
				return
			}
			at, err = e.follow(ctx, ch, string(resp.Kvs[0].Key), at+1)
		}
		// A compacted history only costs the leaders in it: go on from the latest.
		if errors.Is(err, ember.ErrCompacted) {
			at = 0
		} else if err != nil {
			return
		}
	}
}

// nextPut returns the revision of the first put under the prefix at or after rev.
func (e *Election) nextPut(ctx context.Context, rev int64) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range e.s.Store().Watch(ctx, e.pfx, ember.WithPrefix(), ember.WithRev(rev), ember.WithFilterDelete()) {
		if err := wr.Err(); err != nil {
			return 0, err
		}
		for _, ev := range wr.Events {
			if ev.Type == ember.EventTypePut {
				return ev.Kv.ModRevision, nil
			}
		}
	}
	return 0, watchEnded(ctx)
}

// follow posts every value the leader key takes from rev on, and returns the revision that
// deleted it.
func (e *Election) follow(ctx context.Context, ch chan<- ember.GetResponse, key string, rev int64) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range e.s.Store().Watch(ctx, key, ember.WithRev(rev)) {
		if err := wr.Err(); err != nil {
			return 0, err
		}
		for _, ev := range wr.Events {
			if ev.Type == ember.EventTypeDelete {
				return ev.Kv.ModRevision, nil
			}
			if !send(ctx, ch, ember.GetResponse{Header: wr.Header, Kvs: []*ember.KeyValue{ev.Kv}, Count: 1}) {
				return 0, ctx.Err()
			}
		}
	}
	return 0, watchEnded(ctx)
}

func send(ctx context.Context, ch chan<- ember.GetResponse, r ember.GetResponse) bool {
	select {
	case ch <- r:
		return true
	case <-ctx.Done():
		return false
	}
}

// Key returns this session's candidate key while it campaigns or leads, else "".
func (e *Election) Key() string {
	key, _ := e.candidate()
	return key
}

// Rev returns the create revision of Key, else 0. While the session leads it is a fencing
// token: it strictly increases from one leader to the next.
func (e *Election) Rev() int64 {
	_, rev := e.candidate()
	return rev
}

// Header returns the response header of the last successful Campaign, Proclaim or Resign.
func (e *Election) Header() ember.ResponseHeader {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hdr
}

func (e *Election) candidate() (string, int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.key, e.rev
}

func (e *Election) setKey(key string, rev int64) {
	e.mu.Lock()
	e.key, e.rev = key, rev
	e.mu.Unlock()
}

func (e *Election) setHeader(hdr ember.ResponseHeader) {
	e.mu.Lock()
	e.hdr = hdr
	e.mu.Unlock()
}
