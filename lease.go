package ember

import (
	"cmp"
	"container/heap"
	"container/list"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/ember-kv/ember/internal/wire"
)

// LeaseID identifies a lease.
type LeaseID int64

// NoLease is the lease of a key that has none.
const NoLease LeaseID = 0

// LeaseGrantResponse answers Grant.
type LeaseGrantResponse struct {
	Header ResponseHeader
	ID     LeaseID
	TTL    int64 // seconds; may be raised to the minimum TTL
}

// LeaseRevokeResponse answers Revoke.
type LeaseRevokeResponse struct {
	Header ResponseHeader
}

// LeaseKeepAliveResponse answers one keepalive.
type LeaseKeepAliveResponse struct {
	Header ResponseHeader
	ID     LeaseID
	TTL    int64 // seconds the lease now has left
}

// LeaseTimeToLiveResponse answers TimeToLive.
type LeaseTimeToLiveResponse struct {
	Header     ResponseHeader
	ID         LeaseID
	TTL        int64    // seconds left; -1 if the lease is unknown or expired
	GrantedTTL int64    // the TTL it was granted with
	Keys       [][]byte // attached keys, with WithAttachedKeys
}

// LeaseStatus describes one lease in a Leases listing.
type LeaseStatus struct {
	ID LeaseID
}

// LeaseLeasesResponse answers Leases.
type LeaseLeasesResponse struct {
	Header ResponseHeader
	Leases []LeaseStatus
}

// LeaseOption configures TimeToLive.
type LeaseOption func(*leaseOp)

type leaseOp struct{ attachedKeys bool }

// WithAttachedKeys makes TimeToLive list the keys attached to the lease.
func WithAttachedKeys() LeaseOption { return func(o *leaseOp) { o.attachedKeys = true } }

// minLeaseTTL is ceil(1.5 × election timeout) in seconds, as etcd: a shorter lease could expire
// during a leader election.
func (s *Store) minLeaseTTL() int64 {
	return int64(math.Ceil(1.5 * s.cfg.electionTimeout.Seconds()))
}

// Grant creates a lease that lives ttl seconds unless kept alive. A ttl below the minimum
// (ceil(1.5 × election timeout), 2 s by default) is raised to it.
func (s *Store) Grant(ctx context.Context, ttl int64) (*LeaseGrantResponse, error) {
	return s.GrantWithID(ctx, NoLease, ttl)
}

// GrantWithID is Grant with a lease ID chosen by the caller, as etcd's LeaseGrantRequest.ID:
// any ID but NoLease, negative ones included, and NoLease lets the store pick one, as Grant.
// An ID in use is refused with ErrLeaseExists, on every member alike: the ID is part of the
// logged command. A grant retried after ErrTimeout may find its own first attempt applied and
// get ErrLeaseExists, as with etcd.
func (s *Store) GrantWithID(ctx context.Context, id LeaseID, ttl int64) (*LeaseGrantResponse, error) {
	if ttl > maxLeaseTTL {
		return nil, ErrTTLTooLarge
	}
	ttl = max(ttl, s.minLeaseTTL())
	for {
		pick := int64(id)
		if id == NoLease {
			pick = randomLeaseID()
		}
		res, err := s.propose(ctx, &wire.Command{Kind: wire.KindLeaseGrant, LeaseID: pick, LeaseTTL: ttl})
		if errors.Is(err, ErrLeaseExists) && id == NoLease {
			continue // a random ID collided; pick another
		}
		if err != nil {
			return nil, err
		}
		return &LeaseGrantResponse{Header: s.header(res.Revision), ID: LeaseID(pick), TTL: ttl}, nil
	}
}

func randomLeaseID() int64 {
	for {
		var b [8]byte
		rand.Read(b[:])
		if id := int64(binary.BigEndian.Uint64(b[:]) >> 1); id != 0 {
			return id
		}
	}
}

// Revoke deletes the lease and every key attached to it, at one revision.
func (s *Store) Revoke(ctx context.Context, id LeaseID) (*LeaseRevokeResponse, error) {
	res, err := s.propose(ctx, &wire.Command{Kind: wire.KindLeaseRevoke, LeaseID: int64(id)})
	if err != nil {
		return nil, err
	}
	return &LeaseRevokeResponse{Header: s.header(res.Revision)}, nil
}

