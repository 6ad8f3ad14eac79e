package mvcc

import (
	"fmt"
	"sort"
	"unsafe"
)

// The key index: one record per key in the keys tree, its newest version (a tombstone until a
// compaction drops it), which lists the key's older versions as verRefs, oldest first. The records
// of older versions are not kept: with a backend they are read from the file, or from the
// versions not yet written, when a read at an old revision, a watch's catch-up or a snapshot
// needs them; without one, the revs tree holds every version's record. An older version so costs
// 16 bytes of heap, where a record and its tree entries cost about 100 (etcd's keyIndex keeps a
// revision per version for the same reason).
//
// Key "a" put at 2, put at 3, deleted at 5, put again at 7; then compacted at 5:
//
//	before:  keys: a@7 older [2, 3, 5t]
//	after:   keys: a@7 older [5t]      (2 and 3 superseded at or before 5; 5t stays: a watch
//	                                    from 5 must see the delete, see obsolete)
//
// A read at revision 4 takes the last older version at or before 4 (3) and reads its record; at
// 6 it finds the tombstone, so "a" is absent. Compaction drops a prefix of each key's versions,
// so a record losing older versions is replaced by a copy holding the rest of its slice.
//
// Records are shared with clones, so a key's record is never changed: a put makes a new record
// whose older slice is the old one's with the old version appended. The append may write into
// the old slice's spare capacity, past the length of every record that holds the slice, which
// no reader looks at; so keys with many versions append in amortized constant time.

// A verRef is an older version of a key as the key's newest record lists it: its position, and
// what the quota and compaction need of it without reading it.
type verRef struct {
	mod  int64
	sub  int32
	vlen int32 // length of the value; -1 for a tombstone
}

func refOf(r *Record) verRef {
	v := verRef{mod: r.Mod, sub: r.Sub, vlen: r.valueLen}
	if r.Tombstone() {
		v.vlen = -1
	}
	return v
}

func (v verRef) pos() revPos           { return revPos{v.mod, v.sub} }
func (v verRef) tombstone() bool       { return v.vlen < 0 }
func (v verRef) size(key string) int64 { return int64(len(key)+max(int(v.vlen), 0)) + recordOverhead }

func (r *Record) pos() revPos { return revPos{r.Mod, r.Sub} }

// older is the slice of r's key's older versions, if r is the key's newest record.
func (r *Record) older() []verRef {
	if r.olderPtr == nil {
		return nil
	}
	return unsafe.Slice(r.olderPtr, r.olderCap)[:r.olderLen]
}

// setOlder makes s the slice of r's key's older versions. A key has fewer than 2³¹ versions
// between compactions: each is a revision, and 2³¹ of them would take 32 GiB of this index.
func (r *Record) setOlder(s []verRef) {
	if cap(s) == 0 {
		r.olderPtr, r.olderLen, r.olderCap = nil, 0, 0
		return
	}
	r.olderPtr, r.olderLen, r.olderCap = unsafe.SliceData(s), int32(len(s)), int32(cap(s))
}

// versionIndex returns where the version at p is among r's versions: its index in r.older(), or
// len(r.older()) for r itself; -1 if r's key has no version at p.
func (r *Record) versionIndex(p revPos) int {
	older := r.older()
	if p == r.pos() {
		return len(older)
	}
	i := sort.Search(len(older), func(i int) bool { return !older[i].pos().less(p) })
	if i < len(older) && older[i].pos() == p {
		return i
	}
	return -1
}

// withOlder returns a copy of r, a key's newest record, with older versions older; the copy is
// r for every reader (see the key index).
func (r *Record) withOlder(older []verRef) *Record {
	c := *r
	c.setOlder(older)
	return &c
}

// newest returns key's record in the keys tree (a tombstone if that is its newest version), nil
// if st holds no version of key.
func (st *State) newest(key string) *Record {
	r, _ := st.keys.Get(&Record{Key: key})
	return r
}

// live returns key's newest version if it is a put, else nil.
func (st *State) live(key string) *Record {
	if r := st.newest(key); r != nil && !r.Tombstone() {
		return r
	}
	return nil
}

// versionAt returns the record of v, an older version of key. False means it is gone: a
// compaction applied after st was cloned removed it (see valueOf); the Applier's own state and a
// pinned clone always find it, unless the file is damaged.
func (st *State) versionAt(key string, v verRef) (*Record, bool) {
	p := v.pos()
	if st.backend == nil {
		return st.revs.Get(&Record{Mod: p.mod, Sub: p.sub})
	}
	for _, recs := range [2][]pendingRecord{st.pending, st.committing} {
		if i := sort.Search(len(recs), func(i int) bool { return !recs[i].pos.less(p) }); i < len(recs) && recs[i].pos == p {
			return recs[i].rec, true
		}
	}
	view := st.view
	if view == nil {
		v, err := st.backend.acquire()
		if err != nil {
			return nil, false // closed: a restored snapshot replaced the file, or the member closed
		}
		defer v.release()
		view = v
	}
	e, ok := view.entry(p)
	if !ok {
		return nil, false
	}
	r, err := st.recordOf(key, p, e)
	return r, err == nil
}

// recordOf decodes e, the revs entry at p of key's version, into a record of st's (key's bytes
// shared, the value held as st holds values of its length).
func (st *State) recordOf(key string, p revPos, e []byte) (*Record, error) {
	if len(e) < 4 {
		return nil, fmt.Errorf("%w: backend record %d.%d", ErrCorrupt, p.mod, p.sub)
	}
	var k [16]byte
	r, value, err := decodeRecord(putRevKey(k[:], p), e[:len(e)-4])
	if err != nil {
		return nil, err
	}
	if r.Key != key {
		return nil, fmt.Errorf("%w: backend record %d.%d is of key %q, want %q", ErrCorrupt, p.mod, p.sub, r.Key, key)
	}
	r.Key = key
	if len(value) <= st.backend.inlineMax {
		r.setValue(string(value))
	} else {
		r.setStored(len(value))
	}
	return r, nil
}

// PrevVersion returns the version of r's key just before r, or nil if there is none. False means
// what versionAt's false does.
func (st *State) PrevVersion(r *Record) (*Record, bool) {
	k := st.newest(r.Key)
	if k == nil {
		return nil, true
	}
	i := k.versionIndex(r.pos())
	if i <= 0 {
		return nil, true
	}
	return st.versionAt(k.Key, k.older()[i-1])
}

// nextMod returns the revision of the version of r's key just after r, 0 if r is the newest.
func (st *State) nextMod(r *Record) int64 {
	k := st.newest(r.Key)
	if k == nil {
		return 0
	}
	older := k.older()
	switch i := k.versionIndex(r.pos()); {
	case i < 0 || i == len(older):
		return 0
	case i+1 < len(older):
		return older[i+1].mod
	}
	return k.Mod
}

// eachVersion calls fn with every version st holds, in key and revision order, with the revision
// of the key's next version (0 for its newest), until fn returns false; false means a version
// could not be read, as versionAt's false.
func (st *State) eachVersion(fn func(r *Record, nextMod int64) bool) bool {
	complete := true
	st.keys.Ascend(func(k *Record) bool {
		older := k.older()
		for i, v := range older {
			r, ok := st.versionAt(k.Key, v)
			if !ok {
				complete = false
				return false
			}
			next := k.Mod
			if i+1 < len(older) {
				next = older[i+1].mod
			}
			if !fn(r, next) {
				return false
			}
		}
		return fn(k, 0)
	})
	return complete
}
