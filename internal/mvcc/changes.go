package mvcc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"unsafe"
)

// The versions in revision order, which watch catch-up, compaction, hashes and defragmentation
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
	if from.less(end) {
		view := st.view
		if view == nil {
			v, err := st.backend.acquire()
			if err != nil {
				return err
			}
			defer v.release()
			view = v
		}
		if view.compactRev > st.compactRev && from.mod <= view.compactRev {
			return errStale
		}
		if more, err := st.ascendView(view, from, end, fn); err != nil || !more {
			return err
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

// ascendView calls fn with the records of the versions in [from, end) that view holds and st
// still has, in revision order; more is false if fn stopped it.
func (st *State) ascendView(view *readView, from, end revPos, fn func(*Record) bool) (more bool, err error) {
	if view.revs == nil {
		return true, nil
	}
	defer recoverCorrupt(&err)
	c := view.revs.Cursor()
	var seek [16]byte
	var probe Record
	for k, e := c.Seek(putRevKey(seek[:], from)); k != nil; k, e = c.Next() {
		if len(k) != 16 {
			return false, fmt.Errorf("%w: backend revision key of %d bytes", ErrCorrupt, len(k))
		}
		pos := revPos{mod: int64(binary.BigEndian.Uint64(k)), sub: int32(binary.BigEndian.Uint64(k[8:]))}
		if !pos.less(end) {
			return true, nil
		}
		key, _, _, ok := entryParts(e)
		if !ok {
			return false, fmt.Errorf("%w: backend record %d.%d", ErrCorrupt, pos.mod, pos.sub)
		}
		// The key is only compared: the page's bytes serve.
		probe.Key = unsafe.String(unsafe.SliceData(key), len(key))
		k, _ := st.keys.Get(&probe)
		r := k
		switch {
		case k == nil:
			continue // compaction removed it; no batch has written its deletion yet
		case k.pos() != pos:
			if k.versionIndex(pos) < 0 {
				continue
			}
			if r, err = st.recordOf(k.Key, pos, e); err != nil {
				return false, err
			}
		}
		if !fn(r) {
			return false, nil
		}
	}
	return true, nil
}
