package ember

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/ember-kv/ember/internal/mvcc"
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
	if ttl > mvcc.MaxLeaseTTL {
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

// GrantAndDo grants lease id for ttl seconds and applies op (OpPut, OpDelete or OpTxn, whose
// puts may attach keys to the lease with WithLease(id)) in one raft entry, atomically: the lease
// and the keys that register a service under it cost one commit instead of Grant's and Put's
// two, and a crash between them cannot leave the lease without its keys. If the grant is refused
// (ErrLeaseExists, ErrTTLTooLarge) or op is (ErrLeaseNotFound for another lease, say), nothing
// is applied. The ID is the caller's, as with GrantWithID: NoLease is refused with
// ErrLeaseNotFound, since op could not name the lease.
//
// etcd has no such request: every member must run a version that has GrantAndDo before any
// calls it (an earlier member cannot read the entry and stops).
func (s *Store) GrantAndDo(ctx context.Context, id LeaseID, ttl int64, op Op) (*LeaseGrantResponse, OpResponse, error) {
	if id == NoLease {
		return nil, OpResponse{}, ErrLeaseNotFound
	}
	if ttl > mvcc.MaxLeaseTTL {
		return nil, OpResponse{}, ErrTTLTooLarge
	}
	ttl = max(ttl, s.minLeaseTTL())
	if s.ns != "" {
		op = s.nsOp(op)
	}
	t, err := s.opTxn(op)
	if err != nil {
		return nil, OpResponse{}, err
	}
	res, err := s.propose(ctx, &wire.Command{Kind: wire.KindTxn, Txn: t, LeaseID: int64(id), LeaseTTL: ttl})
	if err != nil {
		return nil, OpResponse{}, err
	}
	h := s.header(res.Revision)
	tr := txnFromWire(h, res.Txn)
	r := tr.Responses[0]
	if op.t == tTxn {
		r = OpResponse{txn: tr}
	}
	if s.ns != "" {
		s.nsStrip(r)
	}
	return &LeaseGrantResponse{Header: h, ID: id, TTL: ttl}, r, nil
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
	r := &LeaseLeasesResponse{Header: s.header(v.st.Rev())}
	v.st.ScanLeases(func(l *mvcc.Lease) bool {
		r.Leases = append(r.Leases, LeaseStatus{ID: LeaseID(l.ID)})
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
