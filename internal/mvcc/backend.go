package mvcc

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ember-kv/ember/internal/wire"
)

// InlineValueMax is the largest value a State on disk also keeps in memory with its record. A
// record already costs about recordOverhead bytes of heap besides its key, so a value up to that
// size at most doubles it; the locks, leader keys and small configuration values most hosts hold
// are of that size and are read without touching the file. Larger values (etcd's typical 1–4 KiB
// objects) are read from the backend, through the page cache, not the Go heap.
const InlineValueMax = 128

// backendMmapSize is the address space the backend is mapped with at first. bbolt must remap
// when the file outgrows its mapping, and a remap waits for every read transaction, including a
// snapshot being streamed; reserving address space (not memory) up front keeps a growing file
// from stalling commits behind a snapshot, as etcd's 10 GiB initial mapping does.
const backendMmapSize = 10 << 30

// Backend file format (bbolt). Every value ends with a CRC-32C (Castagnoli) of the bucket name,
// the key and the value before it, checked when the backend is loaded:
//
//	revs    16-byte revision (main, sub; big-endian) → varint create, varint version, varint
//	        lease, bool tombstone, key, value: every version the state holds
//	leases  8-byte ID (big-endian) → varint TTL, varint remaining ms
//	dedup2  8-byte sequence number (big-endian) → the dedup table's changes of one batch (or part
//	        of one), replayed in key order when loaded: uvarint newest index of its entries (0
//	        without), uvarint count, then per entry uvarint client, uvarint seq, uvarint index,
//	        bytes result; uvarint count, then per forgotten request uvarint client, uvarint seq.
//	        One value per batch, not a key per request: a put costs no bbolt put and later delete
//	        of its own. A value whose newest entry is older than the newest one written by more
//	        than DedupWindow holds only forgotten entries (the Applier forgets them in index
//	        order) and is deleted, oldest value first, so that every forget it holds concerns an
//	        entry deleted with it or before.
//	meta    "format" → uvarint backendFormat; "applied" → uvarint raft index the contents are
//	        at; "rev", "compact" → varint revision and compaction revision; "removed" → varint
//	        compaction revision whose removal (CompactStep) the file holds complete (absent: none
//	        known, so Load resumes the removal from the start); "alarms" → uvarint
//	        count, then member, type byte per alarm; "auth" → the auth state, as a snapshot's
//	        auth frame (auth_snapshot.go), once it has changed
//
// Format 1 had the dedup table in bucket dedup, one entry per request: 16-byte request ID
// (client, seq) → uvarint index, bytes result. OpenBackend migrates it to format 2.
var (
	bucketRevs    = []byte("revs")
	bucketLeases  = []byte("leases")
	bucketDedup   = []byte("dedup2")
	bucketMeta    = []byte("meta")
	bucketDedupV1 = []byte("dedup")

	metaFormat  = []byte("format")
	metaApplied = []byte("applied")
	metaRev     = []byte("rev")
	metaCompact = []byte("compact")
	metaRemoved = []byte("removed")
	metaAlarms  = []byte("alarms")
	metaAuth    = []byte("auth")
)

const backendFormat = 2

// dedupValueItems bounds the entries and forgets in one dedup2 value, so that a large batch's
// changes (a restored table) do not need one huge run of contiguous pages.
const dedupValueItems = 4096

// Backend is the bbolt file that holds a State on disk: every version with its value, the
// leases, the dedup table, the alarms and the raft index they are at. The in-memory index (the
// State's trees) is rebuilt from it when a member starts (Load), so that raft replays only the
// entries after that index.
//
// Writes come from the Applier's owner, serialized with applies (State.Commit); any number of
// goroutines read values from it.
type Backend struct {
	db        *bolt.DB
	path      string
	inlineMax int   // values up to this length are also kept in their records
	mapped    int64 // the mapping the file was opened with; bbolt remaps a file that outgrows it

	view   atomic.Pointer[readView] // the view reads share; nil while a commit may remap, or closed
	size   atomic.Int64             // the file's size as of view's commit
	closed atomic.Bool
}

// OpenBackend opens the backend at path, creating an empty one if there is none, for a state
// whose values longer than inlineMax (InlineValueMax; tests use 0) are read from it.
func OpenBackend(path string, inlineMax int) (*Backend, error) {
	return openBackend(path, inlineMax, backendMmapSize)
}

// openBackend is OpenBackend with the file first mapped with mapped bytes (tests map less).
func openBackend(path string, inlineMax int, mapped int64) (b *Backend, err error) {
	defer recoverCorrupt(&err)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: int(mapped),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: backend %s: %w", ErrCorrupt, path, err)
	}
	b = &Backend{db: db, path: path, inlineMax: inlineMax, mapped: mapped}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketRevs, bucketLeases, bucketDedup, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if v := m.Get(metaFormat); v != nil {
			f, err := unseal(bucketMeta, metaFormat, v)
			if err != nil {
				return err
			}
			switch n, _ := binary.Uvarint(f); n {
			case backendFormat:
				return nil
			case 1:
				return migrateDedupV1(tx)
			default:
				return fmt.Errorf("%w: backend format %d, want %d", ErrCorrupt, n, backendFormat)
			}
		}
		return m.Put(metaFormat, seal(bucketMeta, metaFormat, binary.AppendUvarint(nil, backendFormat)))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("backend %s: %w", path, err)
	}
	b.renewView()
	return b, nil
}

// OpenBackendReadOnly opens the backend at path for reading only, for tools that inspect a
// stopped member's data dir: it fails at once if a running member holds the file.
func OpenBackendReadOnly(path string) (*Backend, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second,
		FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", path, err)
	}
	return &Backend{db: db, path: path, inlineMax: InlineValueMax}, nil
}

// CreateBackend is OpenBackend on an empty file at path, replacing any file there.
func CreateBackend(path string, inlineMax int) (*Backend, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("backend: %w", err)
	}
	return OpenBackend(path, inlineMax)
}

// recoverCorrupt turns a panic of bbolt on a damaged file into ErrCorrupt.
func recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: backend: %v", ErrCorrupt, r)
	}
}

