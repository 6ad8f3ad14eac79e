package ember

import (
	"context"
	"errors"
)

// Txn is a compare-and-swap transaction: If(compares...).Then(ops...).Else(ops...).Commit().
// The whole transaction is atomic and gets one revision. A Txn is not safe for concurrent use;
// build one per goroutine.
type Txn interface {
	// If adds compares; they all must hold for Then to run.
	If(cs ...Cmp) Txn
	// Then adds the ops that run if every compare holds.
	Then(ops ...Op) Txn
	// Else adds the ops that run otherwise.
	Else(ops ...Op) Txn
	// Commit runs the transaction. A cancelled ctx abandons the wait, not necessarily the write.
	Commit() (*TxnResponse, error)
}

var errTxnOrder = errors.New("ember: txn: If, Then and Else must be called once each, in that order")

type txn struct {
	s       *Store
	ctx     context.Context
	stage   int // 0 before If, 1 after If, 2 after Then, 3 after Else
	cmps    []Cmp
	thenOps []Op
	elseOps []Op
	err     error
}

func (t *txn) advance(to int) {
	if t.stage >= to && t.err == nil {
		t.err = errTxnOrder
	}
	t.stage = to
}

func (t *txn) If(cs ...Cmp) Txn {
	t.advance(1)
	t.cmps = append(t.cmps, cs...)
	return t
}

func (t *txn) Then(ops ...Op) Txn {
	t.advance(2)
	t.thenOps = append(t.thenOps, ops...)
	return t
}

func (t *txn) Else(ops ...Op) Txn {
	t.advance(3)
	t.elseOps = append(t.elseOps, ops...)
	return t
}

func (t *txn) Commit() (*TxnResponse, error) {
	if t.err != nil {
		return nil, t.err
	}
	r, err := t.s.Do(t.ctx, OpTxn(t.cmps, t.thenOps, t.elseOps))
	if err != nil {
		return nil, err
	}
	return r.Txn(), nil
}

// cmpErrors returns the first malformed compare in op's tree.
func cmpErrors(op Op) error {
	for _, c := range op.cmps {
		if c.err != nil {
			return c.err
		}
	}
	for _, o := range append(op.thenOps[:len(op.thenOps):len(op.thenOps)], op.elseOps...) {
		if o.t == tTxn {
			if err := cmpErrors(o); err != nil {
				return err
			}
		}
	}
	return nil
}
