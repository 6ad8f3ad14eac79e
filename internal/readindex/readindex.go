// Package readindex batches linearizable reads: every read needs an index that the leader
// confirmed after the read began, and all reads waiting at the same time share one confirmation
// (Batcher). The leader confirms an index with a round of acks from a majority of the voters
// (Confirm).
package readindex

import (
	"context"
	"sync"
)

// Fetch obtains a read index: the leader's commit index, captured and then confirmed by a quorum
// after Fetch was called.
type Fetch func(ctx context.Context) (uint64, error)

// Batcher shares one Fetch among concurrent callers. A caller never joins a Fetch that was
// already running when it arrived: that Fetch may have captured its index before the caller's
// read began, which would let the read miss a write that finished before it started.
//
// Batcher is safe for concurrent use.
type Batcher struct {
	fetch Fetch

	mu      sync.Mutex
	next    *round // round that callers join; starts when the running one ends
	running bool   // a goroutine is running rounds
}

type round struct {
	done  chan struct{}
	index uint64
	err   error
	ctx   context.Context // ends only when every caller has left, or the round is over
	stop  context.CancelFunc
	refs  int // callers still waiting; guarded by Batcher.mu
}

// New returns a Batcher that calls fetch.
func New(fetch Fetch) *Batcher { return &Batcher{fetch: fetch} }

// Get returns a read index obtained by a Fetch that began after Get was called. A cancelled ctx
// abandons the wait.
func (b *Batcher) Get(ctx context.Context) (uint64, error) {
	b.mu.Lock()
	r := b.next
	if r == nil || r.ctx.Err() != nil {
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r = &round{done: make(chan struct{}), ctx: rctx, stop: cancel}
		b.next = r
	}
	r.refs++
	if !b.running {
		b.running = true
		go b.run()
	}
	b.mu.Unlock()

	select {
	case <-r.done:
		return r.index, r.err
	case <-ctx.Done():
		b.mu.Lock()
		if r.refs--; r.refs == 0 {
			r.stop() // nobody waits any more: abandon the fetch
		}
		b.mu.Unlock()
		return 0, ctx.Err()
	}
}

func (b *Batcher) run() {
	for {
		b.mu.Lock()
		r := b.next
		b.next = nil
		if r == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		r.index, r.err = b.fetch(r.ctx)
		r.stop()
		close(r.done)
	}
}
