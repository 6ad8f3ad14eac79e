package reliability

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/internal/watchcheck"
	"github.com/ember-kv/ember/internal/watchtest"
	"github.com/ember-kv/ember/internal/writecheck"
)

// Client load of a G1 run.
const (
	g1Keys    = 16
	g1Clients = 16 // the first g1Pinned use one member each, round robin; the rest roam
	g1Pinned  = 12
	// maxAmbiguous is how many writes of unknown outcome a client may leave open before it
	// only reads: each is concurrent with everything after it, which is what makes checking
	// expensive (etcd caps it at 3 too). A write whose effect the recorder has seen no longer
	// counts.
	maxAmbiguous = 3
	opTimeout    = 1500 * time.Millisecond
	// leaseTTL (seconds) outlives every run: lease expiry is G3's subject, and here a granted
	// lease that is reported missing is a bug.
	leaseTTL = 600
)

// status is what a client learned of an operation's outcome.
type status uint8

const (
	statusOK      status = iota
	statusUnknown        // may or may not have taken effect
	statusFailed         // definitely took no effect (the error says so)
)

// opRecord is one operation a client ran.
type opRecord struct {
	client    int
	member    string
	in        kvInput
	out       kvOutput
	call, ret int64
	status    status
	err       error
	// modelled is false for an operation that is not part of the key model: a revoke of a
	// lease whose put definitely failed has no key to act on.
	modelled bool
	write    bool
	kv       *watchcheck.KeyValue // what an acknowledged get or failed CAS read, if the key existed
	lease    ember.LeaseID        // a leased put's lease, or a revoke's
	// seenAt is, for an ambiguous put or CAS, when the recorder received its value (0: never):
	// the write took effect by then.
	seenAt int64
}

// history collects every client's records.
type history struct {
	mu  sync.Mutex
	ops []*opRecord
}

func (h *history) add(r *opRecord) {
	h.mu.Lock()
	h.ops = append(h.ops, r)
	h.mu.Unlock()
}

func (h *history) records() []*opRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*opRecord(nil), h.ops...)
}

// classify turns an ember error into what the client knows about the outcome, by ember's
// contract (internal/writecheck): ErrTimeout and anything unexpected leave it open; every other
// ember error (ErrNoLeader, ErrStopped, ErrLeaseNotFound...) promises the request took no
// effect, and the check holds ember to that. An error that claims both counts as unknown here,
// and checkRecords reports it as a violation.
func classify(err error) status {
	switch writecheck.Classify(err) {
	case writecheck.OK:
		return statusOK
	case writecheck.Definite:
		return statusFailed
	}
	return statusUnknown
}

// seenKV is what a client last saw of a key: its state and mod revision, for CAS.
type seenKV struct {
	st  kvState
	rev int64
}

type clientLease struct {
	id       ember.LeaseID
	key, val string
	modelled bool // the leased put may have taken effect
}

// kvClient runs random single-key operations through one member (or, roaming, through any
// running member) and records each.
type kvClient struct {
	id     int
	c      *embertest.Cluster
	pinned string // member ID; "" roams
	rng    *rand.Rand
	clk    clock
	h      *history
	// applied reports whether the recorder has seen a put of this value: such a write is no
	// longer ambiguous.
	applied func(val string) bool

	seq    int
	seen   map[string]seenKV
	leases []clientLease
	open   []string // values of ambiguous puts not yet seen by the recorder
	opaque int      // ambiguous deletes and revokes: they never resolve
	grants int
}

func (cl *kvClient) run(stop <-chan struct{}) {
	for !closed(stop) {
		m, s := cl.store()
		if s == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		cl.step(m, s)
	}
}

func (cl *kvClient) store() (string, *ember.Store) {
	if cl.pinned != "" {
		return cl.pinned, cl.c.Member(cl.pinned).Store()
	}
	ms := cl.c.Running()
	if len(ms) == 0 {
		return "", nil
	}
	m := ms[cl.rng.Intn(len(ms))]
	return m.ID, m.Store()
}

func (cl *kvClient) ambiguous() int {
	kept := cl.open[:0]
	for _, v := range cl.open {
		if !cl.applied(v) {
			kept = append(kept, v)
		}
	}
	cl.open = kept
	return len(cl.open) + cl.opaque
}

func (cl *kvClient) step(member string, s *ember.Store) {
	key := fmt.Sprintf("k/%d", cl.rng.Intn(g1Keys))
	x := cl.rng.Intn(100)
	if cl.ambiguous() >= maxAmbiguous {
		x = 0
	}
	switch {
	case x < 35:
		cl.get(member, s, key)
	case x < 60:
		cl.put(member, s, key, cl.rng.Intn(2) == 0)
	case x < 70:
		cl.del(member, s, key)
	case x < 85:
		cl.cas(member, s, key)
	case x < 95:
		cl.leasedPut(member, s, key)
	default:
		cl.revoke(member, s)
	}
}

func (cl *kvClient) value() string {
	cl.seq++
	return fmt.Sprintf("c%d-%d", cl.id, cl.seq)
}

