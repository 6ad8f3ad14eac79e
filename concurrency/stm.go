package concurrency

import (
	"context"
	"maps"
	"slices"

	"github.com/ember-kv/ember"
)

// STM is a software transactional memory over a store. NewSTM hands one to its apply function,
// which reads keys through it and buffers writes in it; the writes then commit in one Txn, or
// not at all if the reads went stale, in which case apply runs again.
//
// An STM is only valid inside the apply call it was passed to, and must be used from that
// call's goroutine: a failed read unwinds apply with a panic that NewSTM recovers.
type STM interface {
	// Get returns the value of keys[0], or "" if it does not exist, reading it from the
	// transaction's own writes first. Further keys are read in the same round trip, to warm
	// the read set.
	Get(keys ...string) string
	// Put buffers a write of val to key.
	Put(key, val string, opts ...ember.OpOption)
	// Rev returns the modification revision of key as read by the transaction, or 0 if it
	// does not exist. It ignores the transaction's own writes.
	Rev(key string) int64
	// Del buffers a delete of key.
	Del(key string)
}

// Isolation is an STM's isolation level.
type Isolation int

const (
	// SerializableSnapshot reads every key at the revision of the transaction's first read,
	// and commits only if no key it read or writes has changed since. It is the default.
	SerializableSnapshot Isolation = iota
	// Serializable reads like SerializableSnapshot but commits if no key it read has changed:
	// a key it writes without reading it is overwritten even if others wrote it since.
	Serializable
	// RepeatableReads reads each key at the latest revision the member has (a serializable,
	// member-local read), then repeats that value within the attempt; it commits if no key it
	// read has changed. Reads of different keys may come from different revisions.
	RepeatableReads
	// ReadCommitted reads like RepeatableReads and commits unconditionally: concurrent
	// updates can be lost.
	ReadCommitted
)

type stmOptions struct {
	iso      Isolation
	ctx      context.Context
	prefetch []string
}

// STMOption configures NewSTM.
type STMOption func(*stmOptions)

// WithIsolation sets the isolation level; the default is SerializableSnapshot.
func WithIsolation(lvl Isolation) STMOption {
	return func(o *stmOptions) { o.iso = lvl }
}

// WithAbortContext sets the context of the transaction's requests; when it ends, NewSTM gives
// up with its error.
func WithAbortContext(ctx context.Context) STMOption {
	return func(o *stmOptions) { o.ctx = ctx }
}

// WithPrefetch reads keys at the start of every attempt, in one round trip, before apply runs.
func WithPrefetch(keys ...string) STMOption {
	return func(o *stmOptions) { o.prefetch = append(o.prefetch, keys...) }
}

// NewSTM runs apply in a transaction and retries it until its commit succeeds, then returns
// the commit's response. It returns apply's error, without committing, if apply fails, and the
// error of any request the transaction makes.
func NewSTM(s *ember.Store, apply func(STM) error, opts ...STMOption) (*ember.TxnResponse, error) {
	o := stmOptions{iso: SerializableSnapshot, ctx: context.Background()}
	for _, opt := range opts {
		opt(&o)
	}
	t := &stm{store: s, ctx: o.ctx, iso: o.iso}
	for {
		t.reset()
		resp, err := t.attempt(apply, o.prefetch)
		if err != nil || resp != nil {
			return resp, err
		}
	}
}

// stmError carries a failed request out of apply, whose STM methods cannot return errors.
type stmError struct{ err error }

type stmWrite struct {
	val string // "" for a delete
	op  ember.Op
}

type stm struct {
	store *ember.Store
	ctx   context.Context
	iso   Isolation

	// Per attempt.
	rset map[string]*ember.GetResponse
	wset map[string]stmWrite
	rev  int64 // snapshot levels: the base revision all reads are made at; 0 before the first

	// Snapshot levels: the read set as re-read by a failed commit, at prefetchRev, so that the
	// next attempt starts without a round trip.
	prefetch    map[string]*ember.GetResponse
	prefetchRev int64
}

func (t *stm) reset() {
	t.rset = make(map[string]*ember.GetResponse)
	t.wset = make(map[string]stmWrite)
	t.rev = 0
}

func (t *stm) attempt(apply func(STM) error, prefetch []string) (resp *ember.TxnResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(stmError)
			if !ok {
				panic(r)
			}
			resp, err = nil, e.err
		}
	}()
	if len(prefetch) > 0 {
		t.load(prefetch)
	}
	if err := apply(t); err != nil {
		return nil, err
	}
	return t.commit()
}