// Leases lists every live lease, soonest to expire first, as etcd does. The order is this
// member's estimate: the leader knows each deadline, other members know the TTL left at the
// last grant or checkpoint they applied.
func (s *Store) Leases(ctx context.Context) (*LeaseLeasesResponse, error) {
	v, err := s.linearizableView(ctx)
	if err != nil {
		return nil, err
	}
	r := &LeaseLeasesResponse{Header: s.header(v.st.rev)}
	v.st.leases.Scan(func(l *leaseRecord) bool {
		r.Leases = append(r.Leases, LeaseStatus{ID: LeaseID(l.id)})
		return true
	})
	s.lessor.sortByExpiry(r.Leases)
	return r, nil
}

// TimeToLive reports how long a lease has left. Only the leader keeps lease clocks, so the
// question goes to the leader. An unknown or expired lease has TTL -1 (and no error).
func (s *Store) TimeToLive(ctx context.Context, id LeaseID, opts ...LeaseOption) (*LeaseTimeToLiveResponse, error) {
	var o leaseOp
	for _, opt := range opts {
		opt(&o)
	}
	e := wire.Encoder{}
	e.Varint(int64(id))
	e.Bool(o.attachedKeys)
	resp, err := s.onLeader(ctx, mTimeToLive, e.B)
	if err != nil {
		return nil, err
	}
	d := wire.NewDecoder(resp)
	r := &LeaseTimeToLiveResponse{ID: id}
	rev := d.Varint()
	r.TTL, r.GrantedTTL = d.Varint(), d.Varint()
	n := d.Len(d.Remaining())
	for i := 0; i < n; i++ {
		r.Keys = append(r.Keys, d.Bytes())
	}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	r.Header = s.header(rev)
	if s.ns != "" {
		r.Keys = s.nsKeys(r.Keys)
	}
	return r, nil
}

// KeepAliveOnce renews the lease once, to its full TTL.
func (s *Store) KeepAliveOnce(ctx context.Context, id LeaseID) (*LeaseKeepAliveResponse, error) {
	e := wire.Encoder{}
	e.Varint(int64(id))
	resp, err := s.onLeader(ctx, mKeepAlive, e.B)
	if err != nil {
		return nil, err
	}
	d := wire.NewDecoder(resp)
	rev, ttl := d.Varint(), d.Varint()
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return &LeaseKeepAliveResponse{Header: s.header(rev), ID: id, TTL: ttl}, nil
}

// KeepAlive keeps the lease alive until ctx ends, renewing every third of its TTL, and sends each
// renewal's answer on the returned channel. A consumer that does not read loses answers (the
// channel holds 16), never renewals. The channel closes when ctx ends, the lease is gone, no
// renewal succeeded for a whole TTL, or the store closes.
func (s *Store) KeepAlive(ctx context.Context, id LeaseID) (<-chan *LeaseKeepAliveResponse, error) {
	first, err := s.KeepAliveOnce(ctx, id)
	if err != nil {
		return nil, err
	}
	ch := make(chan *LeaseKeepAliveResponse, 16)
	ch <- first
	if !s.spawn(func() { s.keepAliveLoop(ctx, id, first, ch) }) {
		close(ch)
	}
	return ch, nil
}

// maxKeepAlivesInFlight bounds the renewals of one KeepAlive awaiting their answer.
const maxKeepAlivesInFlight = 3

