package mvcc

import (
	"github.com/ember-kv/ember/internal/wire"
)

// ValidateTxn checks the rules that need no state: keys present, op counts within maxOps (0 =
// unlimited; nested transactions share the budget of their parent), no key written twice.
func ValidateTxn(t *wire.Txn, maxOps int) wire.Code {
	if t == nil {
		return wire.CodeMalformed
	}
	if maxOps <= 0 {
		maxOps = -1
	}
	if code := checkTxnShape(t, maxOps); code != wire.CodeOK {
		return code
	}
	for _, ops := range [][]wire.Op{t.Success, t.Failure} {
		if writesOnce(ops) {
			continue // nothing to collide with: skips writeSet's map for a plain put
		}
		if _, _, dup := writeSet(ops); dup {
			return wire.CodeDuplicateKey
		}
	}
	return wire.CodeOK
}

// writesOnce reports whether ops, a branch without nested txns, writes at most once.
func writesOnce(ops []wire.Op) bool {
	writes := 0
	for i := range ops {
		switch ops[i].Kind {
		case wire.OpTxn:
			return false
		case wire.OpPut, wire.OpDelete:
			writes++
		}
	}
	return writes <= 1
}

// checkTxnShape checks keys and op counts; maxOps < 0 is unlimited.
func checkTxnShape(t *wire.Txn, maxOps int) wire.Code {
	n := max(len(t.Compares), len(t.Success), len(t.Failure))
	if maxOps >= 0 && n > maxOps {
		return wire.CodeTooManyOps
	}
	for i := range t.Compares {
		if len(t.Compares[i].Key) == 0 {
			return wire.CodeEmptyKey
		}
	}
	for _, ops := range [][]wire.Op{t.Success, t.Failure} {
		for i := range ops {
			op := &ops[i]
			switch op.Kind {
			case wire.OpTxn:
				if op.Txn == nil {
					return wire.CodeMalformed
				}
				nested := -1
				if maxOps >= 0 {
					nested = maxOps - n // nested txns share their parent's budget, as etcd
				}
				if code := checkTxnShape(op.Txn, nested); code != wire.CodeOK {
					return code
				}
			case wire.OpPut:
				if code := checkPut(op); code != wire.CodeOK {
					return code
				}
			default:
				if len(op.Key) == 0 {
					return wire.CodeEmptyKey
				}
			}
		}
	}
	return wire.CodeOK
}

func checkPut(op *wire.Op) wire.Code {
	switch {
	case len(op.Key) == 0:
		return wire.CodeEmptyKey
	case op.IgnoreValue && len(op.Value) != 0:
		return wire.CodeValueProvided
	case op.IgnoreLease && op.Lease != 0:
		return wire.CodeLeaseProvided
	}
	return wire.CodeOK
}

// deletedRange is a deleted key range [key, end); fromKey means no upper bound.
type deletedRange struct {
	key, end string
	fromKey  bool
}

func (iv deletedRange) contains(k string) bool { return k >= iv.key && (iv.fromKey || k < iv.end) }

func deleteRange(op *wire.Op) deletedRange {
	kr := NewKeyRange(op.Key, op.End)
	switch {
	case kr.Single:
		return deletedRange{key: kr.Key, end: kr.Key + "\x00"}
	case kr.FromKey:
		return deletedRange{key: kr.Key, fromKey: true}
	}
	return deletedRange{key: kr.Key, end: kr.End}
}

// writeSet collects the keys one branch puts and the ranges it deletes, nested txns included,
// and reports whether a key is put twice or put inside a deleted range. The then and else
// branches of one nested txn exclude each other, so they may write the same key.
func writeSet(ops []wire.Op) (puts map[string]bool, dels []deletedRange, dup bool) {
	puts = map[string]bool{}
	for i := range ops {
		if ops[i].Kind == wire.OpDelete {
			dels = append(dels, deleteRange(&ops[i]))
		}
	}
	inDels := func(k string) bool {
		for _, iv := range dels {
			if iv.contains(k) {
				return true
			}
		}
		return false
	}
	for i := range ops {
		if ops[i].Kind != wire.OpTxn {
			continue
		}
		thenPuts, thenDels, d1 := writeSet(ops[i].Txn.Success)
		elsePuts, elseDels, d2 := writeSet(ops[i].Txn.Failure)
		if d1 || d2 {
			return nil, nil, true
		}
		for k := range thenPuts {
			if puts[k] || inDels(k) {
				return nil, nil, true
			}
			puts[k] = true
		}
		for k := range elsePuts {
			if (puts[k] && !thenPuts[k]) || inDels(k) {
				return nil, nil, true
			}
			puts[k] = true
		}
		// Later siblings are checked against these deletes too, as etcd's checkIntervals does.
		dels = append(dels, thenDels...)
		dels = append(dels, elseDels...)
	}
	for i := range ops {
		if ops[i].Kind != wire.OpPut {
			continue
		}
		k := string(ops[i].Key)
		if puts[k] || inDels(k) {
			return nil, nil, true
		}
		puts[k] = true
	}
	return puts, dels, false
}
