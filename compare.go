package ember

import (
	"fmt"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// Cmp is one condition of a transaction, built with Compare. A Cmp is a value; it is safe to
// reuse and to share between goroutines.
type Cmp struct {
	c   wire.Compare
	err error // a malformed Compare call; reported by Commit instead of panicking
}

// Value compares the value of key (bytewise). A Value compare on a missing key is always false.
func Value(key string) Cmp { return Cmp{c: wire.Compare{Target: wire.TargetValue, Key: []byte(key)}} }

// Version compares the version of key (0 for a missing key).
func Version(key string) Cmp {
	return Cmp{c: wire.Compare{Target: wire.TargetVersion, Key: []byte(key)}}
}

// CreateRevision compares the revision at which key was created (0 for a missing key).
func CreateRevision(key string) Cmp {
	return Cmp{c: wire.Compare{Target: wire.TargetCreate, Key: []byte(key)}}
}

// ModRevision compares the revision at which key was last modified (0 for a missing key).
func ModRevision(key string) Cmp {
	return Cmp{c: wire.Compare{Target: wire.TargetMod, Key: []byte(key)}}
}

// LeaseValue compares the lease key is attached to (NoLease for none or a missing key).
func LeaseValue(key string) Cmp {
	return Cmp{c: wire.Compare{Target: wire.TargetLease, Key: []byte(key)}}
}

// Compare completes cmp with a relation ("=", "!=", ">", "<") and the value to compare with: a
// string for Value, an integer (int, int64 or LeaseID) for the others. A malformed compare makes
// the transaction's Commit fail.
func Compare(cmp Cmp, result string, v any) Cmp {
	switch result {
	case "=":
		cmp.c.Result = wire.CompareEqual
	case "!=":
		cmp.c.Result = wire.CompareNotEqual
	case ">":
		cmp.c.Result = wire.CompareGreater
	case "<":
		cmp.c.Result = wire.CompareLess
	default:
		cmp.err = fmt.Errorf("ember: Compare: unknown relation %q", result)
		return cmp
	}
	if cmp.c.Target == wire.TargetValue {
		switch x := v.(type) {
		case string:
			cmp.c.Value = []byte(x)
		case []byte:
			cmp.c.Value = append([]byte(nil), x...)
		default:
			cmp.err = fmt.Errorf("ember: Compare: Value needs a string, got %T", v)
		}
		return cmp
	}
	switch x := v.(type) {
	case int64:
		cmp.c.Int = x
	case int:
		cmp.c.Int = int64(x)
	case LeaseID:
		cmp.c.Int = int64(x)
	default:
		cmp.err = fmt.Errorf("ember: Compare: needs an integer, got %T", v)
	}
	return cmp
}

// WithRange makes the compare hold only if it holds for every key in [key, end).
func (cmp Cmp) WithRange(end string) Cmp {
	cmp.c.End = []byte(end)
	return cmp
}

// WithPrefix makes the compare hold only if it holds for every key with the compare's key as
// prefix.
func (cmp Cmp) WithPrefix() Cmp {
	cmp.c.End = mvcc.PrefixEnd(cmp.c.Key)
	return cmp
}

// KeyBytes returns the key the compare looks at.
func (cmp Cmp) KeyBytes() []byte { return cmp.c.Key }

// ValueBytes returns the value a Value compare compares with.
func (cmp Cmp) ValueBytes() []byte { return cmp.c.Value }
