package mvcc

import (
	"errors"

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
	// Only changes in [previous compaction, rev] can supersede anything not dropped already.
	// Changes at exactly the previous compaction revision are (re)visited: a tombstone there was
	// kept by it, and goes now.
	if !st.compactPending || st.compactCursor.mod >= st.compactRev {
		st.compactCursor = revPos{mod: st.compactRev}
	}
	st.compactRev = rev
	st.compactPending = true
	if st.dirty != nil {
		st.dirty.counters = true
	}
	return wire.CodeOK
}

// compactStep visits the next limit changes at or before compactRev (from where the previous
// step stopped), removes what they make obsolete, and reports whether more remains. A removal done in
// steps leaves the same trees as one done at once: the work is proportional to the changes since
// the previous compaction, not to the size of the store, and writes between steps add changes
// only after compactRev, which make nothing older obsolete.
func (st *State) CompactStep(limit int) bool {
	if !st.compactPending {
		return false
	}
	type version struct {
		key string
		ref verRef
	}
	var doomed []version
	visited := 0
	more := false
	err := st.ascendRevs(st.compactCursor, func(r *Record) bool {
		if r.Mod > st.compactRev {
			return false
		}
		if visited == limit {
			more = true
			return false
		}
		visited++
		st.compactCursor = revPos{mod: r.Mod, sub: r.Sub + 1}
		// r supersedes the version before it, and a tombstone before compactRev is obsolete
		// whatever follows it. Once r is visited, no older version of its key remains, so a
		// later step finds only undecided versions before the ones it visits. A tombstone and
		// the change that supersedes it can both name it within one step: it is removed once.
		k := st.newest(r.Key)
		if i := k.versionIndex(r.pos()); i > 0 {
			doomed = append(doomed, version{k.Key, k.older()[i-1]})
		}
		if r.Tombstone() && r.Mod < st.compactRev {
			doomed = append(doomed, version{k.Key, refOf(r)})
		}
		return true
	})
	for _, d := range doomed {
		st.drop(d.key, d.ref)
	}
	if err != nil {
		// The Applier's own state reads the newest view, so nothing is stale: the file is
		// damaged, and the Applier stops on it, or closed. The removal resumes where it stopped.
		if errors.Is(err, ErrCorrupt) && st.damage == nil {
			st.damage = err
		}
		return false
	}
	if !more {
		st.compactPending = false
		st.compactCursor = revPos{mod: st.compactRev}
	}
	return more
}

// drop removes version v of key, if st still holds it. Compaction drops the oldest of a key's
// versions first (see the key index), so the key's record is replaced by one that holds the rest
// of its older slice; the newest version goes, with the key, only once it is an obsolete
// tombstone and no older version is left.
func (st *State) drop(key string, v verRef) {
	k := st.newest(key)
	if k == nil {
		return
	}
	i, older := k.versionIndex(v.pos()), k.older()
	switch {
	case i < 0:
		return
	case i == len(older):
		if len(older) > 0 {
			return // not obsolete while an older version remains: that one goes first
		}
		st.keys.Delete(k)
		if st.revs != nil {
			st.revs.Delete(k)
		}
		st.size -= k.Size()
	default:
		rest := older[i+1:]
		if i > 0 {
			rest = append(append(make([]verRef, 0, len(older)-1), older[:i]...), older[i+1:]...)
		}
		st.keys.ReplaceOrInsert(k.withOlder(rest)) // revs keeps k: only the keys tree's record lists versions
		if st.revs != nil {
			st.revs.Delete(&Record{Mod: v.mod, Sub: v.sub})
		}
		st.size -= v.size(key)
	}
	st.versions--
	st.markDeleted(v.pos())
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
