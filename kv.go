package ember

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// Put sets key to val. A put without WithLease detaches the key from any lease it had.
// A cancelled ctx abandons the wait, not necessarily the write.
func (s *Store) Put(ctx context.Context, key, val string, opts ...OpOption) (*PutResponse, error) {
	r, err := s.Do(ctx, OpPut(key, val, opts...))
	if err != nil {
		return nil, err
	}
	return r.Put(), nil
}

// Get reads key, or a range of keys with WithPrefix, WithRange or WithFromKey. It is
// linearizable unless WithSerializable is given.
func (s *Store) Get(ctx context.Context, key string, opts ...OpOption) (*GetResponse, error) {
	// The options take the op by pointer, which would move a new one to the heap on every get:
	// the op lives for this call only, so one is reused. It aliases key's bytes instead of copying
	// them: nothing writes an op's key, and the answer copies what it returns.
	op, _ := s.getOps.Get().(*Op)
	if op == nil {
		op = new(Op)
	}
	*op = Op{t: tRange, key: unsafe.Slice(unsafe.StringData(key), len(key))}
	op.applyOpts(opts)
	r, err := s.Do(ctx, *op)
	*op = Op{}
	s.getOps.Put(op)
	if err != nil {
		return nil, err
	}
	return r.Get(), nil
}

// Delete deletes key, or a range of keys. Deleting nothing does not change the revision.
// A cancelled ctx abandons the wait, not necessarily the write.
func (s *Store) Delete(ctx context.Context, key string, opts ...OpOption) (*DeleteResponse, error) {
	r, err := s.Do(ctx, OpDelete(key, opts...))
	if err != nil {
		return nil, err
	}
	return r.Del(), nil
}

// Txn starts a transaction bound to ctx.
func (s *Store) Txn(ctx context.Context) Txn { return &txn{s: s, ctx: ctx} }

// Do runs one op. Reads (including transactions that only read) are served from this member;
// anything that may write goes through the raft log.
func (s *Store) Do(ctx context.Context, op Op) (OpResponse, error) {
	if s.ns == "" {
		return s.do(ctx, op)
	}
	r, err := s.do(ctx, s.nsOp(op))
	if err == nil {
		s.nsStrip(r)
	}
	return r, err
}

func (s *Store) do(ctx context.Context, op Op) (OpResponse, error) {
	if op.t == tRange {
		r, err := s.get(ctx, op)
		return OpResponse{get: r}, err
	}
	t, err := s.opTxn(op)
	if err != nil {
		return OpResponse{}, err
	}
	var res *wire.Result
	if op.isWrite() {
		if res, err = s.propose(ctx, &wire.Command{Kind: wire.KindTxn, Txn: t}); err != nil {
			return OpResponse{}, err
		}
	} else if res, err = s.read(ctx, t, op.allSerializable()); err != nil {
		return OpResponse{}, err
	}
	tr := txnFromWire(s.header(res.Revision), res.Txn)
	if op.t == tTxn {
		return OpResponse{txn: tr}, nil
	}
	return tr.Responses[0], nil
}

// opTxn wraps op in the transaction the state machine runs, and validates it.
func (s *Store) opTxn(op Op) (*wire.Txn, error) {
	var t *wire.Txn
	if op.t == tTxn {
		if err := cmpErrors(op); err != nil {
			return nil, err
		}
		t = txnToWire(op.cmps, op.thenOps, op.elseOps)
	} else {
		t = &wire.Txn{Success: []wire.Op{op.toWire()}}
	}
	if code := mvcc.ValidateTxn(t, s.cfg.maxTxnOps); code != wire.CodeOK {
		return nil, codeError(code)
	}
	return t, nil
}

// get serves a single range straight from a read view, without the transaction machinery that
// read goes through: it is the hot path of Get.
func (s *Store) get(ctx context.Context, op Op) (*GetResponse, error) {
	w := op.toWire()
	if len(w.Key) == 0 {
		return nil, ErrEmptyKey
	}
	v, err := s.readView(ctx, w.Serializable)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		r, code := getFrom(v.st, &w)
		if code == wire.CodeOK {
			r.Header = s.header(v.st.Rev())
			return r, nil
		}
		if v, err = s.reread(v, code, attempt); err != nil {
			return nil, err
		}
	}
}