// exec runs fn with a fresh timeout, records it, and returns the record.
func (cl *kvClient) exec(member string, in kvInput, write bool, fn func(ctx context.Context, r *opRecord) error) *opRecord {
	r := &opRecord{client: cl.id, member: member, in: in, write: write, modelled: true}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	r.call = cl.clk.now()
	r.err = fn(ctx, r)
	r.ret = cl.clk.now()
	cancel()
	r.status = classify(r.err)
	if r.status == statusUnknown && !write {
		r.status = statusFailed // a read without an answer has no effect to account for
	}
	if r.status == statusUnknown {
		r.out, r.ret = kvOutput{Unknown: true}, never
		switch in.Kind {
		case opPut, opCAS:
			cl.open = append(cl.open, in.Val)
		default:
			cl.opaque++
		}
	}
	cl.h.add(r)
	return r
}

func (cl *kvClient) get(member string, s *ember.Store, key string) {
	r := cl.exec(member, kvInput{Kind: opGet, Key: key}, false, func(ctx context.Context, r *opRecord) error {
		g, err := s.Get(ctx, key)
		if err != nil {
			return err
		}
		r.out.Rev = g.Header.Revision
		if len(g.Kvs) > 0 {
			kv := watchtest.KV(g.Kvs[0])
			r.out.Got, r.kv = kvState{Exists: true, Val: kv.Value}, &kv
		}
		return nil
	})
	if r.status == statusOK {
		cl.saw(key, r)
	}
}

// saw notes what an acknowledged read returned, for the next CAS on key.
func (cl *kvClient) saw(key string, r *opRecord) {
	if r.kv == nil {
		cl.seen[key] = seenKV{}
		return
	}
	cl.seen[key] = seenKV{st: r.out.Got, rev: r.kv.ModRevision}
}

func (cl *kvClient) put(member string, s *ember.Store, key string, prevKV bool) {
	val := cl.value()
	r := cl.exec(member, kvInput{Kind: opPut, Key: key, Val: val, PrevKV: prevKV}, true, func(ctx context.Context, r *opRecord) error {
		var opts []ember.OpOption
		if prevKV {
			opts = append(opts, ember.WithPrevKV())
		}
		p, err := s.Put(ctx, key, val, opts...)
		if err != nil {
			return err
		}
		r.out.Rev = p.Header.Revision
		if p.PrevKv != nil {
			r.out.Got = kvState{Exists: true, Val: string(p.PrevKv.Value)}
		}
		return nil
	})
	if r.status == statusOK {
		cl.seen[key] = seenKV{st: kvState{Exists: true, Val: val}, rev: r.out.Rev}
	}
}

func (cl *kvClient) del(member string, s *ember.Store, key string) {
	r := cl.exec(member, kvInput{Kind: opDelete, Key: key}, true, func(ctx context.Context, r *opRecord) error {
		d, err := s.Delete(ctx, key)
		if err != nil {
			return err
		}
		r.out.Rev, r.out.Deleted = d.Header.Revision, d.Deleted
		return nil
	})
	if r.status == statusOK {
		cl.seen[key] = seenKV{}
	}
}

func (cl *kvClient) cas(member string, s *ember.Store, key string) {
	exp, val := cl.seen[key], cl.value()
	r := cl.exec(member, kvInput{Kind: opCAS, Key: key, Val: val, Exp: exp.st}, true, func(ctx context.Context, r *opRecord) error {
		tr, err := s.Txn(ctx).If(ember.Compare(ember.ModRevision(key), "=", exp.rev)).
			Then(ember.OpPut(key, val)).Else(ember.OpGet(key)).Commit()
		if err != nil {
			return err
		}
		r.out.Rev, r.out.OK = tr.Header.Revision, tr.Succeeded
		if !tr.Succeeded {
			if g := tr.Responses[0].Get(); len(g.Kvs) > 0 {
				kv := watchtest.KV(g.Kvs[0])
				r.out.Got, r.kv = kvState{Exists: true, Val: kv.Value}, &kv
			}
		}
		return nil
	})
	switch {
	case r.status != statusOK:
	case r.out.OK:
		cl.seen[key] = seenKV{st: kvState{Exists: true, Val: val}, rev: r.out.Rev}
	default:
		cl.saw(key, r)
	}
}

// leasedPut grants a lease and puts key attached to it. Each lease carries one put, so that its
// revoke acts on one key only and stays within the key model.
func (cl *kvClient) leasedPut(member string, s *ember.Store, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	g, err := s.Grant(ctx, leaseTTL)
	cancel()
	if err != nil {
		return
	}
	cl.grants++
	val := cl.value()
	r := cl.exec(member, kvInput{Kind: opPut, Key: key, Val: val, Lease: true}, true, func(ctx context.Context, r *opRecord) error {
		p, err := s.Put(ctx, key, val, ember.WithLease(g.ID))
		if err != nil {
			return err
		}
		r.out.Rev = p.Header.Revision
		return nil
	})
	r.lease = g.ID
	cl.leases = append(cl.leases, clientLease{id: g.ID, key: key, val: val, modelled: r.status != statusFailed})
}

// revoke revokes the client's oldest lease, or reads if it has none.
func (cl *kvClient) revoke(member string, s *ember.Store) {
	if len(cl.leases) == 0 {
		cl.get(member, s, fmt.Sprintf("k/%d", cl.rng.Intn(g1Keys)))
		return
	}
	l := cl.leases[0]
	cl.leases = cl.leases[1:]
	r := cl.exec(member, kvInput{Kind: opRevoke, Key: l.key, Val: l.val}, true, func(ctx context.Context, r *opRecord) error {
		rv, err := s.Revoke(ctx, l.id)
		if err != nil {
			return err
		}
		r.out.Rev = rv.Header.Revision
		return nil
	})
	r.lease, r.modelled = l.id, l.modelled
}
