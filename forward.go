package ember

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ember-kv/ember/internal/peer"
	"github.com/ember-kv/ember/internal/wire"
)

// Limits of one batch of forwarded writes. The request stays far below the peer frame limit
// (a command alone may exceed forwardBatchBytes, up to WithMaxRequestBytes: it then goes
// alone), and so does the response, which the leader bounds (forwardReplyBudget).
const (
	forwardBatchMax    = 512
	forwardBatchBytes  = 4 << 20
	forwardReplyBudget = peer.DefaultMaxFrame / 2
)

// forwardInFlight is how many requests carrying writes a follower keeps in flight to the leader.
// More than one, so that the leader has the next batch to hand to raft while it commits one
// (one batch at a time left it idle for a round trip per batch: a third fewer writes a second
// at 256 clients); few, so that writes still gather into batches.
const forwardInFlight = 2

// forwarder sends the writes a follower forwards to the leader. A write that finds fewer than
// forwardInFlight requests in flight to the leader's address, and none waiting, goes alone, at
// once and on its caller's ctx, as a plain mForward. Writes that arrive while they are in flight
// wait, and when one returns all of them go as one mForwardBatch request: under load a follower
// makes one peer round trip per batch rather than per write, and a lone write waits for nothing.
//
// A batch is sent on a ctx of its own, cancelled only once every caller in it has given up, so
// one caller's ctx cannot cancel the others' commands. Each command keeps its request ID, and
// its caller (submit) retries it as it would a write forwarded alone: a batch answer lost is an
// unknown outcome for every command in it, and each command's own answer means what it would
// mean alone.
type forwarder struct {
	s    *Store
	call func(ctx context.Context, addr string, method uint8, req []byte) ([]byte, error)

	mu     sync.Mutex           // guards queues and the legacy fields
	queues map[string]*fwdQueue // by leader address; present while a request is in flight to it
	// The leader at legacyAddr in legacyTerm answered mForwardBatch as an unknown method (an
	// earlier version): it gets single forwards until the leader changes.
	legacyAddr string
	legacyTerm uint64
}

// fwdQueue is the requests in flight to an address and the writes waiting for one to return.
type fwdQueue struct {
	inFlight int
	pending  []*fwdWrite
}

// fwdWrite states: a write waits in a queue until it is taken into a batch (sent) or its
// caller gives up first (abandoned), whichever comes first.
const (
	fwdPending int32 = iota
	fwdSent
	fwdAbandoned
)

type fwdWrite struct {
	data  []byte
	state atomic.Int32
	batch *fwdBatch // set before the state becomes fwdSent

	done chan struct{} // closed once res/err are set
	res  []byte
	err  error
}

// fwdBatch is the ctx a batch is sent on, cancelled when its last caller gives up.
type fwdBatch struct {
	ctx    context.Context
	cancel context.CancelFunc
	live   atomic.Int32 // callers still waiting
}

func newForwarder(s *Store) *forwarder {
	return &forwarder{s: s, call: s.call, queues: make(map[string]*fwdQueue)}
}

// forward sends the encoded command data to the leader at addr and returns the encoded result.
// Its errors are those of a single mForward call.
func (f *forwarder) forward(ctx context.Context, addr string, data []byte) ([]byte, error) {
	f.mu.Lock()
	q := f.queues[addr]
	if q == nil {
		q = &fwdQueue{}
		f.queues[addr] = q
	}
	if q.inFlight < forwardInFlight && len(q.pending) == 0 {
		q.inFlight++
		f.mu.Unlock()
		f.s.metrics.forwardedToLeader(mForward)
		resp, err := f.call(ctx, addr, mForward, data)
		f.sendPending(addr)
		return resp, err
	}
	w := &fwdWrite{data: data, done: make(chan struct{})}
	q.pending = append(q.pending, w)
	f.mu.Unlock()

	select {
	case <-w.done:
		return w.res, w.err
	case <-ctx.Done():
	}
	if w.state.CompareAndSwap(fwdPending, fwdAbandoned) {
		return nil, fmt.Errorf("%w: %w", peer.ErrNotSent, ctx.Err())
	}
	select {
	case <-w.done:
		return w.res, w.err // the answer raced in; it is more useful than ctx's error
	default:
	}
	if w.batch.live.Add(-1) == 0 {
		w.batch.cancel()
	}
	return nil, fmt.Errorf("%w: %w", peer.ErrOutcomeUnknown, ctx.Err())
}

