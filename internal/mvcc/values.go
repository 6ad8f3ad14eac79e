package mvcc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// InlineValueMax is the largest value a State on disk keeps in memory with its record. A record
// already costs about recordOverhead bytes of heap besides its key, so a value up to that size at
// most doubles it; the locks, leader keys and small configuration values most hosts hold are of
// that size and are read without touching the file. Larger values (etcd's typical 1–4 KiB
// objects) live in the Values file and in the page cache, not on the Go heap.
const InlineValueMax = 128

// valuesMmapSize is the address space the values file is mapped with at first. bbolt must remap
// when the file outgrows its mapping, and a remap waits for every read transaction, including a
// raft snapshot being streamed; reserving address space (not memory) up front keeps a growing
// file from stalling writes behind a snapshot, as etcd's 10 GiB initial mapping does.
const valuesMmapSize = 10 << 30

var valuesBucket = []byte("values")

// Values is the file that holds the values of a State on disk, keyed by revision (main, sub: 16
// bytes, big-endian, so that the file is appended to in key order).
//
// The file is not the state's durable copy: the raft log and raft snapshots are. It is created
// empty when a member starts and filled by applying them, so it is written without fsync and a
// crash never leaves anything in it that matters. Any number of goroutines may read it; its
// writes come from the Applier's owner, serialized with applies (SyncValues).
type Values struct {
	db        *bolt.DB
	path      string
	inlineMax int // values up to this length stay in their records
}

// CreateValues creates an empty values file at path, replacing any file there, for the values
// longer than inlineMax (InlineValueMax; tests store every value with 0).
func CreateValues(path string, inlineMax int) (*Values, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("values file: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		NoSync:          true, // a cache of the log: see the type's comment
		NoGrowSync:      true,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: valuesMmapSize,
	})
	if err != nil {
		return nil, fmt.Errorf("values file: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket(valuesBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("values file: %w", err)
	}
	return &Values{db: db, path: path, inlineMax: inlineMax}, nil
}

// Close closes the file, and leaves it for CreateValues to replace at the member's next start:
// removing a large file can take long, and a member's Close should not. It waits for read
// transactions still open on it (a pinned state's); reads after it find no values.
func (v *Values) Close() error { return v.db.Close() }

// Discard closes the file and removes it: a file no state uses any more.
func (v *Values) Discard() error {
	err := v.db.Close()
	if rmErr := os.Remove(v.path); err == nil && !errors.Is(rmErr, fs.ErrNotExist) {
		err = rmErr
	}
	return err
}

// Size is the file's size in bytes, free pages included.
func (v *Values) Size() int64 {
	var n int64
	v.db.View(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n
}

// CopyValues writes the stored values of st's versions above revision after into dst, in
// revision order (so dst's pages fill up), in transactions of about restoreBatchBytes. st must
// be the Applier's own state or a pinned clone, so that every value is found.
func (st *State) CopyValues(dst *Values, after int64) error {
	var batch []pendingValue
	bytes := 0
	flush := func() error {
		err := dst.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(valuesBucket)
			b.FillPercent = 1 // appended in key order: full pages
			for _, p := range batch {
				if err := b.Put(valueKey(p.pos), []byte(p.value)); err != nil {
					return err
				}
			}
			return nil
		})
		batch, bytes = batch[:0], 0
		return err
	}
	var err error
	st.revs.Ascend(&Record{Mod: after + 1}, func(r *Record) bool {
		if !r.stored {
			return true
		}
		v, ok := st.valueOf(r)
		if !ok {
			err = errValueMissing(r)
			return false
		}
		batch = append(batch, pendingValue{pos: revPos{r.Mod, r.Sub}, value: v})
		if bytes += len(v); bytes >= restoreBatchBytes {
			err = flush()
		}
		return err == nil
	})
	if err == nil && len(batch) > 0 {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("values file: %w", err)
	}
	return nil
}

// ReplaceValues makes vals the file of st, the Applier's own state, and returns the one it
// replaces: every stored value of st must be in vals (CopyValues), and nothing pending.
// Clones taken before keep reading the old file until it is closed.
func (st *State) ReplaceValues(vals *Values) *Values {
	old := st.vals
	st.vals = vals
	return old
}

// Values is st's values file, nil if st holds every value in memory.
func (st *State) Values() *Values { return st.vals }

// Path is the file's path.
func (v *Values) Path() string { return v.path }

func valueKey(pos revPos) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, uint64(pos.mod))
	binary.BigEndian.PutUint64(k[8:], uint64(pos.sub))
	return k
}

// pendingValue is a stored value written since the last SyncValues: readable from memory until
// it is in the file.
type pendingValue struct {
	pos   revPos
	value string
}

// storeValue sets r's value: in the record if it is small or the state has no file, else as a
// pending write to the file.
func (st *State) storeValue(r *Record, value string) {
	if st.vals == nil || len(value) <= st.vals.inlineMax {
		r.Value = value
		return
	}
	r.stored, r.valueLen = true, int32(len(value))
	// Changes come in revision order, so pending stays sorted for valueOf's search.
	st.pending = append(st.pending, pendingValue{pos: revPos{r.Mod, r.Sub}, value: value})
}

