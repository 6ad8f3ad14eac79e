package mvcc

import "github.com/ember-kv/ember/internal/wire"

// The dedup table is replicated state (it is in snapshots), but its policy — which entries
// expire and which results are held in full — belongs to the state machine that applies
// commands: the table only stores what it is given.

// Remembered returns the entry of request id, if held.
func (st *State) Remembered(id wire.RequestID) (*DedupEntry, bool) {
	return st.dedup.Get(&DedupEntry{ID: id})
}

// Remember stores e, replacing any entry of the same request ID. Entries are shared with
// clones: e must not be changed afterwards, nor an entry in place.
func (st *State) Remember(e *DedupEntry) {
	st.dedup.Set(e)
	st.markDedup(e.ID, e)
}

// Forget removes the entry of request id and returns it, if held.
func (st *State) Forget(id wire.RequestID) (*DedupEntry, bool) {
	e, ok := st.dedup.Delete(&DedupEntry{ID: id})
	if ok {
		st.markDedup(id, nil)
	}
	return e, ok
}

// ScanRemembered calls fn for every entry in request ID order until fn returns false.
func (st *State) ScanRemembered(fn func(*DedupEntry) bool) { st.dedup.Scan(fn) }

// RememberedCount is the number of entries held.
func (st *State) RememberedCount() int { return st.dedup.Len() }