// Close closes the file. It waits for the reads still open on it (a pinned state's); reads after
// it find no values.
//
// A writable file gets its freelist written first. Commits leave it out (NoFreelistSync: it
// grows with the free pages, and would be written by every commit), so an open after a crash
// rebuilds it by reading every page of the file, which at a million keys was a third of a
// restart; after a Close the open reads it from its page instead.
func (b *Backend) Close() error {
	var err error
	if !b.db.IsReadOnly() {
		err = b.db.Update(func(*bolt.Tx) error {
			b.db.NoFreelistSync = false // read by this commit, under bbolt's writer lock
			return nil
		})
	}
	return errors.Join(err, b.close())
}

func (b *Backend) close() error {
	b.closed.Store(true)
	b.retireView()
	return b.db.Close()
}

// Discard closes the file and removes it: a backend no state will use.
func (b *Backend) Discard() error {
	err := b.close()
	if rmErr := os.Remove(b.path); err == nil && !errors.Is(rmErr, fs.ErrNotExist) {
		err = rmErr
	}
	return err
}

// A readView is a read transaction on the backend shared by every read that starts while it is
// the newest: bbolt's Begin takes a lock of the whole file, which 16 readers of one value each
// contend on more than on the read itself (etcd shares its read transaction the same way). A
// commit replaces the view with one that holds it (renewView) before its versions leave
// memory, so a reader whose state lacks a value in memory finds it in the view it acquires.
// The transaction ends when the view is replaced and its last reader is done.
type readView struct {
	tx    *bolt.Tx
	revs  *bolt.Bucket // a read-only transaction's buckets are safe to read concurrently
	refs  atomic.Int64 // readers, +1 while it is the backend's view; never rises from 0
	pages pageReader   // finds revs entries, if paged
	paged bool
	// compactRev is the compaction revision the file is at: the versions a compaction applied
	// after a clone may have left the view (see State.ascendRevs).
	compactRev int64
	// cursors holds *viewCursor on revs for reuse where pages cannot: Bucket.Get makes a cursor
	// per lookup, which costs several allocations and an atomic add to a counter every reader of
	// the view shares.
	cursors sync.Pool
}

// A viewCursor is a cursor on a view's revs, with the buffer for the key it seeks.
type viewCursor struct {
	c   *bolt.Cursor
	key [16]byte
}

func newReadView(db *bolt.DB) (*readView, error) {
	tx, err := db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	v := &readView{tx: tx, revs: tx.Bucket(bucketRevs)}
	if v.revs != nil {
		v.pages, v.paged = newPageReader(tx, v.revs)
	}
	if meta := tx.Bucket(bucketMeta); meta != nil {
		if e := meta.Get(metaCompact); e != nil {
			c, err := unseal(bucketMeta, metaCompact, e)
			if err != nil {
				v.compactRev = math.MaxInt64 // no version can be vouched for: readers go elsewhere
			} else {
				v.compactRev, _ = binary.Varint(c)
			}
		}
	}
	v.refs.Store(1)
	return v, nil
}

// acquire returns the backend's view for one read; release it when done. Without a shared view
// (a commit that may remap the file is under way, or the backend is closed) the read gets a
// transaction of its own.
func (b *Backend) acquire() (*readView, error) {
	for {
		v := b.view.Load()
		if v == nil {
			return newReadView(b.db)
		}
		if n := v.refs.Load(); n > 0 && v.refs.CompareAndSwap(n, n+1) {
			return v, nil
		}
		// Replaced and released meanwhile: the backend holds a newer one.
	}
}

// value returns the value of the version at pos as the view's file holds it, false if the file
// has no such version. The bytes are the file's: valid only until the view is released.
func (v *readView) value(pos revPos) ([]byte, bool) {
	e, ok := v.entry(pos)
	if !ok {
		return nil, false
	}
	return storedValue(e)
}

// entry returns the revs entry of the version at pos (checksum included), false if the file has
// no such version. The bytes are the file's: valid only until the view is released.
func (v *readView) entry(pos revPos) ([]byte, bool) {
	if v.revs == nil {
		return nil, false // not a backend: OpenBackendReadOnly of another bbolt file
	}
	if v.paged {
		var k [16]byte
		if e, found, ok := v.pages.get(putRevKey(k[:], pos)); ok {
			return e, found
		}
	}
	c, _ := v.cursors.Get().(*viewCursor)
	if c == nil {
		c = &viewCursor{c: v.revs.Cursor()}
	}
	k, e := c.c.Seek(putRevKey(c.key[:], pos))
	found := bytes.Equal(k, c.key[:])
	v.cursors.Put(c)
	return e, found
}

// storedValue returns the value a revs entry e holds (encodeRecord, then the checksum), without
// decoding the rest: a read needs nothing else from it. The checksum is not checked here: Load
// checks every entry's.
func storedValue(e []byte) ([]byte, bool) {
	_, value, tombstone, ok := entryParts(e)
	return value, ok && !tombstone
}

// entryParts returns the key and the value of a revs entry e, as storedValue reads them; false
// if e is malformed.
func entryParts(e []byte) (key, value []byte, tombstone, ok bool) {
	if len(e) < 4 {
		return nil, nil, false, false
	}
	e = e[:len(e)-4]
	for range 3 { // create, version, lease
		_, n := binary.Varint(e)
		if n <= 0 {
			return nil, nil, false, false
		}
		e = e[n:]
	}
	if len(e) == 0 || e[0] > 1 {
		return nil, nil, false, false
	}
	tombstone, e = e[0] == 1, e[1:]
	n, m := binary.Uvarint(e)
	if m <= 0 || n > uint64(len(e)-m) {
		return nil, nil, false, false
	}
	key, e = e[m:m+int(n)], e[m+int(n):]
	n, m = binary.Uvarint(e) // value: the rest
	if m <= 0 || n != uint64(len(e)-m) {
		return nil, nil, false, false
	}
	return key, e[m:], tombstone, true
}

func (v *readView) release() {
	if v.refs.Add(-1) == 0 {
		v.tx.Rollback()
	}
}

// renewView makes a view of the backend as it is now the one reads share, after a commit.
func (b *Backend) renewView() {
	v, err := newReadView(b.db)
	if err != nil {
		v = nil // closed: reads get transactions of their own, which fail alike
	} else {
		b.size.Store(v.tx.Size())
	}
	if old := b.view.Swap(v); old != nil {
		old.release()
	}
	if b.closed.Load() {
		b.retireView()
	}
}

