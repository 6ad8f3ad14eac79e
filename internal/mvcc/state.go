package mvcc

import (
	"sort"
	"strings"
	"unsafe"

	gbtree "github.com/google/btree"
	"github.com/tidwall/btree"

	"github.com/ember-kv/ember/internal/wire"
)

// record is one version of a key: a put, or a tombstone for a delete.
//
// Records are immutable once inserted. The trees of the live state share them with copies taken
// for raft snapshots and read views, so changing a record in place would change history that a
// concurrent reader is looking at.
//
// The index holds a record per key, so its size is most of the index's heap: a tombstone is the
// version 0 (a put's is at least 1), and the value is held as a pointer and a length (see
// storeValue), which keeps it in the 80-byte size class with the slice of the key's older
// versions.
type Record struct {
	Key     string
	Create  int64 // revision of the key's current generation's creation (0 for a tombstone)
	Mod     int64 // main revision of this change
	Version int64 // 1 at creation, +1 per put; 0 for a tombstone
	Lease   int64
	// value is the bytes of the value held in memory; nil with valueLen > 0 means the value
	// is only in the state's backend ("stored"), valueLen being its length.
	value    *byte
	valueLen int32
	Sub      int32 // position of this change among the changes of revision mod
	// olderPtr, olderLen and olderCap are the slice of the key's older versions, oldest first,
	// in the key's newest record (see keyindex.go, older); what they hold in any other record
	// means nothing. A slice header would take 8 bytes more, and the record the next size
	// class.
	olderPtr           *verRef
	olderLen, olderCap int32
}

// recordOverhead approximates the bytes a record costs besides its key and value; it feeds the
// logical size the space quota is measured on.
const recordOverhead = 64

func (r *Record) Size() int64 { return int64(len(r.Key)+r.ValueLen()) + recordOverhead }

// Tombstone reports whether r is a delete.
func (r *Record) Tombstone() bool { return r.Version == 0 }

// ValueLen is the length of r's value, wherever it is held.
func (r *Record) ValueLen() int { return int(r.valueLen) }

// stored reports whether r's value is only in the backend.
func (r *Record) stored() bool { return r.value == nil && r.valueLen > 0 }

// inlineValue is r's value held in memory ("" if stored).
func (r *Record) inlineValue() string {
	if r.value == nil {
		return ""
	}
	return unsafe.String(r.value, r.valueLen)
}

// setValue holds value in r, in memory.
func (r *Record) setValue(value string) {
	r.value, r.valueLen = unsafe.StringData(value), int32(len(value))
}

// setStored notes that r's value, of n bytes, is only in the backend.
func (r *Record) setStored(n int) { r.value, r.valueLen = nil, int32(n) }

// ToWire returns r as a wire pair with its value read as valueOf does; false means the value was
// compacted after st was cloned.
func (st *State) ToWire(r *Record, keysOnly bool) (wire.KV, bool) {
	kv := wire.KV{Key: []byte(r.Key), CreateRevision: r.Create, ModRevision: r.Mod, Version: r.Version}
	if !keysOnly {
		v, ok := st.valueOf(r)
		if !ok {
			return wire.KV{}, false
		}
		kv.Value = []byte(v)
		kv.Lease = r.Lease
	}
	return kv, true
}

// leaseRecord is a lease as the state machine knows it. Deadlines are not state: only the leader
// keeps timers (see lessor); the state holds what a new leader needs to re-arm them.
type Lease struct {
	ID  int64
	TTL int64 // granted TTL, seconds
	// remainingMs is the TTL left at the last checkpoint, or 0 if the lease was never checkpointed
	// (a new leader then starts it from the full TTL).
	RemainingMs int64
}

// leaseKey attaches key to lease; the set of them is ordered by (lease, key) so that a revoke
// finds a lease's keys in key order.
type leaseKey struct {
	lease int64
	key   string
}

// dedupEntry remembers the result of a command with a request ID, so that a retried command is
// answered from here instead of being applied twice.
type DedupEntry struct {
	ID    wire.RequestID
	Index uint64 // raft index the command was applied at; entries expire by index
	// result is the command's result, encoded: a put's is a dozen bytes where the decoded
	// form takes several allocations, and the window holds 100k of them. Retries are rare.
	Result []byte
}

