package mvcc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"unsafe"
)

// The versions in revision order, which watch catch-up, hashes, checks and defragmentation
// read. Without a backend the revs tree holds them. With one, the backend's revs bucket holds
// every version a batch has written, in that order, and the versions not yet written follow
// them in memory (committing, then pending): a tree of them as well would cost a tree item per
// version of heap. A version read there by position is then looked up in its key's record, so
// that readers get the key's record for its newest version, and a version compaction removed
// but whose deletion no batch has written yet is skipped.

// errStale reports that a clone cannot tell every version it was asked for: a compaction applied
// after it was cloned has removed some of them from the backend. A newer clone can.
var errStale = errors.New("mvcc: versions compacted after the clone")

// ascendRevs calls fn with st's versions at or after from, in revision order, until fn returns
// false. With a backend it fails with errStale (see there), with ErrCorrupt for an entry of the
// file it cannot read, or with the backend's error if it is closed; fn may have been called
// before it fails.
func (st *State) ascendRevs(from revPos, fn func(*Record) bool) error {
	if st.backend == nil {
		st.revs.Ascend(&Record{Mod: from.mod, Sub: from.sub}, fn)
		return nil
	}
	unwritten := [2][]pendingRecord{st.committing, st.pending}
	// Every version before the first unwritten one is in any view at least as new as st.
	end := revPos{mod: st.rev + 1}
	for _, recs := range unwritten {
		if len(recs) > 0 {
			end = recs[0].pos
			break
		}
	}
	var batch []*Record
	for from.less(end) {
		var err error
		if batch, from, err = st.readRevs(batch[:0], from, end); err != nil {
			return err
		}
		for _, r := range batch {
			if !fn(r) {
				return nil
			}
		}
	}
	for _, recs := range unwritten {
		i := sort.Search(len(recs), func(i int) bool { return !recs[i].pos.less(from) })
		for _, p := range recs[i:] {
			r := p.rec
			switch k := st.newest(r.Key); {
			case k == nil:
				continue // compaction removed it
			case k.pos() == p.pos:
				r = k // the key's record: compaction may have replaced the one written
			case k.versionIndex(p.pos) < 0:
				continue
			}
			if !fn(r) {
				return nil
			}
		}
	}
	return nil
}

// revsBatch bounds the versions readRevs reads under one hold of a view.
const revsBatch = 256

// readRevs appends to dst the records of the versions in [from, end) that st still has, in
// revision order, reading at most revsBatch of them from a view, and returns where the next read
// starts (end once the view has no more). The view is held only while it reads, so that the
// caller's work on the records never waits on a view while it holds one: a commit that remaps
// the file waits for every held view, and a reader's new view waits for that commit.
func (st *State) readRevs(dst []*Record, from, end revPos) (_ []*Record, next revPos, err error) {
	view := st.view
	if view == nil {
		v, err := st.backend.acquire()
		if err != nil {
			return nil, end, err
		}
		defer v.release()
		view = v
	}
	if view.compactRev > st.compactRev && from.mod <= view.compactRev {
		return nil, end, errStale
	}
	if view.revs == nil {
		return dst, end, nil
	}
	defer recoverCorrupt(&err)
	c := view.revs.Cursor()
	var seek [16]byte
	var probe Record
	n := 0
	for k, e := c.Seek(putRevKey(seek[:], from)); k != nil; k, e = c.Next() {
		if len(k) != 16 {
			return nil, end, fmt.Errorf("%w: backend revision key of %d bytes", ErrCorrupt, len(k))
		}
		pos := revPos{mod: int64(binary.BigEndian.Uint64(k)), sub: int32(binary.BigEndian.Uint64(k[8:]))}
		if !pos.less(end) {
			return dst, end, nil
		}
		if n == revsBatch {
			return dst, pos, nil
		}
		n++
		key, _, _, ok := entryParts(e)
		if !ok {
			return nil, end, fmt.Errorf("%w: backend record %d.%d", ErrCorrupt, pos.mod, pos.sub)
		}
		// The key is only compared: the page's bytes serve.
		probe.Key = unsafe.String(unsafe.SliceData(key), len(key))
		k, _ := st.keys.Get(&probe)
		switch {
		case k == nil:
			continue // compaction removed it; no batch has written its deletion yet
		case k.pos() == pos:
			dst = append(dst, k)
		case k.versionIndex(pos) >= 0:
			r, err := st.recordOf(k.Key, pos, e)
			if err != nil {
				return nil, end, err
			}
			dst = append(dst, r)
		}
	}
	return dst, end, nil
}