// retireView stops reads from sharing the current view; it ends with its last reader.
func (b *Backend) retireView() {
	if old := b.view.Swap(nil); old != nil {
		old.release()
	}
}

// mayRemap reports whether a commit that adds up to grow bytes could outgrow the file's mapping.
// bbolt then remaps, which waits for every read transaction to end, and the shared view would
// end only after the commit: such a commit retires the view first.
func (b *Backend) mayRemap(grow int64) bool {
	return b.size.Load()+grow >= b.mapped
}

// Path is the file's path.
func (b *Backend) Path() string { return b.path }

// Rename moves the file to path, atomically replacing any file there (whose open handles keep
// reading the old one), and syncs the directory.
func (b *Backend) Rename(path string) error {
	if err := os.Rename(b.path, path); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	b.path = path
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	return nil
}

// Size is the file's size in bytes, free pages included.
func (b *Backend) Size() int64 {
	var n int64
	b.db.View(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n
}

// Backend is st's backend, nil if st is held in memory only.
func (st *State) Backend() *Backend { return st.backend }

func seal(bucket, key, val []byte) []byte {
	return binary.BigEndian.AppendUint32(val, sealSum(bucket, key, val))
}

// sealSum is the checksum seal appends: CRC-32C of bucket, key and val, chained by hand (a
// hash.Hash32 would be one more allocation per value written).
func sealSum(bucket, key, val []byte) uint32 {
	return crc32.Update(crc32.Update(crc32.Update(0, castagnoli, bucket), castagnoli, key), castagnoli, val)
}

func unseal(bucket, key, v []byte) ([]byte, error) {
	if len(v) < 4 {
		return nil, fmt.Errorf("%w: backend %s %x: %d bytes", ErrCorrupt, bucket, key, len(v))
	}
	val := v[:len(v)-4]
	if sealSum(bucket, key, val) != binary.BigEndian.Uint32(v[len(v)-4:]) {
		return nil, fmt.Errorf("%w: backend %s %x: checksum mismatch", ErrCorrupt, bucket, key)
	}
	return val, nil
}

func revKey(pos revPos) []byte { return putRevKey(make([]byte, 16), pos) }

// putRevKey writes pos's revs key into k, 16 bytes, and returns it.
func putRevKey(k []byte, pos revPos) []byte {
	binary.BigEndian.PutUint64(k, uint64(pos.mod))
	binary.BigEndian.PutUint64(k[8:], uint64(pos.sub))
	return k
}

func encodeRecord(r *Record, value string) []byte { return appendRecord(nil, r, value) }

// appendRecord appends r's revs entry (without its checksum) to b.
func appendRecord(b []byte, r *Record, value string) []byte {
	e := wire.Encoder{B: b}
	e.Varint(r.Create)
	e.Varint(r.Version)
	e.Varint(r.Lease)
	e.Bool(r.Tombstone())
	e.String(r.Key)
	e.String(value)
	return e.B
}

// decodeRecord decodes a revs entry (checksum removed) of revision k. The value is left in v
// (no copy): a restart reads every version, and most values are only in the file.
func decodeRecord(k, v []byte) (*Record, []byte, error) {
	if len(k) != 16 {
		return nil, nil, fmt.Errorf("%w: backend revision key of %d bytes", ErrCorrupt, len(k))
	}
	d := wire.NewDecoder(v)
	r := &Record{Mod: int64(binary.BigEndian.Uint64(k)), Create: d.Varint(), Version: d.Varint(), Lease: d.Varint()}
	tombstone := d.Bool()
	r.Key = d.String()
	value := d.View()
	sub := binary.BigEndian.Uint64(k[8:])
	if err := d.Finish(); err != nil {
		return nil, nil, fmt.Errorf("%w: backend record %d.%d: %v", ErrCorrupt, r.Mod, sub, err)
	}
	if err := setSub(r, int64(min(sub, math.MaxInt64))); err != nil {
		return nil, nil, err
	}
	if err := checkTombstone(r, tombstone); err != nil {
		return nil, nil, err
	}
	return r, value, nil
}

// pendingRecord is a version written since the last Commit, with its value: stored values are
// read from here until they are in the file.
type pendingRecord struct {
	pos   revPos
	rec   *Record
	value string
}

// dirtyTables is what changed outside the versions since the last Commit. Only the Applier's own
// state has it.
type dirtyTables struct {
	deletes  []revPos                       // versions compaction dropped
	leases   map[int64]*Lease               // nil: revoked
	dedup    map[wire.RequestID]*DedupEntry // nil: forgotten
	alarms   bool
	auth     bool
	counters bool // the compaction revision moved (the revision moves with versions)
}

func newDirty() *dirtyTables {
	return &dirtyTables{leases: map[int64]*Lease{}, dedup: map[wire.RequestID]*DedupEntry{}}
}

func (st *State) markLease(id int64, l *Lease) {
	if st.dirty != nil {
		st.dirty.leases[id] = l
	}
}

func (st *State) markDedup(id wire.RequestID, e *DedupEntry) {
	if st.dirty != nil {
		st.dirty.dedup[id] = e
	}
}

func (st *State) markAlarms() {
	if st.dirty != nil {
		st.dirty.alarms = true
	}
}

func (st *State) markDeleted(p revPos) {
	if st.dirty != nil {
		st.dirty.deletes = append(st.dirty.deletes, p)
	}
}

// storeValue records a new version r with its value: the value in r if it is small or st has
// no backend, and the version as a pending write to the backend.
func (st *State) storeValue(r *Record, value string) {
	if st.backend == nil || len(value) <= st.backend.inlineMax {
		r.setValue(value)
	} else {
		r.setStored(len(value))
	}
	if st.backend != nil {
		// Changes come in revision order, so pending stays sorted for valueInMemory's search
		// (a restore sorts before it commits).
		st.pending = append(st.pending, pendingRecord{pos: revPos{r.Mod, r.Sub}, rec: r, value: value})
	}
}

// Uncommitted is the number of versions written or removed since the last batch was taken:
// what the next one writes, and so how long it takes.
func (st *State) Uncommitted() int {
	n := len(st.pending)
	if st.dirty != nil {
		n += len(st.dirty.deletes)
	}
	return n
}

// Unwritten is the number of versions held in memory until a batch writes them: those since the
// last batch, and those of a batch being written or that failed.
func (st *State) Unwritten() int {
	n := len(st.pending) + len(st.committing)
	if st.retry != nil {
		n += len(st.retry.records)
	}
	return n
}

// A Batch is what changed in a state since the previous batch, taken (TakeBatch) under the
// owner's lock and written (Write) outside it, so that a commit's disk work delays no apply and
// no read. Its versions stay readable from memory until the owner hands it back (BatchDone).
type Batch struct {
	backend         *Backend
	records         []pendingRecord
	dirty           *dirtyTables
	applied         uint64
	rev, compactRev int64
	removed         bool // the state had removed all that compactRev drops: the file will hold it
	alarms          []Alarm
	auth            *Auth
}

// TakeBatch takes what changed since the last batch (and a failed batch's changes, which come
// first) into a batch at applied, the raft index st is at. st must have a backend. Batches are
// written one at a time, in the order they were taken.
func (st *State) TakeBatch(applied uint64) *Batch {
	b := &Batch{backend: st.backend, records: st.pending, dirty: st.dirty, applied: applied,
		rev: st.rev, compactRev: st.compactRev, removed: !st.compactPending, alarms: st.alarms, auth: st.auth}
	if r := st.retry; r != nil {
		b.records = append(r.records[:len(r.records):len(r.records)], b.records...)
		b.dirty = r.dirty.merge(b.dirty)
	}
	st.committing = b.records
	// New slices, not truncated ones: a clone may share the old backing arrays.
	st.pending, st.dirty, st.retry = nil, newDirty(), nil
	return b
}

// BatchDone hands back a batch st took once Write returned err: its versions leave memory, or,
// on failure, stay there for the next batch to write again.
func (st *State) BatchDone(b *Batch, err error) {
	if err != nil {
		st.retry = b
		return
	}
	st.committing = nil
}

// merge is d followed by later: later's changes win.
func (d *dirtyTables) merge(later *dirtyTables) *dirtyTables {
	d.deletes = append(d.deletes[:len(d.deletes):len(d.deletes)], later.deletes...)
	for id, l := range later.leases {
		d.leases[id] = l
	}
	for id, e := range later.dedup {
		d.dedup[id] = e
	}
	d.alarms = d.alarms || later.alarms
	d.auth = d.auth || later.auth
	d.counters = d.counters || later.counters
	return d
}

// Commit takes a batch and writes it: for a state its owner writes under its lock (a restore, a
// copy, tests). On failure the changes stay in memory and the next commit retries them; the file
// keeps the state of the last successful one.
func (st *State) Commit(applied uint64) error {
	if st.backend == nil {
		return nil
	}
	b := st.TakeBatch(applied)
	err := b.Write()
	st.BatchDone(b, err)
	return err
}

// Write writes the batch, the revision counters and the applied index to its backend in one
// transaction, synced to disk.
func (b *Batch) Write() error {
	if b.backend.mayRemap(b.growth()) {
		b.backend.retireView()
	}
	err := b.backend.db.Update(func(tx *bolt.Tx) error {
		revs := tx.Bucket(bucketRevs)
		revs.FillPercent = 0.95 // keys only grow: pages need little room for inserts
		// bbolt copies keys, so one buffer serves them all; it keeps the values until the
		// commit, so they are encoded into one buffer sized for all of them.
		k := make([]byte, 16)
		vals := make([]byte, 0, b.recordBytes())
		for _, p := range b.records {
			putRevKey(k, p.pos)
			start := len(vals)
			vals = appendRecord(vals, p.rec, p.value)
			vals = binary.BigEndian.AppendUint32(vals, sealSum(bucketRevs, k, vals[start:]))
			if err := revs.Put(k, vals[start:len(vals):len(vals)]); err != nil {
				return err
			}
		}
		// bbolt keeps a leaf's entries in one slice until the commit splits it, so an insert or
		// a removal in its middle moves the rest: deletes go from the last key down, and puts in
		// key order, each then at the end of what is left.
		for _, pos := range slices.Backward(slices.SortedFunc(slices.Values(b.dirty.deletes), revPos.compare)) {
			if err := revs.Delete(revKey(pos)); err != nil {
				return err
			}
		}
		leases := tx.Bucket(bucketLeases)
		for _, id := range slices.Sorted(maps.Keys(b.dirty.leases)) {
			l := b.dirty.leases[id]
			k := binary.BigEndian.AppendUint64(nil, uint64(id))
			if l == nil {
				if err := leases.Delete(k); err != nil {
					return err
				}
				continue
			}
			e := wire.Encoder{}
			e.Varint(l.TTL)
			e.Varint(l.RemainingMs)
			if err := leases.Put(k, seal(bucketLeases, k, e.B)); err != nil {
				return err
			}
		}
		if err := writeDedup(tx.Bucket(bucketDedup), b.dirty.dedup); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		put := func(k, v []byte) error { return meta.Put(k, seal(bucketMeta, k, v)) }
		if b.dirty.alarms {
			e := wire.Encoder{}
			e.Uvarint(uint64(len(b.alarms)))
			for _, a := range b.alarms {
				e.String(a.Member)
				e.Byte(a.Type)
			}
			if err := put(metaAlarms, e.B); err != nil {
				return err
			}
		}
		if b.dirty.auth && b.auth != nil {
			if err := put(metaAuth, encodeAuth(b.auth)); err != nil {
				return err
			}
		}
		if err := put(metaApplied, binary.AppendUvarint(nil, b.applied)); err != nil {
			return err
		}
		if err := put(metaRev, binary.AppendVarint(nil, b.rev)); err != nil {
			return err
		}
		if b.removed {
			// The batch holds the removal's last deletes, or they are in the file already.
			if err := put(metaRemoved, binary.AppendVarint(nil, b.compactRev)); err != nil {
				return err
			}
		}
		return put(metaCompact, binary.AppendVarint(nil, b.compactRev))
	})
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	b.backend.renewView()
	return nil
}

// recordBytes bounds the encoded size of the batch's revs entries: their keys and values, and
// three varints, two length prefixes, a bool and a checksum each.
func (b *Batch) recordBytes() int {
	n := 0
	for _, p := range b.records {
		n += len(p.rec.Key) + len(p.value) + 5*binary.MaxVarintLen64 + 1 + 4
	}
	return n
}

// growth bounds the bytes a batch can add to the file: its records, and a page for every other
// change (a removal or a table entry may dirty a page of its own), twice over for the branch
// pages above them and the pages bbolt frees only after the commit.
func (b *Batch) growth() int64 {
	page := int64(b.backend.db.Info().PageSize)
	n := int64(len(b.dirty.deletes)+len(b.dirty.leases)+len(b.dirty.dedup)+16) * page
	for _, p := range b.records {
		n += int64(len(p.rec.Key)+len(p.value)) + page/8
	}
	return 2 * n
}

// valueOf returns r's value, and false if r's value is in the backend and no longer there: a
// compaction applied after st was cloned has removed it. That can happen only to a read at a
// revision below the compaction revision the live state has now (r was superseded at or before
// it), so callers answer ErrCompacted, or read again from a newer view if they asked for the
// latest revision. The Applier's own state and a pinned clone never miss.
func (st *State) valueOf(r *Record) (string, bool) {
	if v, ok, inMemory := st.valueInMemory(r); inMemory {
		return v, ok
	}
	if st.view != nil {
		return valueIn(st.view, r)
	}
	v, err := st.backend.acquire()
	if err != nil {
		return "", false // closed: a restored snapshot replaced the file, or the member closed
	}
	defer v.release()
	return valueIn(v, r)
}

// valueInMemory returns r's value if it is not only in the backend (inMemory): in r, or pending.
func (st *State) valueInMemory(r *Record) (value string, ok, inMemory bool) {
	if !r.stored() {
		return r.inlineValue(), true, true
	}
	pos := revPos{r.Mod, r.Sub}
	for _, recs := range [2][]pendingRecord{st.pending, st.committing} {
		if i := sort.Search(len(recs), func(i int) bool { return !recs[i].pos.less(pos) }); i < len(recs) && recs[i].pos == pos {
			return recs[i].value, true, true
		}
	}
	return "", false, false
}

func valueIn(view *readView, r *Record) (string, bool) {
	v, ok := view.value(revPos{r.Mod, r.Sub})
	return string(v), ok // copies: v lives only as long as the view
}

// A ValueReader reads the values of a state's records for one read, into the caller's buffer:
// a value read from the backend is copied once, from the file's page. The backend's view is
// acquired at the first value only found there and held until Close, so a range's values cost
// one acquisition, not one per value.
type ValueReader struct {
	st   *State
	view *readView
	own  bool // view was acquired here: Close releases it
}

// Values returns a reader of st's values; Close it when done.
func (st *State) Values() ValueReader { return ValueReader{st: st} }

// Append appends r's value to dst. False means what Value's false means: r's value was compacted
// after st was cloned.
func (vr *ValueReader) Append(dst []byte, r *Record) ([]byte, bool) {
	if v, ok, inMemory := vr.st.valueInMemory(r); inMemory {
		return append(dst, v...), ok
	}
	if vr.view == nil {
		if vr.view = vr.st.view; vr.view == nil {
			v, err := vr.st.backend.acquire()
			if err != nil {
				return dst, false // closed: a restored snapshot replaced the file, or the member closed
			}
			vr.view, vr.own = v, true
		}
	}
	v, ok := vr.view.value(revPos{r.Mod, r.Sub})
	return append(dst, v...), ok
}

// Close releases what the reader holds.
func (vr *ValueReader) Close() {
	if vr.own {
		vr.view.release()
	}
	vr.view, vr.own = nil, false
}

// Value returns r's value as valueOf does: false means r's value was compacted after st was
// cloned (see valueOf).
func (st *State) Value(r *Record) (string, bool) { return st.valueOf(r) }

func (p revPos) less(q revPos) bool { return p.mod < q.mod || p.mod == q.mod && p.sub < q.sub }

func (p revPos) compare(q revPos) int {
	if c := cmp.Compare(p.mod, q.mod); c != 0 {
		return c
	}
	return cmp.Compare(p.sub, q.sub)
}

// writeDedup appends a batch's changes to the dedup table (nil: forgotten) to the dedup2
// bucket, after deleting the values at its front that hold only forgotten entries.
func writeDedup(bk *bolt.Bucket, changes map[wire.RequestID]*DedupEntry) error {
	if len(changes) == 0 {
		return nil
	}
	kept := make([]*DedupEntry, 0, len(changes))
	var forgot []wire.RequestID
	var newest uint64
	for id, e := range changes {
		if e == nil {
			forgot = append(forgot, id)
			continue
		}
		kept = append(kept, e)
		newest = max(newest, e.Index)
	}
	c := bk.Cursor()
	for k, v := c.First(); k != nil && newest > DedupWindow; k, v = c.First() {
		v, err := unseal(bucketDedup, k, v)
		if err != nil {
			return err
		}
		if n, _ := binary.Uvarint(v); n+DedupWindow >= newest {
			break
		}
		if err := bk.Delete(k); err != nil {
			return err
		}
	}
	seq := uint64(1)
	if k, _ := c.Last(); len(k) == 8 {
		seq = binary.BigEndian.Uint64(k) + 1
	}
	for len(kept)+len(forgot) > 0 {
		n := min(len(kept), dedupValueItems)
		entries := kept[:n]
		kept = kept[n:]
		m := min(len(forgot), dedupValueItems-n)
		gone := forgot[:m]
		forgot = forgot[m:]
		var top uint64
		size := 0
		for _, e := range entries {
			top = max(top, e.Index)
			size += 3*binary.MaxVarintLen64 + binary.MaxVarintLen32 + len(e.Result)
		}
		e := wire.Encoder{B: make([]byte, 0, size+len(gone)*2*binary.MaxVarintLen64+3*binary.MaxVarintLen64+4)}
		e.Uvarint(top)
		e.Uvarint(uint64(len(entries)))
		for _, d := range entries {
			e.Uvarint(d.ID.Client)
			e.Uvarint(d.ID.Seq)
			e.Uvarint(d.Index)
			e.Bytes(d.Result)
		}
		e.Uvarint(uint64(len(gone)))
		for _, id := range gone {
			e.Uvarint(id.Client)
			e.Uvarint(id.Seq)
		}
		k := binary.BigEndian.AppendUint64(nil, seq)
		seq++
		if err := bk.Put(k, seal(bucketDedup, k, e.B)); err != nil {
			return err
		}
	}
	return nil
}

// readDedup decodes a dedup2 value (checksum removed), calling set for every entry and forget
// for every forgotten request, in that order.
func readDedup(v []byte, set func(*DedupEntry), forget func(wire.RequestID)) error {
	d := wire.NewDecoder(v)
	top := d.Uvarint()
	var newest uint64
	n := d.Len(d.Remaining() / 4) // an entry takes at least 4 bytes
	for i := 0; i < n && d.Err() == nil; i++ {
		e := &DedupEntry{ID: wire.RequestID{Client: d.Uvarint(), Seq: d.Uvarint()}, Index: d.Uvarint(), Result: d.Bytes()}
		if d.Err() != nil {
			break
		}
		if _, err := wire.UnmarshalResult(e.Result); err != nil {
			return fmt.Errorf("%w: backend dedup result: %v", ErrCorrupt, err)
		}
		newest = max(newest, e.Index)
		set(e)
	}
	n = d.Len(d.Remaining() / 2)
	for i := 0; i < n && d.Err() == nil; i++ {
		id := wire.RequestID{Client: d.Uvarint(), Seq: d.Uvarint()}
		if d.Err() == nil {
			forget(id)
		}
	}
	if err := d.Finish(); err != nil || newest != top {
		return fmt.Errorf("%w: backend dedup value: newest index %d, recorded %d, %v", ErrCorrupt, newest, top, err)
	}
	return nil
}

// readDedupV1 calls set for every entry of a format 1 dedup bucket.
func readDedupV1(bk *bolt.Bucket, set func(*DedupEntry)) error {
	return bk.ForEach(func(k, v []byte) error {
		v, err := unseal(bucketDedupV1, k, v)
		if err != nil {
			return err
		}
		d := wire.NewDecoder(v)
		e := &DedupEntry{Index: d.Uvarint(), Result: d.Bytes()}
		if err := d.Finish(); err != nil || len(k) != 16 {
			return fmt.Errorf("%w: backend dedup entry %x", ErrCorrupt, k)
		}
		if _, err := wire.UnmarshalResult(e.Result); err != nil {
			return fmt.Errorf("%w: backend dedup result: %v", ErrCorrupt, err)
		}
		e.ID = wire.RequestID{Client: binary.BigEndian.Uint64(k), Seq: binary.BigEndian.Uint64(k[8:])}
		set(e)
		return nil
	})
}

// migrateDedupV1 turns a format 1 backend into a format 2 one: its dedup entries, one per key,
// move into one dedup2 value (or a few).
func migrateDedupV1(tx *bolt.Tx) error {
	changes := map[wire.RequestID]*DedupEntry{}
	if old := tx.Bucket(bucketDedupV1); old != nil {
		if err := readDedupV1(old, func(e *DedupEntry) { changes[e.ID] = e }); err != nil {
			return err
		}
		if err := tx.DeleteBucket(bucketDedupV1); err != nil {
			return err
		}
	}
	if err := writeDedup(tx.Bucket(bucketDedup), changes); err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(metaFormat, seal(bucketMeta, metaFormat, binary.AppendUvarint(nil, backendFormat)))
}

// Pin returns a clone of st that reads its values through one view of the backend, so that
// compaction steps that run meanwhile remove nothing from under it: backups and HashKV, which
// must read every value of the state they copy, read one. Take it as Clone (under the owner's
// lock) and Unpin it when done; a pinned clone holds the file's freed pages until then.
func (st *State) Pin() (*State, error) {
	c := st.Clone()
	if st.backend != nil {
		v, err := st.backend.acquire()
		if err != nil {
			return nil, err
		}
		c.view = v
	}
	return c, nil
}

// Unpin ends a pinned clone's hold on its view; the clone must not be read after.
func (st *State) Unpin() {
	if st.view != nil {
		st.view.release()
		st.view = nil
	}
}

// errValueMissing reports a stored value not found where it must be: in the Applier's own state
// or a pinned clone, the backend lost it.
func errValueMissing(r *Record) error {
	return fmt.Errorf("%w: value of %s (revision %d.%d) missing from the backend", ErrCorrupt, recordName(r), r.Mod, r.Sub)
}

// Load rebuilds the state a backend holds, and returns the raft index it is at (0 for an empty
// backend). Every entry's checksum and every version's place in history are checked: a damaged
// backend fails with ErrCorrupt. A compaction whose removal may have been under way is resumed
// (CompactPending).
func Load(b *Backend) (st *State, applied uint64, err error) {
	defer recoverCorrupt(&err)
	b.renewView() // the file as it is now, whoever wrote it
	st = NewOnDisk(b)
	var removed int64 // the compaction revision whose removal the file holds complete
	stopPrefetch := prefetch(b.path)
	err = b.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		getMeta := func(k []byte) ([]byte, error) {
			v := meta.Get(k)
			if v == nil {
				return nil, nil
			}
			return unseal(bucketMeta, k, v)
		}
		if v, err := getMeta(metaApplied); err != nil {
			return err
		} else if v != nil {
			applied, _ = binary.Uvarint(v)
		}
		for _, m := range []struct {
			k []byte
			p *int64
		}{{metaRev, &st.rev}, {metaCompact, &st.compactRev}} {
			v, err := getMeta(m.k)
			if err != nil {
				return err
			}
			if v != nil {
				*m.p, _ = binary.Varint(v)
			}
		}
		if v, err := getMeta(metaRemoved); err != nil {
			return err
		} else if v != nil {
			removed, _ = binary.Varint(v)
		}
		if st.rev < 1 || st.compactRev < 0 || st.compactRev > st.rev || removed < 0 || removed > st.compactRev {
			return fmt.Errorf("%w: backend revision %d, compact revision %d, removed through %d", ErrCorrupt, st.rev, st.compactRev, removed)
		}
		if v, err := getMeta(metaAlarms); err != nil {
			return err
		} else if v != nil {
			d := wire.NewDecoder(v)
			n := d.Len(len(v))
			for i := 0; i < n && d.Err() == nil; i++ {
				a := Alarm{Member: d.String(), Type: d.Byte()}
				if d.Err() == nil {
					st.alarms = append(st.alarms, a)
				}
			}
			if err := d.Finish(); err != nil {
				return fmt.Errorf("%w: backend alarms: %v", ErrCorrupt, err)
			}
		}
		if v, err := getMeta(metaAuth); err != nil {
			return err
		} else if v != nil {
			d := wire.NewDecoder(v)
			if err := readAuth(st, d); err != nil {
				return err
			}
			if err := d.Finish(); err != nil {
				return fmt.Errorf("%w: backend auth: %v", ErrCorrupt, err)
			}
		}
		if err := loadVersions(tx, st, b.inlineMax); err != nil {
			return err
		}
		if err := tx.Bucket(bucketLeases).ForEach(func(k, v []byte) error {
			v, err := unseal(bucketLeases, k, v)
			if err != nil {
				return err
			}
			d := wire.NewDecoder(v)
			l := &Lease{ID: int64(binary.BigEndian.Uint64(k)), TTL: d.Varint(), RemainingMs: d.Varint()}
			if err := d.Finish(); err != nil || len(k) != 8 || l.ID == 0 {
				return fmt.Errorf("%w: backend lease %x", ErrCorrupt, k)
			}
			st.leases.Set(l)
			return nil
		}); err != nil {
			return err
		}
		if v1 := tx.Bucket(bucketDedupV1); v1 != nil {
			// A format 1 file opened read-only (OpenBackendReadOnly), so not migrated.
			return readDedupV1(v1, func(e *DedupEntry) { st.dedup.Set(e) })
		}
		return tx.Bucket(bucketDedup).ForEach(func(k, v []byte) error {
			v, err := unseal(bucketDedup, k, v)
			if err != nil {
				return err
			}
			if len(k) != 8 {
				return fmt.Errorf("%w: backend dedup key %x", ErrCorrupt, k)
			}
			return readDedup(v, func(e *DedupEntry) { st.dedup.Set(e) },
				func(id wire.RequestID) { st.dedup.Delete(&DedupEntry{ID: id}) })
		})
	})
	stopPrefetch()
	if err != nil {
		return nil, 0, err
	}
	if err := deriveIndexes(st); err != nil {
		return nil, 0, err
	}
	// The removal of a compaction the file does not hold complete may have been under way, or
	// its deletes not yet committed: resume it, as Compact starts one, from the first key; it
	// removes only what the compaction revision makes obsolete.
	st.compactPending, st.compactFrom = st.compactRev > removed, ""
	return st, applied, nil
}

