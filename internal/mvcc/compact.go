package mvcc

import (
	"github.com/ember-kv/ember/internal/wire"
)

// compact moves the compaction revision to rev: reads, hashes and watches below it fail with
// ErrCompacted from now on. It removes nothing itself, so that applying it costs O(1) whatever
// the history holds; compactStep then drops, a bounded batch at a time, the history that no read
// or watch at or after rev can need (see obsolete). A compaction applied while the removal for
// an earlier one is under way extends it to the new revision.
func (st *State) Compact(rev int64) wire.Code {
	switch {
	case rev <= st.compactRev:
		return wire.CodeCompacted
	case rev > st.rev:
		return wire.CodeFutureRev
	}
	// The keys the pending removal has passed may hold versions the new revision makes
	// obsolete: the walk starts over (a key with nothing to drop costs a look at its record).
	st.compactFrom = ""
	st.compactRev = rev
	st.compactPending = true
	if st.dirty != nil {
		st.dirty.counters = true
	}
	return wire.CodeOK
}

// CompactStep visits the next keys of the key index (from where the previous step stopped),
// drops the versions of each that compactRev makes obsolete, and reports whether more remains;
// it stops once the keys visited and the versions dropped reach limit (a key's versions are
// dropped at once). As etcd compacts its keyIndex, the work is a look at each key's record, in
// memory, plus the versions dropped. Writes between steps add versions only after compactRev,
// which make nothing older obsolete, so a removal done in steps leaves the same state as one
// done at once.
func (st *State) CompactStep(limit int) bool {
	if !st.compactPending {
		return false
	}
	type cut struct {
		k       *Record
		n       int  // older versions to drop, the oldest first
		dropKey bool // and the newest, an obsolete tombstone, with the key
	}
	var cuts []cut
	work := 0
	more := false
	// The tree is changed only after the walk: no tree may change while it is walked.
	st.keys.AscendGreaterOrEqual(&Record{Key: st.compactFrom}, func(k *Record) bool {
		if work >= limit {
			st.compactFrom, more = k.Key, true
			return false
		}
		n, dropKey := st.obsoleteVersions(k)
		work++
		if n > 0 || dropKey {
			cuts = append(cuts, cut{k, n, dropKey})
			work += n
		}
		return true
	})
	for _, c := range cuts {
		st.dropVersions(c.k, c.n, c.dropKey)
	}
	if !more {
		st.compactPending, st.compactFrom = false, ""
		if st.dirty != nil {
			st.dirty.counters = true // the next commit records the removal done
		}
	}
	return more
}

// obsoleteVersions returns how many of the older versions of k's key compaction drops (always
// the oldest: a version is obsolete once a later one at or before compactRev supersedes it), and
// whether it drops the newest too (then every older one as well).
func (st *State) obsoleteVersions(k *Record) (n int, dropKey bool) {
	older := k.older()
	if k.Mod <= st.compactRev {
		return len(older), st.obsolete(k.Mod, k.Tombstone(), 0)
	}
	// The newest older version at or before compactRev supersedes the ones before it.
	for n < len(older) && n+1 < len(older) && older[n+1].mod <= st.compactRev {
		n++
	}
	if n < len(older) && st.obsolete(older[n].mod, older[n].tombstone(), modAfter(older, n, k)) {
		n++
	}
	return n, false
}

// modAfter is the revision of the version after older[i] of k's key.
func modAfter(older []verRef, i int, k *Record) int64 {
	if i+1 < len(older) {
		return older[i+1].mod
	}
	return k.Mod
}

// dropVersions removes the n oldest of the older versions of k's key, and with dropKey the key
// itself (its newest version, then the last left); k is the key's record in the keys tree.
func (st *State) dropVersions(k *Record, n int, dropKey bool) {
	older := k.older()
	for _, v := range older[:n] {
		if st.revs != nil {
			st.revs.Delete(&Record{Mod: v.mod, Sub: v.sub})
		}
		st.size -= v.size(k.Key)
		st.markDeleted(v.pos())
	}
	st.versions -= n
	if !dropKey {
		// revs keeps k: only the keys tree's record lists versions.
		st.keys.ReplaceOrInsert(k.withOlder(older[n:]))
		return
	}
	st.keys.Delete(k)
	if st.revs != nil {
		st.revs.Delete(k)
	}
	st.size -= k.Size()
	st.versions--
	st.markDeleted(k.pos())
}

// obsolete reports whether a compaction at compactRev drops the version at mod (a tombstone or
// not) whose key's next version is at nextMod (0 if it is the newest): a version superseded by a
// change at or before compactRev, or a tombstone older than compactRev (a key whose newest
// version there is a delete does not exist there). Tombstones at exactly compactRev stay, so
// that a watch starting at the compaction revision still sees every event of it; the next
// compaction drops them.
func (st *State) obsolete(mod int64, tombstone bool, nextMod int64) bool {
	return nextMod != 0 && nextMod <= st.compactRev || tombstone && mod < st.compactRev
}