// mvccState is the whole replicated state. Every field but the pending compaction's is part of
// raft snapshots.
//
// The revision history of a key, as the two record trees see it (key "a" put at 2, put at 3,
// deleted at 5, put again at 7; compacted at 0):
//
//	keys:  a@7 older [2, 3, 5t]         (by key: the newest version, listing the older ones)
//	revs:  2:a 3:a 5:a(tombstone) 7:a   (by revision: watch catch-up, hashes)
//
// revs is a tree only in a state without a backend, where it also holds the older versions'
// records; with one, the backend's revision-ordered file and the versions not yet written take
// its place (see ascendRevs, versionAt).
//
// A read at revision 4 finds version 3 of "a"; at 6 it finds the tombstone, so "a" is absent.
// Compacting at 5 drops versions 2 and 3 (superseded by a change at or before 5) and keeps the
// tombstone 5 (see obsolete) until a later compaction.
type State struct {
	// keys is a google/btree, not a tidwall/btree as the other trees: a put replaces the key's
	// record in place, and tidwall's node split leaves the half it moves out in the left
	// node's array, past its length, where the records it held stay reachable after they are
	// replaced (every overwritten key's record of the time of the split, measured). google's
	// split clears what it moves out.
	keys      *gbtree.BTreeG[*Record]
	revs      *btree.BTreeG[*Record] // nil with a backend
	leases    *btree.BTreeG[*Lease]
	leaseKeys *btree.BTreeG[leaseKey]
	dedup     *btree.BTreeG[*DedupEntry]
	alarms    []Alarm // raised alarms, sorted (compareAlarms); replaced on change, never changed in place
	auth      *Auth   // nil until the first auth change (see State.Auth); replaced on change

	rev        int64 // current revision; 1 when empty
	compactRev int64 // last compaction revision; 0 before any
	size       int64 // logical bytes of all versions held
	liveKeys   int   // keys whose newest version is a put
	versions   int   // versions held, tombstones included

	// Applying a compaction only moves compactRev; compactStep then removes the records it made
	// obsolete a bounded batch at a time (see compact.go). While compactPending, the trees
	// still hold some of them. Reads at or after compactRev never select them; HashKV and
	// snapshots skip them, and watch catch-up reads no previous version at or below
	// compactRev, so nothing replicated depends on how far the removal got. Snapshots hold no
	// pending removal, so these two fields are not in them.
	compactPending bool
	compactFrom    string // the key the pending removal resumes at

	// backend holds the state on disk when it is set (a member with a data dir); values longer
	// than its inline limit are then only there. See backend.go.
	backend    *Backend
	pending    []pendingRecord // versions since the last batch (TakeBatch), in revision order
	committing []pendingRecord // versions of the batch being written (or that failed)
	dirty      *dirtyTables    // other changes since the last batch; the Applier's own state only
	retry      *Batch          // a batch whose Write failed: the next batch writes it first
	view       *readView       // a pinned clone's view of backend
	// damage is the first value the state failed to find in its own backend; the Applier stops
	// on it (the file is damaged, so the state can no longer be trusted). Only the Applier's
	// own state sets it.
	damage error
}

// revPos is a position in revs: a change's main and sub revision.
type revPos struct {
	mod int64
	sub int32
}

var treeOpts = btree.Options{NoLocks: true} // the owner serializes writers; clones taken for reads are never written

func New() *State {
	return &State{
		keys:   gbtree.NewG(32, func(a, b *Record) bool { return a.Key < b.Key }),
		revs:   newRevs(),
		leases: btree.NewBTreeGOptions(func(a, b *Lease) bool { return a.ID < b.ID }, treeOpts),
		leaseKeys: btree.NewBTreeGOptions(func(a, b leaseKey) bool {
			if a.lease != b.lease {
				return a.lease < b.lease
			}
			return a.key < b.key
		}, treeOpts),
		dedup: btree.NewBTreeGOptions(func(a, b *DedupEntry) bool {
			if a.ID.Client != b.ID.Client {
				return a.ID.Client < b.ID.Client
			}
			return a.ID.Seq < b.ID.Seq
		}, treeOpts),
		rev: 1,
	}
}

// newRevs returns an empty revs tree.
func newRevs() *btree.BTreeG[*Record] {
	return btree.NewBTreeGOptions(func(a, b *Record) bool {
		if a.Mod != b.Mod {
			return a.Mod < b.Mod
		}
		return a.Sub < b.Sub
	}, treeOpts)
}