// loadVersions reads every version in tx into st's key index. One goroutine reads and
// decodes the file (its page faults, checksums and allocations) while this one inserts into the
// trees, each about half of a restart's work.
func loadVersions(tx *bolt.Tx, st *State, inlineMax int) error {
	const batchLen = 1024
	batches := make(chan []*Record, 4) // drained to the end: the reader never blocks for good
	var readErr error
	go func() {
		defer close(batches)
		defer recoverCorrupt(&readErr)
		batch := make([]*Record, 0, batchLen)
		readErr = tx.Bucket(bucketRevs).ForEach(func(k, v []byte) error {
			v, err := unseal(bucketRevs, k, v)
			if err != nil {
				return err
			}
			r, value, err := decodeRecord(k, v)
			if err != nil {
				return err
			}
			if err := checkRecord(r, nil, st.rev); err != nil {
				return err
			}
			if r.Tombstone() && len(value) > 0 {
				return fmt.Errorf("%w: backend tombstone %s with a value", ErrCorrupt, recordName(r))
			}
			if len(value) <= inlineMax {
				r.setValue(string(value))
			} else {
				r.setStored(len(value))
			}
			if batch = append(batch, r); len(batch) == batchLen {
				batches <- batch
				batch = make([]*Record, 0, batchLen)
			}
			return nil
		})
		if readErr == nil && len(batch) > 0 {
			batches <- batch
		}
	}()
	for batch := range batches {
		for _, r := range batch {
			// In revision order, each version is its key's newest so far. Nothing else holds
			// the records yet, so the one it replaces lends it its key's bytes and its slice.
			if prior, ok := st.keys.ReplaceOrInsert(r); ok {
				r.Key = prior.Key
				r.setOlder(append(prior.older(), refOf(prior)))
			}
			st.size += r.Size()
		}
	}
	return readErr
}

