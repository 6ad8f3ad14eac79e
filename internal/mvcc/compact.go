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
	var doomed []*Record
	visited := 0
	more := false
	st.revs.Ascend(&Record{Mod: st.compactCursor.mod, Sub: st.compactCursor.sub}, func(r *Record) bool {
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
		// later step's prevVersion finds only undecided records. A tombstone and the change
		// that supersedes it can both name it within one step: it is removed once.
		if prev := st.PrevVersion(r); prev != nil {
			doomed = append(doomed, prev)
		}
		if r.Tombstone() && r.Mod < st.compactRev {
			doomed = append(doomed, r)
		}
		return true
	})
	for _, r := range doomed {
		if _, ok := st.history.Delete(r); ok {
			st.revs.Delete(r)
			st.size -= r.Size()
			st.markDeleted(r)
		}
	}
	if !more {
		st.compactPending = false
		st.compactCursor = revPos{mod: st.compactRev}
		if st.dirty != nil {
			st.dirty.counters = true // the next commit records the removal done
		}
	}
	return more
}

// obsolete reports whether a compaction at compactRev drops r, whose key's next version is next
// (nil if r is the newest): a version superseded by a change at or before compactRev, or a
// tombstone older than compactRev (a key whose newest version there is a delete does not exist
// there). Tombstones at exactly compactRev stay, so that a watch starting at the compaction
// revision still sees every event of it; the next compaction drops them.
func (st *State) obsolete(r, next *Record) bool {
	return next != nil && next.Mod <= st.compactRev || r.Tombstone() && r.Mod < st.compactRev
}

// prevVersion returns the version of r's key just before r, or nil.
func (st *State) PrevVersion(r *Record) *Record {
	var prev *Record
	st.history.Descend(r, func(p *Record) bool {
		if p == r {
			return true
		}
		if p.Key == r.Key {
			prev = p
		}
		return false
	})
	return prev
}

// nextVersion returns the version of r's key just after r, or nil.
func (st *State) nextVersion(r *Record) *Record {
	var next *Record
	st.history.Ascend(r, func(n *Record) bool {
		if n == r {
			return true
		}
		if n.Key == r.Key {
			next = n
		}
		return false
	})
	return next
}