// NewOnDisk returns an empty state held in backend b as well as in memory (nil: memory only).
// With a backend there is no revs tree: the backend orders the versions (see ascendRevs).
func NewOnDisk(b *Backend) *State {
	st := New()
	if b != nil {
		st.backend, st.dirty, st.revs = b, newDirty(), nil
	}
	return st
}

// copyTree is t.Copy(), nil for nil.
func copyTree[T any](t *btree.BTreeG[T]) *btree.BTreeG[T] {
	if t == nil {
		return nil
	}
	return t.Copy()
}

// clone returns a copy that shares structure with st (O(1)); later writes to st copy the nodes
// they touch. Callers must hold the lock that serializes writers of st.
func (st *State) Clone() *State {
	return &State{
		keys:       st.keys.Clone(),
		revs:       copyTree(st.revs),
		leases:     st.leases.Copy(),
		leaseKeys:  st.leaseKeys.Copy(),
		dedup:      st.dedup.Copy(),
		alarms:     st.alarms,
		auth:       st.auth,
		rev:        st.rev,
		compactRev: st.compactRev,
		size:       st.size,
		liveKeys:   st.liveKeys,
		versions:   st.versions,

		compactPending: st.compactPending,
		compactFrom:    st.compactFrom,

		backend:    st.backend,
		pending:    st.pending[:len(st.pending):len(st.pending)], // appends by either copy reallocate
		committing: st.committing,
	}
}

// Rev is the current revision: 1 when empty.
func (st *State) Rev() int64 { return st.rev }

// CompactRev is the last compaction revision; 0 before any.
func (st *State) CompactRev() int64 { return st.compactRev }

// Size is the logical bytes of every version held, which the space quota is measured on.
func (st *State) Size() int64 { return st.size }

// Keys is the number of live keys.
func (st *State) Keys() int { return st.liveKeys }

// CompactPending reports whether a compaction's removal is still under way (see CompactStep).
func (st *State) CompactPending() bool { return st.compactPending }

// keyRange is [key, end) with etcd's conventions: end nil = key alone, end "\x00" = every key from
// key on.
type KeyRange struct {
	Key, End string
	Single   bool
	FromKey  bool
}