// Magic of a backend stream (StreamBackend): the backend file as bbolt writes it, framed.
//
//	magic "EMBERBK1", uint64 file length (big-endian), the file, uint32 CRC-32C of the file
const backendMagic = "EMBERBK1"

// StreamBackend returns the backend as one stream, for a member that installs it as a raft
// snapshot, and the stream's length. It reads a consistent copy (one read transaction) while
// writes go on; the transaction ends when the stream is read to its end or closed.
func (b *Backend) StreamBackend() (int64, io.ReadCloser, error) {
	tx, err := b.db.Begin(false)
	if err != nil {
		return 0, nil, fmt.Errorf("backend: %w", err)
	}
	size := tx.Size()
	pr, pw := io.Pipe()
	go func() {
		defer tx.Rollback()
		h := crc32.New(castagnoli)
		w := bufio.NewWriterSize(pw, 256<<10)
		head := append([]byte(backendMagic), binary.BigEndian.AppendUint64(nil, uint64(size))...)
		_, err := w.Write(head)
		if err == nil {
			_, err = tx.WriteTo(io.MultiWriter(w, h))
		}
		if err == nil {
			_, err = w.Write(binary.BigEndian.AppendUint32(nil, h.Sum32()))
		}
		if err == nil {
			err = w.Flush()
		}
		pw.CloseWithError(err)
	}()
	return int64(len(backendMagic)) + 8 + size + 4, pr, nil
}