// valueOf returns r's value, and false if r's value is stored and no longer in the file: a
// compaction applied after st was cloned has removed it. That can happen only to a read at a
// revision below the compaction revision the live state has now (r was superseded at or before
// it), so callers answer ErrCompacted, or read again from a newer view if they asked for the
// latest revision. The Applier's own state and a pinned clone never miss.
func (st *State) valueOf(r *Record) (string, bool) {
	if v, ok, inMemory := st.valueInMemory(r); inMemory {
		return v, ok
	}
	if st.tx != nil {
		return valueIn(st.tx, r)
	}
	var value string
	found := false
	if st.vals.db.View(func(tx *bolt.Tx) error {
		value, found = valueIn(tx, r)
		return nil
	}) != nil {
		return "", false // closed: a restored snapshot replaced the file, or the member closed
	}
	return value, found
}

// valueInMemory returns r's value if it is not in the file (inMemory): in r, or pending.
func (st *State) valueInMemory(r *Record) (value string, ok, inMemory bool) {
	if !r.stored {
		return r.Value, true, true
	}
	pos := revPos{r.Mod, r.Sub}
	if i := sort.Search(len(st.pending), func(i int) bool { return !st.pending[i].pos.less(pos) }); i < len(st.pending) && st.pending[i].pos == pos {
		return st.pending[i].value, true, true
	}
	return "", false, false
}

func valueIn(tx *bolt.Tx, r *Record) (string, bool) {
	b := tx.Bucket(valuesBucket).Get(valueKey(revPos{r.Mod, r.Sub}))
	if b == nil {
		return "", false
	}
	return string(b), true // b lives only as long as tx
}

// ValuesOf returns the values of recs as Value does, reading the file in one transaction: a
// range's page of values costs one, not one per value. False if any was compacted after st was
// cloned.
func (st *State) ValuesOf(recs []*Record) ([]string, bool) {
	out := make([]string, len(recs))
	var inFile []int
	for i, r := range recs {
		v, ok, inMemory := st.valueInMemory(r)
		if !inMemory {
			inFile = append(inFile, i)
			continue
		}
		if !ok {
			return nil, false
		}
		out[i] = v
	}
	if len(inFile) == 0 {
		return out, true
	}
	read := func(tx *bolt.Tx) bool {
		for _, i := range inFile {
			v, ok := valueIn(tx, recs[i])
			if !ok {
				return false
			}
			out[i] = v
		}
		return true
	}
	if st.tx != nil {
		return out, read(st.tx)
	}
	found := false
	if st.vals.db.View(func(tx *bolt.Tx) error {
		found = read(tx)
		return nil
	}) != nil {
		return nil, false
	}
	return out, found
}

// Value returns r's value as valueOf does: false means r's value was compacted after st was
// cloned (see valueOf).
func (st *State) Value(r *Record) (string, bool) { return st.valueOf(r) }

func (p revPos) less(q revPos) bool { return p.mod < q.mod || p.mod == q.mod && p.sub < q.sub }

// SyncValues writes the values stored since the last call to the file and removes those of the
// versions compaction steps have dropped, in one transaction. Its owner calls it at the end of
// every apply batch and compaction step, before any clone can be taken, so clones start with
// nothing pending. On failure (the disk is full or failing) the writes stay pending, readable
// from memory, and are retried by the next call; the state stays correct.
func (st *State) SyncValues() error {
	if len(st.pending) == 0 && len(st.doomedValues) == 0 {
		return nil
	}
	err := st.vals.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(valuesBucket)
		b.FillPercent = 0.95 // keys only grow: pages need little room for inserts
		for _, p := range st.pending {
			if err := b.Put(valueKey(p.pos), []byte(p.value)); err != nil {
				return err
			}
		}
		for _, pos := range st.doomedValues {
			if err := b.Delete(valueKey(pos)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("values file: %w", err)
	}
	// New slices, not truncated ones: a clone may share the old backing arrays.
	st.pending, st.doomedValues = nil, nil
	return nil
}

// Pin returns a clone of st that reads its values through one read transaction on the file, so
// that compaction steps that run meanwhile remove nothing from under it: raft snapshots and
// backups, which must write every value of the state they copy, read one. Take it as Clone
// (under the owner's lock) and Unpin it when done; a pinned clone holds the file's freed pages
// until then.
func (st *State) Pin() (*State, error) {
	c := st.Clone()
	if st.vals != nil {
		tx, err := st.vals.db.Begin(false)
		if err != nil {
			return nil, fmt.Errorf("values file: %w", err)
		}
		c.tx = tx
	}
	return c, nil
}

// Unpin ends a pinned clone's read transaction; the clone must not be read after.
func (st *State) Unpin() {
	if st.tx != nil {
		st.tx.Rollback()
		st.tx = nil
	}
}

// errValueMissing reports a stored value not found where it must be: in the Applier's own state
// or a pinned clone, the file lost it.
func errValueMissing(r *Record) error {
	return fmt.Errorf("%w: value of %s (revision %d.%d) missing from the values file", ErrCorrupt, recordName(r), r.Mod, r.Sub)
}
