package mvcc

import "fmt"

// Versions is the number of versions held (puts and tombstones), counting those a pending
// compaction has yet to remove.
func (st *State) Versions() int { return st.history.Len() }

// Check reports the first disagreement between the state's indexes: history and the versions in
// revision order (revs, or the backend and the unwritten versions) must hold the same records, size must be the sum of their sizes, latest must hold exactly each key's
// newest version unless that is a tombstone, with no removal pending nothing a compaction drops
// may be left, and every stored value must be found (st is the Applier's own or pinned). It visits every version: for offline inspection and tests, never for the
// apply path.
func (st *State) Check() error {
	inHistory := map[*Record]bool{}
	var size int64
	newest := map[string]*Record{}
	var prev, obsolete *Record
	// prev is obsolete or not by the version after it, next (nil if prev is its key's newest).
	judge := func(next *Record) {
		if prev != nil && obsolete == nil && st.obsolete(prev, next) {
			obsolete = prev
		}
	}
	st.history.Scan(func(r *Record) bool {
		inHistory[r] = true
		size += r.Size()
		newest[r.Key] = r
		if prev != nil && prev.Key == r.Key {
			judge(r)
		} else {
			judge(nil)
		}
		prev = r
		return true
	})
	judge(nil)
	n := 0
	var stray, unordered *Record
	var last revPos
	if err := st.ascendRevs(revPos{}, func(r *Record) bool {
		pos := revPos{r.Mod, r.Sub}
		switch n++; {
		case !inHistory[r]:
			stray = r
		case n > 1 && !last.less(pos):
			unordered = r
		}
		last = pos
		return stray == nil && unordered == nil
	}); err != nil {
		return err
	}
	switch {
	case stray != nil:
		return fmt.Errorf("revs holds %s, history does not", recordName(stray))
	case unordered != nil:
		return fmt.Errorf("revs holds %s out of revision order", recordName(unordered))
	case n != len(inHistory):
		return fmt.Errorf("revs holds %d records, history %d", n, len(inHistory))
	case size != st.size:
		return fmt.Errorf("size %d, records add up to %d", st.size, size)
	case obsolete != nil && !st.compactPending:
		return fmt.Errorf("%s survived the compaction at %d", recordName(obsolete), st.compactRev)
	}
	var missing error
	st.history.Scan(func(r *Record) bool {
		if _, ok := st.valueOf(r); !ok {
			missing = errValueMissing(r)
		}
		return missing == nil
	})
	if missing != nil {
		return missing
	}
	live := 0
	for _, r := range newest {
		if r.Tombstone() {
			continue
		}
		live++
		if l, ok := st.latest.Get(&Record{Key: r.Key}); !ok || l != r {
			return fmt.Errorf("latest for %q is not its newest record %s", r.Key, recordName(r))
		}
	}
	if live != st.latest.Len() {
		return fmt.Errorf("latest holds %d keys, history has %d live", st.latest.Len(), live)
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
