package ember

import (
	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

type opType uint8

const (
	tRange opType = iota + 1
	tPut
	tDeleteRange
	tTxn
)

// Op is one request: a get, put, delete or nested transaction. Build it with OpGet, OpPut,
// OpDelete or OpTxn and run it with Store.Do or inside a Txn. An Op is a value; it is safe to
// reuse and to share between goroutines.
type Op struct {
	t   opType
	key []byte
	end []byte
	val []byte

	// range
	limit        int64
	sort         *sortOption
	serializable bool
	keysOnly     bool
	countOnly    bool
	minModRev    int64
	maxModRev    int64
	minCreateRev int64
	maxCreateRev int64
	rev          int64

	// put and delete
	prevKV      bool
	leaseID     LeaseID
	ignoreValue bool
	ignoreLease bool

	// watch
	progressNotify bool
	createdNotify  bool
	filterPut      bool
	filterDelete   bool

	// txn
	cmps    []Cmp
	thenOps []Op
	elseOps []Op
}

type sortOption struct {
	target SortTarget
	order  SortOrder
}

// OpOption configures an Op.
type OpOption func(*Op)

// SortTarget is the field a range is sorted by.
type SortTarget int

// SortOrder is the direction of a sort.
type SortOrder int

const (
	SortByKey SortTarget = iota
	SortByVersion
	SortByCreateRevision
	SortByModRevision
	SortByValue
)

const (
	SortNone SortOrder = iota
	SortAscend
	SortDescend
)

// OpGet returns a range request for key.
func OpGet(key string, opts ...OpOption) Op {
	op := Op{t: tRange, key: []byte(key)}
	op.applyOpts(opts)
	return op
}

// OpPut returns a put request of val under key.
func OpPut(key, val string, opts ...OpOption) Op {
	op := Op{t: tPut, key: []byte(key), val: []byte(val)}
	op.applyOpts(opts)
	return op
}

// OpDelete returns a delete request for key (or a range, with WithPrefix, WithRange or WithFromKey).
func OpDelete(key string, opts ...OpOption) Op {
	op := Op{t: tDeleteRange, key: []byte(key)}
	op.applyOpts(opts)
	return op
}

// OpTxn returns a nested transaction: if every compare in cmps holds, thenOps run, else elseOps.
func OpTxn(cmps []Cmp, thenOps []Op, elseOps []Op) Op {
	return Op{t: tTxn, cmps: cmps, thenOps: thenOps, elseOps: elseOps}
}

func (op *Op) applyOpts(opts []OpOption) {
	for _, o := range opts {
		o(op)
	}
}

// IsGet reports whether op is a range request.
func (op Op) IsGet() bool { return op.t == tRange }

// IsPut reports whether op is a put.
func (op Op) IsPut() bool { return op.t == tPut }

// IsDelete reports whether op is a delete.
func (op Op) IsDelete() bool { return op.t == tDeleteRange }

// IsTxn reports whether op is a nested transaction.
func (op Op) IsTxn() bool { return op.t == tTxn }

// KeyBytes returns the key the op starts at.
func (op Op) KeyBytes() []byte { return op.key }

// RangeBytes returns the end of the op's range, or nil for a single key.
func (op Op) RangeBytes() []byte { return op.end }

// ValueBytes returns the value of a put.
func (op Op) ValueBytes() []byte { return op.val }

// Rev returns the revision a get reads at (0 = latest).
func (op Op) Rev() int64 { return op.rev }

// IsSerializable reports whether a get may be served from local state without a round trip.
func (op Op) IsSerializable() bool { return op.serializable }

// Txn returns the compares and branches of a nested transaction.
func (op Op) Txn() ([]Cmp, []Op, []Op) { return op.cmps, op.thenOps, op.elseOps }

// isWrite reports whether running op may change the store.
func (op Op) isWrite() bool {
	switch op.t {
	case tPut, tDeleteRange:
		return true
	case tTxn:
		for _, o := range op.thenOps {
			if o.isWrite() {
				return true
			}
		}
		for _, o := range op.elseOps {
			if o.isWrite() {
				return true
			}
		}
	}
	return false
}

// allSerializable reports whether every read in a read-only op allows serializable reads.
func (op Op) allSerializable() bool {
	switch op.t {
	case tRange:
		return op.serializable
	case tTxn:
		for _, o := range op.thenOps {
			if !o.allSerializable() {
				return false
			}
		}
		for _, o := range op.elseOps {
			if !o.allSerializable() {
				return false
			}
		}
		return true
	}
	return false
}

// WithLease attaches the key of a put to lease id.
func WithLease(id LeaseID) OpOption { return func(op *Op) { op.leaseID = id } }

// WithLimit caps the number of keys a get returns (0 = no limit).
func WithLimit(n int64) OpOption { return func(op *Op) { op.limit = n } }

// WithRev reads at revision rev (0 = latest). For Watch it is the inclusive start revision.
func WithRev(rev int64) OpOption { return func(op *Op) { op.rev = rev } }

// WithSort sorts a get's result. Sorting by key ascending is the default order and costs nothing.
func WithSort(target SortTarget, order SortOrder) OpOption {
	return func(op *Op) {
		if target == SortByKey && order == SortAscend {
			// Keys come out of the index in ascending order already; asking for it explicitly
			// must not disable the limit pushdown.
			order = SortNone
		}
		op.sort = &sortOption{target, order}
	}
}

// GetPrefixRangeEnd returns the end of the range of keys that start with prefix.
func GetPrefixRangeEnd(prefix string) string {
	return string(mvcc.PrefixEnd([]byte(prefix)))
}

// WithPrefix makes the op cover every key that starts with its key. An empty key covers all keys.
func WithPrefix() OpOption {
	return func(op *Op) {
		if len(op.key) == 0 {
			op.key, op.end = []byte{0}, []byte{0}
			return
		}
		op.end = mvcc.PrefixEnd(op.key)
	}
}

// WithRange makes the op cover the keys in [key, end).
func WithRange(end string) OpOption { return func(op *Op) { op.end = []byte(end) } }

// WithFromKey makes the op cover every key greater than or equal to its key.
func WithFromKey() OpOption {
	return func(op *Op) {
		if len(op.key) == 0 {
			op.key = []byte{0}
		}
		op.end = []byte{0}
	}
}

// WithSerializable lets a get be served from this member's local state without a round trip to
// the leader. The result may be stale.
func WithSerializable() OpOption { return func(op *Op) { op.serializable = true } }

// WithKeysOnly makes a get return keys and revisions without values.
func WithKeysOnly() OpOption { return func(op *Op) { op.keysOnly = true } }

// WithCountOnly makes a get return only the number of keys in the range.
func WithCountOnly() OpOption { return func(op *Op) { op.countOnly = true } }

// WithMinModRev keeps only keys modified at or after rev.
func WithMinModRev(rev int64) OpOption { return func(op *Op) { op.minModRev = rev } }

// WithMaxModRev keeps only keys modified at or before rev.
func WithMaxModRev(rev int64) OpOption { return func(op *Op) { op.maxModRev = rev } }

// WithMinCreateRev keeps only keys created at or after rev.
func WithMinCreateRev(rev int64) OpOption { return func(op *Op) { op.minCreateRev = rev } }

// WithMaxCreateRev keeps only keys created at or before rev.
func WithMaxCreateRev(rev int64) OpOption { return func(op *Op) { op.maxCreateRev = rev } }

// WithPrevKV returns the previous key-value pair of a put or delete, and of a watch event.
func WithPrevKV() OpOption { return func(op *Op) { op.prevKV = true } }

// WithIgnoreValue keeps the key's current value on a put; the key must exist.
func WithIgnoreValue() OpOption { return func(op *Op) { op.ignoreValue = true } }

// WithIgnoreLease keeps the key's current lease on a put; the key must exist.
func WithIgnoreLease() OpOption { return func(op *Op) { op.ignoreLease = true } }

// WithProgressNotify makes a watch receive empty responses carrying the current revision when
// there are no events for a while.
func WithProgressNotify() OpOption { return func(op *Op) { op.progressNotify = true } }

// WithCreatedNotify makes a watch send a first response with Created set once it is registered.
func WithCreatedNotify() OpOption { return func(op *Op) { op.createdNotify = true } }

// WithFilterPut drops put events from a watch.
func WithFilterPut() OpOption { return func(op *Op) { op.filterPut = true } }

// WithFilterDelete drops delete events from a watch.
func WithFilterDelete() OpOption { return func(op *Op) { op.filterDelete = true } }

func withTop(target SortTarget, order SortOrder) []OpOption {
	return []OpOption{WithPrefix(), WithSort(target, order), WithLimit(1)}
}

// WithFirstKey gets the lexically first key of a prefix.
func WithFirstKey() []OpOption { return withTop(SortByKey, SortAscend) }

// WithLastKey gets the lexically last key of a prefix.
func WithLastKey() []OpOption { return withTop(SortByKey, SortDescend) }

// WithFirstRev gets the key with the oldest modification revision in a prefix.
func WithFirstRev() []OpOption { return withTop(SortByModRevision, SortAscend) }

// WithLastRev gets the key with the latest modification revision in a prefix.
func WithLastRev() []OpOption { return withTop(SortByModRevision, SortDescend) }

// WithFirstCreate gets the key with the oldest creation revision in a prefix.
func WithFirstCreate() []OpOption { return withTop(SortByCreateRevision, SortAscend) }

// WithLastCreate gets the key with the latest creation revision in a prefix.
func WithLastCreate() []OpOption { return withTop(SortByCreateRevision, SortDescend) }

// CompactOption configures Compact.
type CompactOption func(*compactOp)

type compactOp struct{ physical bool }

// WithCompactPhysical makes Compact return only once the compaction has been applied to this
// member's state and the history it compacted has been removed from it (the removal runs in
// steps after the apply; DBSizeInUse then no longer counts that history).
func WithCompactPhysical() CompactOption { return func(c *compactOp) { c.physical = true } }

// toWire converts an op for the state machine.
func (op Op) toWire() wire.Op {
	switch op.t {
	case tRange:
		w := wire.Op{
			Kind: wire.OpRange, Key: op.key, End: op.end,
			Revision: op.rev, Limit: op.limit, Serializable: op.serializable,
			KeysOnly: op.keysOnly, CountOnly: op.countOnly,
			MinModRev: op.minModRev, MaxModRev: op.maxModRev,
			MinCreateRev: op.minCreateRev, MaxCreateRev: op.maxCreateRev,
		}
		if op.sort != nil {
			w.SortTarget = uint8(op.sort.target)
			w.SortOrder = uint8(op.sort.order)
		}
		return w
	case tPut:
		return wire.Op{Kind: wire.OpPut, Key: op.key, Value: op.val, Lease: int64(op.leaseID),
			PrevKV: op.prevKV, IgnoreValue: op.ignoreValue, IgnoreLease: op.ignoreLease}
	case tDeleteRange:
		return wire.Op{Kind: wire.OpDelete, Key: op.key, End: op.end, PrevKV: op.prevKV}
	default:
		return wire.Op{Kind: wire.OpTxn, Txn: txnToWire(op.cmps, op.thenOps, op.elseOps)}
	}
}

func txnToWire(cmps []Cmp, thenOps, elseOps []Op) *wire.Txn {
	t := &wire.Txn{
		Compares: make([]wire.Compare, len(cmps)),
		Success:  make([]wire.Op, len(thenOps)),
		Failure:  make([]wire.Op, len(elseOps)),
	}
	for i, c := range cmps {
		t.Compares[i] = c.c
	}
	for i, o := range thenOps {
		t.Success[i] = o.toWire()
	}
	for i, o := range elseOps {
		t.Failure[i] = o.toWire()
	}
	return t
}