// keepAliveLoop sends a renewal a third of the TTL after the previous one was sent, whether or
// not that one has been answered: the leader extends the lease when a renewal reaches it but
// answers only once the renewal is committed, so on a slow disk waiting for each answer would
// stretch the gap between renewals past the TTL and let a lease that was never abandoned
// expire. Each renewal may take up to a TTL.
func (s *Store) keepAliveLoop(ctx context.Context, id LeaseID, first *LeaseKeepAliveResponse, ch chan *LeaseKeepAliveResponse) {
	defer close(ch)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ttl := time.Duration(first.TTL) * time.Second
	type result struct {
		r   *LeaseKeepAliveResponse
		err error
	}
	results := make(chan result, maxKeepAlivesInFlight)
	inFlight := 0
	lastOK := time.Now()
	t := time.NewTimer(ttl / 3)
	defer t.Stop()
	revoked, release := s.lessor.watchRevoke(int64(id))
	defer release()
	for {
		select {
		case <-t.C:
			if inFlight == maxKeepAlivesInFlight {
				t.Reset(ttl / 3)
				continue
			}
			inFlight++
			if !s.spawn(func() {
				rctx, rcancel := context.WithTimeout(ctx, ttl)
				defer rcancel()
				r, err := s.KeepAliveOnce(rctx, id)
				results <- result{r, err}
			}) {
				return
			}
			t.Reset(ttl / 3)
		case res := <-results:
			inFlight--
			switch err := res.err; {
			case err == nil:
				lastOK = time.Now()
				select {
				case ch <- res.r:
				default: // the consumer is behind; the renewal happened all the same
				}
			case errors.Is(err, ErrLeaseNotFound), errors.Is(err, ErrStopped):
				return
			case time.Since(lastOK) > ttl:
				return // the lease has most likely expired
			default:
				t.Reset(200 * time.Millisecond) // retry soon: the leader may have moved
			}
		case <-revoked:
			return
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// lessor tracks lease deadlines. Every member records, for each lease, the TTL left at the last
// event the log told it about (grant or checkpoint) and its own clock time at that apply. Only
// the leader turns that into deadlines and revokes expired leases, through the log.
//
// Keepalives are served by the leader from memory and are not replicated one by one: renewals
// that arrive together are folded into one checkpoint entry, and a keepalive is answered once
// its checkpoint is committed. So a new leader always knows every acknowledged renewal: a
// lease never expires before last keepalive + TTL, and a new leader gives every lease one
// election timeout more (see promote), so no lease expires because leadership changed. A long lease is also checkpointed periodically so that a restart of the whole
// cluster does not give it back its full TTL.
type lessor struct {
	s *Store

	// mu guards the fields below; never held across a raft call. The apply path takes it (observe)
	// after releasing the fsm's lock, so nothing under it may walk every lease.
	mu      sync.Mutex
	known   map[int64]*leaseClock
	byAt    list.List              // the known leases' clocks, oldest at first: the checkpoint scan's order
	revoked map[int64]*revokeWatch // keepalive loops waiting for a lease's revoke
	leader  bool
	expiry  expiryHeap    // leader only: every known lease once, by deadline
	batch   *renewBatch   // leader only: renewals waiting for the next checkpoint
	wake    chan struct{} // nudges run: new deadline or renewals
	scanned int           // leases the periodic checkpoint scans visited, so tests can see its cost
}

// leaseClock is what a member knows about one lease's time.
type leaseClock struct {
	id        int64
	ttl       int64         // granted TTL, seconds
	at        time.Time     // local time the last event about this lease was applied
	remaining time.Duration // TTL left at that event
	deadline  time.Time     // leader only
	expired   bool          // leader only: past its deadline, revoke under way; never renewed again
	heapIdx   int           // position in lessor.expiry; -1 when not in it
	atElem    *list.Element // this clock's place in lessor.byAt
}

type renewBatch struct {
	ids  map[int64]bool
	done chan struct{}
	err  error
}

const (
	// checkpointEvery is how old a lease's last checkpoint may get before the leader writes a new
	// one; it bounds how much TTL a full-cluster restart can give back.
	checkpointEvery = 10 * time.Second
	// maxCheckpointBatch caps the leases in one checkpoint entry.
	maxCheckpointBatch = 1000
	// maxRevokesInFlight bounds concurrent revoke proposals, as etcd.
	maxRevokesInFlight = 16
	// revokeRetry is how long a failed revoke waits before the leader tries again.
	revokeRetry = 500 * time.Millisecond
)

func newLessor(s *Store) *lessor {
	return &lessor{s: s, known: map[int64]*leaseClock{}, revoked: map[int64]*revokeWatch{}, wake: make(chan struct{}, 1)}
}

// sortByExpiry orders leases by their expected expiry, then by ID.
func (l *lessor) sortByExpiry(ls []LeaseStatus) {
	l.mu.Lock()
	at := make(map[LeaseID]time.Time, len(ls))
	for _, st := range ls {
		switch lc := l.known[int64(st.ID)]; {
		case lc == nil: // not seen by the lessor yet: last
			at[st.ID] = time.Now().Add(100 * 365 * 24 * time.Hour)
		case l.leader:
			at[st.ID] = lc.deadline
		default:
			at[st.ID] = lc.at.Add(lc.remaining)
		}
	}
	l.mu.Unlock()
	slices.SortStableFunc(ls, func(a, b LeaseStatus) int {
		if c := at[a.ID].Compare(at[b.ID]); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

func (l *lessor) nudge() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// observe records what the log did to leases; called after every apply batch.
func (l *lessor) observe(changes []leaseChange) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range changes {
		switch {
		case c.revoked:
			if lc := l.known[c.id]; lc != nil {
				l.forget(lc)
			}
			if rw := l.revoked[c.id]; rw != nil {
				close(rw.ch)
				delete(l.revoked, c.id)
			}
		case c.checkpoint:
			if lc := l.known[c.id]; lc != nil {
				lc.at, lc.remaining = now, time.Duration(c.remainingMs)*time.Millisecond
				l.byAt.MoveToBack(lc.atElem)
			}
		default:
			// The fsm refuses a grant of a live ID; should the two ever disagree, the old clock
			// must leave the heap and the scan order rather than linger there.
			if old := l.known[c.id]; old != nil {
				l.forget(old)
			}
			lc := l.track(c.id, c.ttl, now, time.Duration(c.ttl)*time.Second)
			if l.leader {
				lc.deadline = now.Add(lc.remaining)
				l.schedule(lc)
				l.nudge()
			}
		}
	}
}

// track adds a clock for a lease to known and to the back of byAt. Callers hold mu.
func (l *lessor) track(id, ttl int64, at time.Time, remaining time.Duration) *leaseClock {
	lc := &leaseClock{id: id, ttl: ttl, at: at, remaining: remaining, heapIdx: -1}
	lc.atElem = l.byAt.PushBack(lc)
	l.known[id] = lc
	return lc
}

// forget drops a lease's clock everywhere the lessor tracks it. Callers hold mu.
func (l *lessor) forget(lc *leaseClock) {
	delete(l.known, lc.id)
	l.byAt.Remove(lc.atElem)
	if lc.heapIdx >= 0 {
		heap.Remove(&l.expiry, lc.heapIdx)
	}
}

// schedule puts a lease's new deadline in the expiry heap: each lease is in it once, moved
// rather than added again, so renewals do not grow it. Callers hold mu.
func (l *lessor) schedule(lc *leaseClock) {
	if lc.heapIdx >= 0 {
		heap.Fix(&l.expiry, lc.heapIdx)
		return
	}
	heap.Push(&l.expiry, lc)
}

type revokeWatch struct {
	ch   chan struct{} // closed when the revoke is applied
	refs int
}

// watchRevoke returns a channel closed when this member applies the revoke of lease id, so that
// keepalive loops end at once rather than at their next renewal, and a release func to call
// when done. A lease this member does not know yet (its grant is not applied here yet) is watched
// too; a revoke applied before the call is caught by the loop's next renewal instead.
func (l *lessor) watchRevoke(id int64) (<-chan struct{}, func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rw := l.revoked[id]
	if rw == nil {
		rw = &revokeWatch{ch: make(chan struct{})}
		l.revoked[id] = rw
	}
	rw.refs++
	return rw.ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if rw.refs--; rw.refs == 0 && l.revoked[id] == rw {
			delete(l.revoked, id)
		}
	}
}

// restored rebuilds lease clocks after the state was replaced by a snapshot: the time since the
// last checkpoint is unknown, so each lease restarts from its checkpointed remaining TTL.
func (l *lessor) restored() {
	now := time.Now()
	v := l.s.fsm.view()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.known = map[int64]*leaseClock{}
	l.byAt.Init()
	v.st.leases.Scan(func(lr *leaseRecord) bool {
		rem := time.Duration(lr.ttl) * time.Second
		if lr.remainingMs > 0 {
			rem = time.Duration(lr.remainingMs) * time.Millisecond
		}
		l.track(lr.id, lr.ttl, now, rem)
		return true
	})
	if l.leader {
		l.startClocks(now)
	}
}

// promote starts the leader's clocks; called once this leader has applied everything before
// its term. Each deadline is what the log says is left, measured from when this member applied
// it, and never earlier than now, plus one election timeout: clients could not renew while
// there was no leader, and must get the time to find this one, so that no lease expires because
// of the leader change.
func (l *lessor) promote(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leader = true
	l.startClocks(time.Now())
	l.nudge()
}

// startClocks sets every lease's deadline as promote describes and rebuilds the expiry heap
// from them. Callers hold mu.
func (l *lessor) startClocks(now time.Time) {
	l.expiry = l.expiry[:0]
	for _, lc := range l.known {
		lc.deadline = maxTime(lc.at.Add(lc.remaining), now).Add(l.s.cfg.electionTimeout)
		lc.expired = false
		lc.heapIdx = len(l.expiry)
		l.expiry = append(l.expiry, lc)
	}
	heap.Init(&l.expiry)
}

// demote stops the leader's clocks; renewals waiting for a checkpoint fail and are retried on
// the new leader.
func (l *lessor) demote() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leader = false
	for _, lc := range l.expiry {
		lc.heapIdx = -1
	}
	l.expiry = nil
	if l.batch != nil {
		l.batch.err = errNotLeader
		close(l.batch.done)
		l.batch = nil
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// renew extends a lease to its full TTL and waits until the renewal is in the log.
func (l *lessor) renew(ctx context.Context, id int64) (int64, error) {
	l.mu.Lock()
	if !l.leader {
		l.mu.Unlock()
		return 0, errNotLeader
	}
	lc := l.known[id]
	now := time.Now()
	if lc == nil || lc.expired || !now.Before(lc.deadline) {
		l.mu.Unlock()
		return 0, ErrLeaseNotFound // an expired lease is never brought back
	}
	lc.deadline = now.Add(time.Duration(lc.ttl) * time.Second)
	l.schedule(lc)
	if l.batch == nil {
		l.batch = &renewBatch{ids: map[int64]bool{}, done: make(chan struct{})}
	}
	b := l.batch
	b.ids[id] = true
	ttl := lc.ttl
	l.mu.Unlock()
	l.nudge()
	select {
	case <-b.done:
		return ttl, b.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// handleRPC serves keepalive and time-to-live requests on the leader.
func (l *lessor) handleRPC(ctx context.Context, method uint8, d *wire.Decoder) ([]byte, error) {
	id := d.Varint()
	keys := method == mTimeToLive && d.Bool()
	if err := d.Finish(); err != nil {
		return nil, err
	}
	if !l.s.IsLeader() {
		return nil, errNotLeader
	}
	// The revision is taken before the renewal, so a keepalive can never claim a revision after
	// a revoke of the same lease.
	rev := l.s.fsm.view().st.rev
	e := wire.Encoder{}
	if method == mKeepAlive {
		ttl, err := l.renew(ctx, id)
		if err != nil {
			return nil, err
		}
		e.Varint(rev)
		e.Varint(ttl)
		return e.B, nil
	}
	v, err := l.s.linearizableView(ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	lc := l.known[id]
	ttl, granted := int64(-1), int64(0)
	if lc != nil && l.leader {
		granted = lc.ttl
		if left := time.Until(lc.deadline); left > 0 && !lc.expired {
			ttl = int64(math.Ceil(left.Seconds()))
		}
	}
	l.mu.Unlock()
	e.Varint(v.st.rev)
	e.Varint(ttl)
	e.Varint(granted)
	if keys && ttl >= 0 {
		ks := v.st.leaseKeysOf(id)
		e.Uvarint(uint64(len(ks)))
		for _, k := range ks {
			e.String(k)
		}
	} else {
		e.Uvarint(0)
	}
	return e.B, nil
}

// run is the leader's lease loop: it revokes expired leases and writes checkpoints. On followers
// it idles.
func (l *lessor) run() {
	sem := make(chan struct{}, maxRevokesInFlight)
	ticker := time.NewTicker(checkpointEvery / 10)
	defer ticker.Stop()
	inFlight := false
	done := make(chan *renewBatch, 1)
	for {
		wait := l.expireDue(sem)
		if !inFlight {
			if b, cps := l.takeCheckpoint(false); b != nil || len(cps) > 0 {
				inFlight = true
				go l.writeCheckpoint(b, cps, done)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-l.wake:
		case <-t.C:
		case <-ticker.C:
			if !inFlight {
				if b, cps := l.takeCheckpoint(true); b != nil || len(cps) > 0 {
					inFlight = true
					go l.writeCheckpoint(b, cps, done)
				}
			}
		case b := <-done:
			inFlight = false
			if b != nil {
				close(b.done)
			}
		case <-l.s.ctx.Done():
			t.Stop()
			if inFlight {
				if b := <-done; b != nil {
					close(b.done)
				}
			}
			return
		}
		t.Stop()
	}
}

// expireDue starts revokes of expired leases and returns how long until the next deadline.
func (l *lessor) expireDue(sem chan struct{}) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.leader {
		return time.Hour
	}
	now := time.Now()
	for l.expiry.Len() > 0 {
		lc := l.expiry[0]
		if lc.deadline.After(now) {
			return lc.deadline.Sub(now)
		}
		select {
		case sem <- struct{}{}:
		default:
			return 10 * time.Millisecond // rate limit: the revokes in flight finish first
		}
		// The lease stays in the heap at a retry time: if this revoke fails, it is tried again.
		lc.expired = true
		lc.deadline = now.Add(revokeRetry)
		heap.Fix(&l.expiry, 0)
		id := lc.id
		if !l.s.spawn(func() { l.revokeExpired(id, sem) }) {
			<-sem
		}
	}
	return time.Hour
}

// revokeExpired proposes the revoke of an expired lease, on this member only: if leadership moved,
// the new leader expires the lease itself.
func (l *lessor) revokeExpired(id int64, sem chan struct{}) {
	defer func() { <-sem }()
	cmd := &wire.Command{ID: l.s.nextID(), Kind: wire.KindLeaseRevoke, LeaseID: id}
	ctx, cancel := context.WithTimeout(l.s.ctx, 5*time.Second)
	defer cancel()
	if _, err := l.s.submitOwn(ctx, cmd, cmd.Marshal(nil), false); err != nil && !l.s.stopped() {
		l.s.log.Debug("lease revoke failed; will retry", "lease", id, "error", err)
	}
	l.nudge()
}

// takeCheckpoint collects the pending renewals and, if periodic, the leases whose last
// checkpoint is old. The periodic part walks byAt from its oldest end and stops at the first
// lease checkpointed recently, so its cost is the leases due, not every lease: it runs under
// mu, which the apply path waits for.
func (l *lessor) takeCheckpoint(periodic bool) (*renewBatch, []wire.LeaseCheckpoint) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.leader {
		return nil, nil
	}
	now := time.Now()
	var cps []wire.LeaseCheckpoint
	add := func(id int64, lc *leaseClock) {
		cps = append(cps, wire.LeaseCheckpoint{ID: id, RemainingMs: max(lc.deadline.Sub(now).Milliseconds(), 1)})
	}
	b := l.batch
	l.batch = nil
	if b != nil {
		for id := range b.ids {
			if lc := l.known[id]; lc != nil {
				add(id, lc)
			}
		}
	}
	if periodic {
		for e := l.byAt.Front(); e != nil && len(cps) < maxCheckpointBatch; e = e.Next() {
			lc := e.Value.(*leaseClock)
			l.scanned++
			if now.Sub(lc.at) < checkpointEvery {
				break // byAt is in order of at: the rest are younger still
			}
			if !lc.expired && (b == nil || !b.ids[lc.id]) {
				add(lc.id, lc)
			}
		}
	}
	return b, cps
}

// writeCheckpoint commits a checkpoint entry and reports the renew batch it covers.
func (l *lessor) writeCheckpoint(b *renewBatch, cps []wire.LeaseCheckpoint, done chan<- *renewBatch) {
	var err error
	if len(cps) > 0 {
		cmd := &wire.Command{ID: l.s.nextID(), Kind: wire.KindLeaseCheckpoint, Checkpoints: cps}
		ctx, cancel := context.WithTimeout(l.s.ctx, 5*time.Second)
		_, err = l.s.submitOwn(ctx, cmd, cmd.Marshal(nil), false)
		cancel()
	}
	if b != nil && err != nil {
		b.err = fmt.Errorf("ember: keepalive not recorded: %w", err)
		if errors.Is(err, errNotLeader) || errors.Is(err, errLeadershipLost) {
			b.err = errNotLeader // the client retries on the new leader
		}
	}
	done <- b
}

// expiryHeap orders lease clocks by deadline, earliest first. Each clock knows its index, so a
// renewal moves it in place.
type expiryHeap []*leaseClock

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *expiryHeap) Push(x any) {
	lc := x.(*leaseClock)
	lc.heapIdx = len(*h)
	*h = append(*h, lc)
}
func (h *expiryHeap) Pop() any {
	old := *h
	lc := old[len(old)-1]
	old[len(old)-1] = nil
	lc.heapIdx = -1
	*h = old[:len(old)-1]
	return lc
}