// RestoreStream builds a backend at path (replacing any file there) from a raft snapshot, a
// backend stream or ember's snapshot format (a backup, or a raft snapshot of an earlier version),
// and loads it. It returns the state and the raft index it is at. On failure nothing is left at
// path.
func RestoreStream(r io.Reader, path string, inlineMax int) (st *State, applied uint64, err error) {
	br := bufio.NewReaderSize(r, 256<<10)
	magic, err := br.Peek(len(backendMagic))
	if err != nil {
		return nil, 0, errSnapshot("bad magic")
	}
	if string(magic) != backendMagic {
		b, err := CreateBackend(path, inlineMax)
		if err != nil {
			return nil, 0, err
		}
		st, applied, err = ReadSnapshotTo(br, b)
		if err == nil {
			err = st.Commit(applied)
		}
		if err != nil {
			b.Discard()
			return nil, 0, err
		}
		return st, applied, nil
	}
	if err := receiveBackend(br, path); err != nil {
		os.Remove(path)
		return nil, 0, err
	}
	b, err := OpenBackend(path, inlineMax)
	if err != nil {
		os.Remove(path)
		return nil, 0, err
	}
	if st, applied, err = Load(b); err != nil {
		b.Discard()
		return nil, 0, err
	}
	return st, applied, nil
}

