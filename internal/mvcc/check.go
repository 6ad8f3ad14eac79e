package mvcc

import "fmt"

// Versions is the number of versions held (puts and tombstones), counting those a pending
// compaction has yet to remove.
func (st *State) Versions() int { return st.versions }

// Check reports the first disagreement between the state's indexes: each key's versions must be
// in revision order and readable as their references describe them, the versions in revision
// order (revs, or the backend and the unwritten versions) must be exactly those, the counters
// must add up, with no removal pending nothing a compaction drops may be left, and every stored
// value must be found (st is the Applier's own or pinned). It visits every version: for offline
// inspection and tests, never for the apply path.
func (st *State) Check() error {
	var size int64
	live, versions := 0, 0
	held := map[revPos]string{}
	var problem error
	fail := func(format string, args ...any) bool {
		problem = fmt.Errorf(format, args...)
		return false
	}
	var prev *Record // the previous version visited, if of the same key
	complete := st.eachVersion(func(r *Record, nextMod int64) bool {
		if prev != nil && prev.Key == r.Key && !prev.pos().less(r.pos()) {
			return fail("versions of %q out of order: %s after %s", r.Key, recordName(r), recordName(prev))
		}
		if nextMod != 0 {
			prev = r
		} else {
			prev = nil
		}
		if k := held[r.pos()]; k != "" {
			return fail("%s and a version of %q share revision %d.%d", recordName(r), k, r.Mod, r.Sub)
		}
		held[r.pos()] = r.Key
		versions++
		size += r.Size()
		if nextMod == 0 && !r.Tombstone() {
			live++
		}
		if !st.compactPending && st.obsolete(r.Mod, r.Tombstone(), nextMod) {
			return fail("%s survived the compaction at %d", recordName(r), st.compactRev)
		}
		if _, ok := st.valueOf(r); !ok {
			problem = errValueMissing(r)
			return false
		}
		return true
	})
	if problem != nil {
		return problem
	}
	if !complete {
		return fmt.Errorf("%w: an older version listed by its key is missing", ErrCorrupt)
	}
	st.keys.Ascend(func(k *Record) bool {
		for _, v := range k.older() {
			r, ok := st.versionAt(k.Key, v)
			if !ok {
				return fail("%s@%d is missing", k.Key, v.mod)
			}
			if r.Tombstone() != v.tombstone() || !r.Tombstone() && int(r.valueLen) != int(v.vlen) {
				return fail("%s is listed as a version of length %d", recordName(r), v.vlen)
			}
		}
		return true
	})
	if problem != nil {
		return problem
	}
	n := 0
	var last revPos
	if err := st.ascendRevs(revPos{}, func(r *Record) bool {
		switch n++; {
		case held[r.pos()] != r.Key:
			return fail("revs holds %s, history does not", recordName(r))
		case n > 1 && !last.less(r.pos()):
			return fail("revs holds %s out of revision order", recordName(r))
		}
		last = r.pos()
		return true
	}); err != nil {
		return err
	}
	switch {
	case problem != nil:
		return problem
	case n != versions:
		return fmt.Errorf("revs holds %d records, history %d", n, versions)
	case versions != st.versions:
		return fmt.Errorf("%d versions counted, history has %d", st.versions, versions)
	case size != st.size:
		return fmt.Errorf("size %d, records add up to %d", st.size, size)
	case live != st.liveKeys:
		return fmt.Errorf("%d keys counted live, history has %d", st.liveKeys, live)
	}
	return nil
}

// recordName is "key@mod", with "t" appended for a tombstone.
func recordName(r *Record) string {
	n := fmt.Sprintf("%s@%d", r.Key, r.Mod)
	if r.Tombstone() {
		n += "t"
	}
	return n
}