// getFrom answers a single range from st.
func getFrom(st *mvcc.State, w *wire.Op) (*GetResponse, wire.Code) {
	if len(w.End) == 0 && w.SortTarget != wire.SortByValue {
		return getKeyFrom(st, w)
	}
	recs, count, more, code := st.RangeRecords(w)
	if code != wire.CodeOK {
		return nil, code
	}
	r := &GetResponse{More: more, Count: count}
	if len(recs) == 0 {
		return r, wire.CodeOK
	}
	n := 0
	for _, rec := range recs {
		n += len(rec.Key)
		if !w.KeysOnly {
			n += rec.ValueLen()
		}
	}
	// One allocation for all pairs and one for all their bytes: ranges can return many.
	r.Kvs = make([]*KeyValue, len(recs))
	kvs := make([]KeyValue, len(recs))
	buf := make([]byte, 0, n)
	vr := st.Values()
	defer vr.Close()
	for i, rec := range recs {
		kv := &kvs[i]
		var ok bool
		if buf, ok = appendKV(buf, kv, rec, &vr, w.KeysOnly); !ok {
			return nil, wire.CodeCompacted
		}
		r.Kvs[i] = kv
	}
	return r, wire.CodeOK
}

// keyGetResponse is the answer of a get of one key with its pair, allocated at once.
type keyGetResponse struct {
	r   GetResponse
	kvs [1]*KeyValue
	kv  KeyValue
}

// getKeyFrom is getFrom for a single key (no sort by value), the common get: two allocations,
// the answer and the bytes of its pair, where the value is copied once from where it is held.
func getKeyFrom(st *mvcc.State, w *wire.Op) (*GetResponse, wire.Code) {
	rec, count, code := st.KeyRecord(w)
	if code != wire.CodeOK {
		return nil, code
	}
	if rec == nil {
		return &GetResponse{Count: count}, wire.CodeOK
	}
	n := len(rec.Key)
	if !w.KeysOnly {
		n += rec.ValueLen()
	}
	vr := st.Values()
	defer vr.Close()
	a := &keyGetResponse{r: GetResponse{Count: count}}
	if _, ok := appendKV(make([]byte, 0, n), &a.kv, rec, &vr, w.KeysOnly); !ok {
		return nil, wire.CodeCompacted
	}
	a.kvs[0] = &a.kv
	a.r.Kvs = a.kvs[:]
	return &a.r, wire.CodeOK
}

// appendKV fills kv with rec, its key and value appended to buf; false if rec's value was
// compacted after the view was cloned.
func appendKV(buf []byte, kv *KeyValue, rec *mvcc.Record, vr *mvcc.ValueReader, keysOnly bool) ([]byte, bool) {
	buf = append(buf, rec.Key...)
	kv.Key = buf[len(buf)-len(rec.Key) : len(buf) : len(buf)]
	kv.CreateRevision, kv.ModRevision, kv.Version = rec.Create, rec.Mod, rec.Version
	if keysOnly {
		return buf, true
	}
	start := len(buf)
	buf, ok := vr.Append(buf, rec)
	kv.Value = buf[start:len(buf):len(buf)]
	kv.Lease = rec.Lease
	return buf, ok
}

// Compact drops history before rev: reads and watches at revisions below it fail with
// ErrCompacted afterwards. It goes through the log and applies on every member.
func (s *Store) Compact(ctx context.Context, rev int64, opts ...CompactOption) (*CompactResponse, error) {
	var co compactOp
	for _, o := range opts {
		o(&co)
	}
	res, err := s.propose(ctx, &wire.Command{Kind: wire.KindCompact, Revision: rev})
	if err != nil {
		return nil, err
	}
	// The compaction is applied to this member's state before propose returns when this member
	// proposed it on the leader; on a follower, wait for the local apply if asked to, then for
	// the removal of the compacted history, which runs in steps after the apply.
	if co.physical {
		if _, err := s.linearizableView(ctx); err != nil {
			return nil, err
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(s.ctx, cancel)() // the removal stops with the store
		if err := s.fsm.waitCompacted(wctx); err != nil {
			if s.stopped() {
				return nil, s.stoppedErr()
			}
			return nil, fmt.Errorf("%w: %w", ErrTimeout, err)
		}
	}
	return &CompactResponse{Header: s.header(res.Revision)}, nil
}