// sendPending is called when a request to addr returns: it sends, batch after batch, the writes
// that queued for addr meanwhile, in a goroutine of its own.
func (f *forwarder) sendPending(addr string) {
	ws, b := f.next(addr)
	if ws == nil {
		return
	}
	run := func() {
		for ; ws != nil; ws, b = f.next(addr) {
			f.send(addr, ws, b)
		}
	}
	if !f.s.spawn(run) {
		for ; ws != nil; ws, b = f.next(addr) { // closing: nothing more is sent
			b.cancel()
			for _, w := range ws {
				w.finish(nil, fmt.Errorf("%w: %w", peer.ErrNotSent, f.s.stoppedErr()))
			}
		}
	}
}

// next ends a request in flight to addr and takes the next batch of addr's waiting writes in
// its place, skipping those whose callers gave up. With none left it returns nil, and forgets
// addr's queue once nothing is in flight to it.
func (f *forwarder) next(addr string) ([]*fwdWrite, *fwdBatch) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.queues[addr]
	q.inFlight--
	var ws []*fwdWrite
	var b *fwdBatch
	size, i := 0, 0
	for ; i < len(q.pending) && len(ws) < forwardBatchMax; i++ {
		w := q.pending[i]
		if len(ws) > 0 && size+len(w.data) > forwardBatchBytes {
			break
		}
		if b == nil {
			b = &fwdBatch{}
			b.ctx, b.cancel = context.WithCancel(f.s.ctx)
			b.live.Store(1) // next's own reference, so that b outlives the callers taken so far
		}
		// Both first: a caller that finds its write sent leaves the batch through them.
		w.batch = b
		b.live.Add(1)
		if w.state.CompareAndSwap(fwdPending, fwdSent) {
			ws = append(ws, w)
			size += len(w.data)
		} else {
			b.live.Add(-1)
		}
	}
	clear(q.pending[:i])
	q.pending = q.pending[i:]
	if b != nil && b.live.Add(-1) == 0 {
		b.cancel() // every caller taken has given up already
	}
	if len(ws) == 0 {
		// Every waiting write was looked at, and every caller had given up.
		if q.inFlight == 0 {
			delete(f.queues, addr)
		}
		return nil, nil
	}
	q.inFlight++
	return ws, b
}

// send sends a batch of writes to addr and gives each its answer.
func (f *forwarder) send(addr string, ws []*fwdWrite, b *fwdBatch) {
	defer b.cancel()
	if len(ws) == 1 || f.legacy(addr) {
		f.sendEach(b.ctx, addr, ws)
		return
	}
	cmds := make([][]byte, len(ws))
	for i, w := range ws {
		cmds[i] = w.data
	}
	f.s.metrics.forwardedToLeader(mForwardBatch)
	resp, err := f.call(b.ctx, addr, mForwardBatch, wire.AppendBatch(nil, cmds))
	if errors.Is(err, wire.ErrMalformed) {
		// A leader of an earlier version answers an unknown method as malformed, and a leader
		// of this one refuses a batch it cannot decode before it hands any command to raft:
		// none was applied, and each goes alone.
		f.setLegacy(addr)
		f.sendEach(b.ctx, addr, ws)
		return
	}
	var replies []wire.BatchReply
	if err == nil {
		if replies, err = wire.UnmarshalBatchReplies(resp, len(ws)); err != nil {
			err = fmt.Errorf("%w: %w", peer.ErrOutcomeUnknown, err) // the leader may have applied them
		}
	}
	if err != nil {
		for _, w := range ws {
			w.finish(nil, err)
		}
		return
	}
	for i, r := range replies {
		if r.Code != wire.CodeOK {
			ws[i].finish(nil, fromPeer(&peer.Error{Code: r.Code, Msg: r.Msg}))
			continue
		}
		ws[i].finish(r.Result, nil)
	}
}

// sendEach sends each write as a single mForward, concurrently.
func (f *forwarder) sendEach(ctx context.Context, addr string, ws []*fwdWrite) {
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() {
			f.s.metrics.forwardedToLeader(mForward)
			w.finish(f.call(ctx, addr, mForward, w.data))
		})
	}
	wg.Wait()
}

func (f *forwarder) legacy(addr string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return addr == f.legacyAddr && f.s.raft.CurrentTerm() == f.legacyTerm
}

func (f *forwarder) setLegacy(addr string) {
	term := f.s.raft.CurrentTerm()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.legacyAddr, f.legacyTerm = addr, term
}

func (w *fwdWrite) finish(res []byte, err error) {
	w.res, w.err = res, err
	close(w.done)
}