// receiveBackend writes a backend stream's file to path, synced, after checking its checksum.
func receiveBackend(br *bufio.Reader, path string) error {
	head := make([]byte, len(backendMagic)+8)
	if _, err := io.ReadFull(br, head); err != nil {
		return errSnapshot("backend stream header: %v", err)
	}
	size := binary.BigEndian.Uint64(head[len(backendMagic):])
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	defer f.Close()
	h := crc32.New(castagnoli)
	if n, err := io.CopyN(io.MultiWriter(f, h), br, int64(size)); err != nil {
		return errSnapshot("backend stream: %d of %d bytes: %v", n, size, err)
	}
	var sum [4]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil || binary.BigEndian.Uint32(sum[:]) != h.Sum32() {
		return errSnapshot("backend stream checksum mismatch")
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return errSnapshot("data after the backend stream")
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	return f.Close()
}

// syncRestored commits the versions a restore holds so far, sorted by revision first (records
// arrive in key order) as Commit and valueInMemory expect.
func (st *State) syncRestored() error {
	if st.backend == nil {
		return nil
	}
	slices.SortFunc(st.pending, func(a, b pendingRecord) int {
		if a.pos.less(b.pos) {
			return -1
		}
		return 1
	})
	return st.Commit(0) // the final Commit records the index
}

// CopyTo writes st into dst for a defragmented copy of st's backend: the versions above
// revision after (all of them with 0) with their values, in revision order so that dst's pages
// fill up, in transactions of about restoreBatchBytes; then the leases, the dedup table, the
// alarms and the counters in full, at applied. st must be the Applier's own state or a pinned
// clone, so that every value is found.
func (st *State) CopyTo(dst *Backend, after int64, applied uint64) error {
	c := NewOnDisk(dst)
	c.rev, c.compactRev, c.alarms, c.auth = st.rev, st.compactRev, st.alarms, st.auth
	c.compactPending = st.compactPending // the copy holds what the removal has yet to remove
	var err error
	bytes := 0
	walkErr := st.ascendRevs(revPos{mod: after + 1}, func(r *Record) bool {
		v, ok := st.valueOf(r)
		if !ok {
			err = errValueMissing(r)
			return false
		}
		c.pending = append(c.pending, pendingRecord{pos: revPos{r.Mod, r.Sub}, rec: r, value: v})
		if bytes += len(r.Key) + len(v) + recordOverhead; bytes >= restoreBatchBytes {
			err, bytes = c.Commit(0), 0
		}
		return err == nil
	})
	if err == nil {
		err = walkErr
	}
	if err != nil {
		return err
	}
	err = dst.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketLeases, bucketDedup} {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	c.markTablesOf(st)
	return c.Commit(applied)
}

// markTablesOf marks every lease, dedup entry, the alarms and the auth state of src as changed
// in st, so that st's next commit writes them all: src's tables went into trees directly (a
// restore) or belong to another state (a copy).
func (st *State) markTablesOf(src *State) {
	src.leases.Scan(func(l *Lease) bool {
		st.markLease(l.ID, l)
		return true
	})
	src.dedup.Scan(func(e *DedupEntry) bool {
		st.markDedup(e.ID, e)
		return true
	})
	st.markAlarms()
	st.dirty.auth = true
}

// ReplaceBackend makes b the backend of st, the Applier's own state with nothing pending (just
// committed), and returns the one it replaces: b must hold all of st (CopyTo). Clones taken
// before keep reading the old one until it is closed.
func (st *State) ReplaceBackend(b *Backend) *Backend {
	old := st.backend
	st.backend = b
	return old
}

// Dirty reports whether st has changes its backend does not hold yet.
func (st *State) Dirty() bool {
	d := st.dirty
	return len(st.pending) > 0 || st.retry != nil || d != nil && (len(d.deletes) > 0 || len(d.leases) > 0 || len(d.dedup) > 0 || d.alarms || d.auth || d.counters)
}

// Detach makes st, restored through a temporary backend with every value inline, a state in
// memory only, whose revs tree holds every version's record, read from the backend; the caller
// discards the backend.
func (st *State) Detach() error {
	revs := newRevs()
	if err := st.ascendRevs(revPos{}, func(r *Record) bool {
		revs.Set(r)
		return true
	}); err != nil {
		return err
	}
	st.backend, st.dirty, st.pending, st.committing, st.retry = nil, nil, nil, nil, nil
	st.revs = revs
	return nil
}

// IsBackendStream reports whether br starts a backend stream (StreamBackend).
func IsBackendStream(br *bufio.Reader) bool {
	magic, _ := br.Peek(len(backendMagic))
	return string(magic) == backendMagic
}

// RestoreToMemory builds a state in memory only from a raft snapshot stream of either kind (a
// backend stream, or ember's snapshot format); a backend stream is read through a temporary
// file.
func RestoreToMemory(r io.Reader) (*State, uint64, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	if !IsBackendStream(br) {
		return ReadSnapshot(br)
	}
	tmp, err := os.CreateTemp("", "ember-restore-*.db")
	if err != nil {
		return nil, 0, fmt.Errorf("restore: %w", err)
	}
	tmp.Close()
	st, applied, err := RestoreStream(br, tmp.Name(), math.MaxInt)
	if err != nil {
		os.Remove(tmp.Name())
		return nil, 0, err
	}
	b := st.backend
	err = st.Detach()
	b.Discard()
	if err != nil {
		return nil, 0, err
	}
	return st, applied, nil
}