// PrefixEnd is the end of the range of every key that starts with prefix: prefix with its last
// byte below 0xff incremented and the rest cut, or "\x00" (every key from prefix on) when every
// byte is 0xff, as clientv3.GetPrefixRangeEnd.
func PrefixEnd(prefix []byte) []byte {
	end := make([]byte, len(prefix))
	copy(end, prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// NewKeyRange is the range of a request's key and end, with etcd's conventions for end.
func NewKeyRange(key, end []byte) KeyRange {
	switch {
	case len(end) == 0:
		return KeyRange{Key: string(key), Single: true}
	case len(end) == 1 && end[0] == 0:
		return KeyRange{Key: string(key), FromKey: true}
	}
	return KeyRange{Key: string(key), End: string(end)}
}

func (r KeyRange) Contains(k string) bool {
	if r.Single {
		return k == r.Key
	}
	return k >= r.Key && (r.FromKey || k < r.End)
}

// intervalEnd is the range's end for an interval.Tree: "" (no upper bound) for a from-key range.
// Callers use it for ranges that are not single keys.
func (r KeyRange) IntervalEnd() string {
	if r.FromKey {
		return ""
	}
	return r.End
}

// past reports whether k is beyond the range's end (the range is scanned in key order).
func (r KeyRange) past(k string) bool {
	if r.Single {
		return k != r.Key
	}
	return !r.FromKey && k >= r.End
}

// checkRev validates a read revision and resolves 0 to cur, the revision the key index shows
// (st.rev, or st.rev+1 inside a write txn that has pending changes).
func (st *State) checkRev(rev, cur int64) (int64, wire.Code) {
	switch {
	case rev <= 0:
		return cur, wire.CodeOK
	case rev > cur:
		return 0, wire.CodeFutureRev
	case rev < st.compactRev:
		return 0, wire.CodeCompacted
	}
	return rev, wire.CodeOK
}

// get returns key's version visible at rev, or nil. False means that version was compacted
// after st was cloned (see versionAt).
func (st *State) get(key string, rev, cur int64) (*Record, bool) {
	k := st.newest(key)
	if k == nil {
		return nil, true
	}
	return st.visible(k, rev, cur)
}

// visible returns the version of k's key visible at rev, or nil, as get does; k is the key's
// newest record.
func (st *State) visible(k *Record, rev, cur int64) (*Record, bool) {
	if rev >= cur || k.Mod <= rev {
		if k.Tombstone() {
			return nil, true
		}
		return k, true
	}
	older := k.older()
	i := sort.Search(len(older), func(i int) bool { return older[i].mod > rev }) - 1
	if i < 0 || older[i].tombstone() {
		return nil, true
	}
	return st.versionAt(k.Key, older[i])
}

// scan calls fn for every key live at rev in kr, in ascending key order, until fn returns false.
// False means a version it had to read was compacted after st was cloned (see versionAt).
func (st *State) scan(kr KeyRange, rev, cur int64, fn func(*Record) bool) bool {
	if kr.Single {
		r, ok := st.get(kr.Key, rev, cur)
		if r != nil {
			fn(r)
		}
		return ok
	}
	if !kr.FromKey && kr.Key >= kr.End {
		return true
	}
	complete := true
	st.keys.AscendGreaterOrEqual(&Record{Key: kr.Key}, func(k *Record) bool {
		if kr.past(k.Key) {
			return false
		}
		r, ok := st.visible(k, rev, cur)
		if !ok {
			complete = false
			return false
		}
		return r == nil || fn(r)
	})
	return complete
}

// rangeKeys answers a range request within w.
func (w *writeTxn) rangeKeys(op *wire.Op) (*wire.RangeResult, wire.Code) {
	recs, count, more, code := w.st.rangeRecords(op, w.cur(), w.value)
	if code != wire.CodeOK {
		if code == wire.CodeCompacted && w.missed == nil {
			// checkPath accepted the revision, so a version at it was not found (see get).
			w.missed = &Record{Key: string(op.Key), Mod: op.Revision}
		}
		return nil, code
	}
	res := &wire.RangeResult{Count: count, More: more}
	if len(recs) > 0 {
		kvs := make([]wire.KV, len(recs))
		res.Kvs = make([]*wire.KV, len(recs))
		for i, r := range recs {
			kvs[i] = w.toWire(r, op.KeysOnly)
			res.Kvs[i] = &kvs[i]
		}
	}
	return res, wire.CodeOK
}

// rangeRecords returns the records op selects, in the order it asks for and cut to its limit,
// with the count of all matches and whether the limit cut any. value reads a record's value for
// a sort by value.
func (st *State) rangeRecords(op *wire.Op, cur int64, value func(*Record) string) (recs []*Record, count int64, more bool, code wire.Code) {
	rev, code := st.checkRev(op.Revision, cur)
	if code != wire.CodeOK {
		return nil, 0, false, code
	}
	kr := NewKeyRange(op.Key, op.End)
	hasFilter := op.MinModRev > 0 || op.MaxModRev > 0 || op.MinCreateRev > 0 || op.MaxCreateRev > 0
	order, target := op.SortOrder, op.SortTarget
	if order == wire.SortNone && target != wire.SortByKey {
		order = wire.SortAscend // etcd: a sort target without an order sorts ascending
	}
	keyOrder := target == wire.SortByKey && order != wire.SortDescend
	// With keys already in the wanted order and no filters, only the first limit+1 records
	// need to be materialized; the rest are just counted.
	pushdown := keyOrder && !hasFilter && op.Limit > 0

	complete := st.scan(kr, rev, cur, func(r *Record) bool {
		count++
		if op.CountOnly {
			return true
		}
		if hasFilter && !passesFilters(op, r) {
			return true
		}
		if pushdown && int64(len(recs)) > op.Limit {
			return true
		}
		recs = append(recs, r)
		return true
	})
	if !complete {
		return nil, 0, false, wire.CodeCompacted
	}
	if op.CountOnly {
		return nil, count, false, wire.CodeOK
	}
	if !keyOrder {
		sortRecords(recs, target, order, value)
	}
	if op.Limit > 0 && int64(len(recs)) > op.Limit {
		recs, more = recs[:op.Limit], true
	}
	return recs, count, more, wire.CodeOK
}

func passesFilters(op *wire.Op, r *Record) bool {
	return (op.MinModRev <= 0 || r.Mod >= op.MinModRev) &&
		(op.MaxModRev <= 0 || r.Mod <= op.MaxModRev) &&
		(op.MinCreateRev <= 0 || r.Create >= op.MinCreateRev) &&
		(op.MaxCreateRev <= 0 || r.Create <= op.MaxCreateRev)
}

func sortRecords(recs []*Record, target, order uint8, value func(*Record) string) {
	var less func(a, b *Record) bool
	switch target {
	case wire.SortByVersion:
		less = func(a, b *Record) bool { return a.Version < b.Version }
	case wire.SortByCreate:
		less = func(a, b *Record) bool { return a.Create < b.Create }
	case wire.SortByMod:
		less = func(a, b *Record) bool { return a.Mod < b.Mod }
	case wire.SortByValue:
		values := make(map[*Record]string, len(recs))
		for _, r := range recs {
			values[r] = value(r)
		}
		less = func(a, b *Record) bool { return values[a] < values[b] }
	default:
		less = func(a, b *Record) bool { return a.Key < b.Key }
	}
	if order == wire.SortDescend {
		asc := less
		less = func(a, b *Record) bool { return asc(b, a) }
	}
	// Stable, so ties keep key order: results are the same on every member.
	sort.SliceStable(recs, func(i, j int) bool { return less(recs[i], recs[j]) })
}

// compare evaluates one txn compare against the state before the txn.
func (w *writeTxn) compare(c *wire.Compare) bool {
	st := w.st
	kr := NewKeyRange(c.Key, c.End)
	matched := false
	ok := true
	st.scan(kr, st.rev, st.rev, func(r *Record) bool {
		matched = true
		ok = w.compareRecord(c, r)
		return ok
	})
	if !matched {
		if c.Target == wire.TargetValue {
			return false // a missing value cannot be compared (etcd: nil equals "" on the wire)
		}
		return w.compareRecord(c, &Record{})
	}
	return ok
}

func (w *writeTxn) compareRecord(c *wire.Compare, r *Record) bool {
	var cmp int
	switch c.Target {
	case wire.TargetValue:
		cmp = strings.Compare(w.value(r), string(c.Value))
	case wire.TargetVersion:
		cmp = cmpInt(r.Version, c.Int)
	case wire.TargetCreate:
		cmp = cmpInt(r.Create, c.Int)
	case wire.TargetMod:
		cmp = cmpInt(r.Mod, c.Int)
	case wire.TargetLease:
		cmp = cmpInt(r.Lease, c.Int)
	default:
		return false
	}
	switch c.Result {
	case wire.CompareEqual:
		return cmp == 0
	case wire.CompareNotEqual:
		return cmp != 0
	case wire.CompareGreater:
		return cmp > 0
	case wire.CompareLess:
		return cmp < 0
	}
	return false
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// event is one change of a revision, as the watch hub and the lessor see it. It carries the
// values, read while applying: a stored value may be compacted before a watcher is sent it.
type Event struct {
	Rec   *Record // the new version (a tombstone for a delete)
	Prev  *Record // the version it replaced, nil if the key did not exist
	Value string  // Rec's value
	// PrevValue is Prev's value if PrevRead. Applying reads a value from the backend only if
	// the command's result needs it: most overwrites have no watcher that wants the previous
	// value, and reading it would cost the apply path a backend read per put. The owner reads
	// it (ReadPrevValues) before the events leave its lock when a watcher may want it.
	PrevValue string
	PrevRead  bool
}

// ReadPrevValues reads the previous values evs lack, from st, the Applier's own state that
// applied them, before any later change to it (a compaction could remove them). A value it
// cannot find is damage (see State.damage): the event goes without it, and the Applier stops at
// its next entry.
func (st *State) ReadPrevValues(evs []Event) {
	for i := range evs {
		ev := &evs[i]
		if ev.Prev == nil || ev.PrevRead {
			continue
		}
		if ev.PrevValue, ev.PrevRead = st.valueOf(ev.Prev); !ev.PrevRead && st.damage == nil {
			st.damage = errValueMissing(ev.Prev)
		}
	}
}

// writeTxn is one transaction over a state: it applies the changes of one revision to the
// Applier's state (ApplyTxn), or answers a read-only transaction from a clone (ReadTxn). The
// caller has validated everything that can fail, so a writeTxn never stops half-way.
type writeTxn struct {
	st     *State
	rev    int64 // revision the changes get
	events []Event
	missed *Record // the first record whose value was not found (see valueOf)
	probe  Record  // a search key for put's lookup, which would otherwise escape to the heap
}

func (st *State) beginWrite() *writeTxn { return &writeTxn{st: st, rev: st.rev + 1} }

// value reads r's value, noting a miss.
func (w *writeTxn) value(r *Record) string {
	v, ok := w.st.valueOf(r)
	if !ok && w.missed == nil {
		w.missed = r
	}
	return v
}

// toWire is ToWire, noting a miss.
func (w *writeTxn) toWire(r *Record, keysOnly bool) wire.KV {
	var value string
	if !keysOnly {
		value = w.value(r)
	}
	return toWire(r, value, keysOnly)
}

func toWire(r *Record, value string, keysOnly bool) wire.KV {
	kv := wire.KV{Key: []byte(r.Key), CreateRevision: r.Create, ModRevision: r.Mod, Version: r.Version}
	if !keysOnly {
		kv.Value = []byte(value)
		kv.Lease = r.Lease
	}
	return kv
}

// end commits the revision if anything changed, and returns the events.
func (w *writeTxn) end() []Event {
	if len(w.events) > 0 {
		w.st.rev = w.rev
	}
	return w.events
}

// insert makes r, a new version, its key's newest: prior, the key's newest record until now (nil
// if none), becomes an older version.
func (w *writeTxn) insert(r, prior *Record) {
	st := w.st
	if prior != nil {
		r.setOlder(append(prior.older(), refOf(prior))) // see the key index on sharing the slice
	}
	st.keys.ReplaceOrInsert(r)
	if st.revs != nil {
		st.revs.Set(r)
	}
	st.size += r.Size()
	st.versions++
}

func (w *writeTxn) put(op *wire.Op) *wire.PutResult {
	st := w.st
	key := string(op.Key)
	w.probe.Key = key
	prior, _ := st.keys.Get(&w.probe)
	w.probe.Key = ""
	if prior != nil {
		key = prior.Key // versions of a key share its bytes: one copy per key, not per version
	}
	var old *Record // the version replaced, if live
	if prior != nil && !prior.Tombstone() {
		old = prior
	} else {
		st.liveKeys++
	}
	r := &Record{Key: key, Mod: w.rev, Sub: int32(len(w.events)), Lease: op.Lease}
	value := string(op.Value)
	var oldValue string
	oldRead := false
	if old != nil {
		oldValue, oldRead = w.prevValue(old, op.IgnoreValue || op.PrevKV)
		r.Create, r.Version = old.Create, old.Version+1
		if op.IgnoreValue {
			value = oldValue
		}
		if op.IgnoreLease {
			r.Lease = old.Lease
		}
	} else {
		r.Create, r.Version = w.rev, 1
	}
	st.storeValue(r, value)
	w.insert(r, prior)
	if old != nil && old.Lease != 0 && old.Lease != r.Lease {
		st.leaseKeys.Delete(leaseKey{old.Lease, key})
	}
	if r.Lease != 0 {
		st.leaseKeys.Set(leaseKey{r.Lease, key})
	}
	w.events = append(w.events, Event{Rec: r, Prev: old, Value: value, PrevValue: oldValue, PrevRead: oldRead})
	res := &wire.PutResult{}
	if op.PrevKV && old != nil {
		kv := toWire(old, oldValue, false)
		res.PrevKV = &kv
	}
	return res
}

// deleteKey writes a tombstone for the live record old.
func (w *writeTxn) deleteKey(old *Record) {
	st := w.st
	t := &Record{Key: old.Key, Mod: w.rev, Sub: int32(len(w.events))}
	st.storeValue(t, "")
	w.insert(t, old)
	st.liveKeys--
	if old.Lease != 0 {
		st.leaseKeys.Delete(leaseKey{old.Lease, old.Key})
	}
	prevValue, prevRead := w.prevValue(old, false)
	w.events = append(w.events, Event{Rec: t, Prev: old, PrevValue: prevValue, PrevRead: prevRead})
}

// prevValue returns the value of old, a version being replaced, if need says the command's
// result needs it or it is in memory; false if it was left unread (see Event.PrevValue).
func (w *writeTxn) prevValue(old *Record, need bool) (string, bool) {
	if need {
		return w.value(old), true
	}
	v, ok, inMemory := w.st.valueInMemory(old)
	return v, ok && inMemory
}

func (w *writeTxn) deleteRange(op *wire.Op) *wire.DeleteResult {
	var doomed []*Record
	w.st.scan(NewKeyRange(op.Key, op.End), w.rev, w.rev, func(r *Record) bool {
		doomed = append(doomed, r)
		return true
	})
	res := &wire.DeleteResult{Deleted: int64(len(doomed))}
	if op.PrevKV && len(doomed) > 0 {
		kvs := make([]wire.KV, len(doomed))
		res.PrevKVs = make([]*wire.KV, len(doomed))
		for i, r := range doomed {
			kvs[i] = w.toWire(r, false)
			res.PrevKVs[i] = &kvs[i]
		}
	}
	for _, r := range doomed {
		w.deleteKey(r)
	}
	return res
}

// txnPath records, in depth-first order, which branch each transaction of a request takes. It is
// computed before any op runs, so every compare (nested ones too) sees the state before the txn.
type txnPath []bool

func (w *writeTxn) computePath(t *wire.Txn, path txnPath) txnPath {
	ok := true
	for i := range t.Compares {
		if !w.compare(&t.Compares[i]) {
			ok = false
			break
		}
	}
	path = append(path, ok)
	for i := range branch(t, ok) {
		if op := &branch(t, ok)[i]; op.Kind == wire.OpTxn {
			path = w.computePath(op.Txn, path)
		}
	}
	return path
}

func branch(t *wire.Txn, ok bool) []wire.Op {
	if ok {
		return t.Success
	}
	return t.Failure
}

// checkPath validates the ops of the chosen branches against the state before the txn: leases
// exist, ignore-value and ignore-lease keys exist, read revisions are in the window.
func (st *State) checkPath(t *wire.Txn, path txnPath, granted int64) (txnPath, wire.Code) {
	ok := path[0]
	path = path[1:]
	for i := range branch(t, ok) {
		op := &branch(t, ok)[i]
		switch op.Kind {
		case wire.OpRange:
			if _, code := st.checkRev(op.Revision, st.rev); code != wire.CodeOK {
				return nil, code
			}
		case wire.OpPut:
			if op.Lease != 0 && !op.IgnoreLease && op.Lease != granted {
				if _, ok := st.leases.Get(&Lease{ID: op.Lease}); !ok {
					return nil, wire.CodeLeaseNotFound
				}
			}
			if op.IgnoreValue || op.IgnoreLease {
				if st.live(string(op.Key)) == nil {
					return nil, wire.CodeKeyNotFound
				}
			}
		case wire.OpTxn:
			var code wire.Code
			if path, code = st.checkPath(op.Txn, path, granted); code != wire.CodeOK {
				return nil, code
			}
		}
	}
	return path, wire.CodeOK
}

// execPath runs the chosen branches. Reads see the txn's own earlier writes.
func (w *writeTxn) execPath(t *wire.Txn, path txnPath) (*wire.TxnResult, txnPath) {
	ok := path[0]
	path = path[1:]
	ops := branch(t, ok)
	res := &wire.TxnResult{Succeeded: ok, Responses: make([]wire.OpResult, len(ops))}
	for i := range ops {
		op := &ops[i]
		or := &res.Responses[i]
		or.Kind = op.Kind
		switch op.Kind {
		case wire.OpRange:
			or.Range, _ = w.rangeKeys(op) // checked by checkPath
		case wire.OpPut:
			or.Put = w.put(op)
		case wire.OpDelete:
			or.Delete = w.deleteRange(op)
		case wire.OpTxn:
			or.Txn, path = w.execPath(op.Txn, path)
		}
	}
	return res, path
}

// cur is the revision the key index shows: the pending one once the txn has changed something.
func (w *writeTxn) cur() int64 {
	if len(w.events) > 0 {
		return w.rev
	}
	return w.st.rev
}

// applyTxn runs a validated transaction and returns its result and events. A value the state
// cannot find in its own file is damage (see State.damage).
func (st *State) ApplyTxn(t *wire.Txn) (*wire.Result, []Event) { return st.applyTxn(t, 0, 0) }

// ApplyGrantTxn grants lease id for ttl seconds and runs the validated transaction t in one
// change, so that t's puts may attach keys to the new lease. If the grant or t is refused,
// nothing changes.
func (st *State) ApplyGrantTxn(id, ttl int64, t *wire.Txn) (*wire.Result, []Event) {
	if code := st.canGrant(id, ttl); code != wire.CodeOK {
		return &wire.Result{Code: code, Revision: st.rev}, nil
	}
	res, evs := st.applyTxn(t, id, ttl)
	if res.Code == wire.CodeOK {
		res.LeaseID, res.LeaseTTL = id, ttl
	}
	return res, evs
}

// applyTxn is ApplyTxn, granting lease id first if ttl is not 0 (canGrant has passed).
func (st *State) applyTxn(t *wire.Txn, id, ttl int64) (*wire.Result, []Event) {
	w := st.beginWrite()
	defer func() {
		if w.missed != nil && st.damage == nil {
			st.damage = errValueMissing(w.missed)
		}
	}()
	path := w.computePath(t, nil)
	if _, code := st.checkPath(t, path, id); code != wire.CodeOK {
		return &wire.Result{Code: code, Revision: st.rev}, nil
	}
	if ttl != 0 {
		st.grant(id, ttl)
	}
	tr, _ := w.execPath(t, path)
	evs := w.end()
	return &wire.Result{Revision: st.rev, Txn: tr}, evs
}

// Damage is the first value the Applier's state failed to find in its own file, or nil.
func (st *State) Damage() error { return st.damage }

// readTxn answers a transaction that writes nothing, on a read view. It fails with
// CodeCompacted if a value it reads was compacted after the view was cloned (see valueOf).
func (st *State) ReadTxn(t *wire.Txn) (*wire.Result, wire.Code) {
	// A read-only txn has no writes, so running it on a writeTxn changes nothing; the view is
	// never mutated.
	w := &writeTxn{st: st, rev: st.rev + 1}
	path := w.computePath(t, nil)
	if _, code := st.checkPath(t, path, 0); code != wire.CodeOK {
		return nil, code
	}
	tr, _ := w.execPath(t, path)
	if w.missed != nil {
		return nil, wire.CodeCompacted
	}
	return &wire.Result{Revision: st.rev, Txn: tr}, wire.CodeOK
}

// CheckRev validates a read revision and resolves 0 or less to the current one. It fails with
// CodeFutureRev above the current revision and CodeCompacted below the compaction revision.
func (st *State) CheckRev(rev int64) (int64, wire.Code) { return st.checkRev(rev, st.rev) }

// Scan calls fn for every key live at rev (a revision CheckRev accepted) in kr, in ascending
// key order, until fn returns false. Records are shared: fn must not change them. False means
// what Value's false does: a version at rev was compacted after st was cloned.
func (st *State) Scan(kr KeyRange, rev int64, fn func(*Record) bool) bool {
	return st.scan(kr, rev, st.rev, fn)
}

// RangeRecords returns the records a range op selects, in the order it asks for and cut to its
// limit, with the count of all matches and whether the limit cut any.
// Read their values with Value; a sort by value that finds a value compacted after st was cloned
// fails with CodeCompacted.
func (st *State) RangeRecords(op *wire.Op) (recs []*Record, count int64, more bool, code wire.Code) {
	w := &writeTxn{st: st}
	recs, count, more, code = st.rangeRecords(op, st.rev, w.value)
	if w.missed != nil {
		return nil, 0, false, wire.CodeCompacted
	}
	return recs, count, more, code
}

// KeyRecord answers a range op of a single key (no End) that does not sort by value as
// RangeRecords does, without a slice: the record it selects or nil, and the count. Its value is
// read with Value or a ValueReader.
func (st *State) KeyRecord(op *wire.Op) (r *Record, count int64, code wire.Code) {
	rev, code := st.checkRev(op.Revision, st.rev)
	if code != wire.CodeOK {
		return nil, 0, code
	}
	// The key is only compared during the lookup: no copy of it.
	r, ok := st.get(unsafe.String(unsafe.SliceData(op.Key), len(op.Key)), rev, st.rev)
	if !ok {
		return nil, 0, wire.CodeCompacted
	}
	if r == nil {
		return nil, 0, wire.CodeOK
	}
	if op.CountOnly || !passesFilters(op, r) {
		return nil, 1, wire.CodeOK
	}
	return r, 1, wire.CodeOK
}

// Changes calls fn for every change (a put or a tombstone) from revision from on, in revision
// order, until fn returns false: watch catch-up reads history through it. False means that it
// could not read them all, as Value's false does: a compaction applied after st was cloned
// removed some (a newer clone answers ErrCompacted), or the backend is closed or damaged.
func (st *State) Changes(from int64, fn func(*Record) bool) bool {
	return st.ascendRevs(revPos{mod: from}, fn) == nil
}
