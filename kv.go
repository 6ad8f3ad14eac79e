package ember

import (
	"context"

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
	r, err := s.Do(ctx, OpGet(key, opts...))
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
	if code := validateTxn(t, s.cfg.maxTxnOps); code != wire.CodeOK {
		return nil, codeError(code)
	}
	return t, nil
}

// read serves a transaction that writes nothing from a read view.
func (s *Store) read(ctx context.Context, t *wire.Txn, serializable bool) (*wire.Result, error) {
	var v *readView
	var err error
	if serializable {
		if s.stopped() {
			return nil, s.stoppedErr()
		}
		v = s.fsm.view()
	} else if v, err = s.linearizableView(ctx); err != nil {
		return nil, err
	}
	res, code := v.st.readTxn(t)
	if code != wire.CodeOK {
		return nil, codeError(code)
	}
	return res, nil
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
	// proposed it on the leader; on a follower, wait for the local apply if asked to.
	if co.physical {
		if _, err := s.linearizableView(ctx); err != nil {
			return nil, err
		}
	}
	return &CompactResponse{Header: s.header(res.Revision)}, nil
}