func (t *stm) snapshot() bool {
	return t.iso == SerializableSnapshot || t.iso == Serializable
}

func (t *stm) Get(keys ...string) string {
	if len(keys) == 0 {
		return ""
	}
	var unwritten []string
	for _, k := range keys {
		if _, ok := t.wset[k]; !ok {
			unwritten = append(unwritten, k)
		}
	}
	t.load(unwritten)
	if w, ok := t.wset[keys[0]]; ok {
		return w.val
	}
	if kvs := t.rset[keys[0]].Kvs; len(kvs) > 0 {
		return string(kvs[0].Value)
	}
	return ""
}

func (t *stm) Rev(key string) int64 {
	t.load([]string{key})
	if kvs := t.rset[key].Kvs; len(kvs) > 0 {
		return kvs[0].ModRevision
	}
	return 0
}

func (t *stm) Put(key, val string, opts ...ember.OpOption) {
	t.wset[key] = stmWrite{val: val, op: ember.OpPut(key, val, opts...)}
}

func (t *stm) Del(key string) {
	t.wset[key] = stmWrite{op: ember.OpDelete(key)}
}

// load adds the keys missing from the read set to it, in one round trip at most.
func (t *stm) load(keys []string) {
	if t.snapshot() && t.rev == 0 && len(t.prefetch) > 0 {
		// Read the whole attempt at the prefetch's revision, so that prefetched and
		// fetched values come from one snapshot.
		t.rev = t.prefetchRev
	}
	var ops []ember.Op
	var fetched []string
	for _, k := range keys {
		if _, ok := t.rset[k]; ok {
			continue
		}
		if r, ok := t.prefetch[k]; ok {
			t.rset[k] = r
			delete(t.prefetch, k)
			continue
		}
		ops = append(ops, ember.OpGet(k, t.readOpts()...))
		fetched = append(fetched, k)
	}
	if len(ops) == 0 {
		return
	}
	resp, err := t.store.Txn(t.ctx).Then(ops...).Commit()
	if err != nil {
		panic(stmError{err})
	}
	for i, k := range fetched {
		t.rset[k] = resp.Responses[i].Get()
	}
	if t.snapshot() && t.rev == 0 {
		t.rev = resp.Header.Revision
	}
}

func (t *stm) readOpts() []ember.OpOption {
	if !t.snapshot() {
		return []ember.OpOption{ember.WithSerializable()}
	}
	if t.rev == 0 {
		// The first read fixes the snapshot, so it must be linearizable.
		return nil
	}
	return []ember.OpOption{ember.WithRev(t.rev), ember.WithSerializable()}
}

// commit writes the write set if the read set is still current, as the isolation level
// defines it. It returns nil and no error if the transaction must be retried.
func (t *stm) commit() (*ember.TxnResponse, error) {
	var cmps []ember.Cmp
	if t.iso != ReadCommitted {
		for k, r := range t.rset {
			var mod int64
			if len(r.Kvs) > 0 {
				mod = r.Kvs[0].ModRevision
			}
			cmps = append(cmps, ember.Compare(ember.ModRevision(k), "=", mod))
		}
	}
	if t.iso == SerializableSnapshot && t.rev != 0 {
		for k := range t.wset {
			cmps = append(cmps, ember.Compare(ember.ModRevision(k), "<", t.rev+1))
		}
	}
	// In key order, so that watchers see one commit's events in a stable order.
	var writes []ember.Op
	for _, k := range slices.Sorted(maps.Keys(t.wset)) {
		writes = append(writes, t.wset[k].op)
	}
	txn := t.store.Txn(t.ctx).If(cmps...).Then(writes...)
	var reread []string
	if t.snapshot() {
		// On a conflict, re-read the read set in the same round trip for the next attempt.
		var gets []ember.Op
		for k := range t.rset {
			reread = append(reread, k)
			gets = append(gets, ember.OpGet(k))
		}
		txn = txn.Else(gets...)
	}
	resp, err := txn.Commit()
	if err != nil {
		return nil, err
	}
	if resp.Succeeded {
		return resp, nil
	}
	if t.snapshot() {
		t.prefetch = make(map[string]*ember.GetResponse, len(reread))
		for i, k := range reread {
			t.prefetch[k] = resp.Responses[i].Get()
		}
		t.prefetchRev = resp.Header.Revision
	}
	return nil, nil
}
