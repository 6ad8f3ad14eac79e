package ember

import "github.com/ember-kv/ember/internal/wire"

// compact drops the history that no read or watch at or after rev can need: every version
// superseded by a change at or before rev, and tombstones older than rev that are their key's
// newest version at rev. Tombstones at exactly rev stay, so that a watch starting at the
// compaction revision still sees every event of it; the next compaction drops them.
//
// Only changes in [previous compaction, rev] can supersede anything not dropped already, so the
// work is proportional to the changes since the last compaction, not to the size of the store.
func (st *mvccState) compact(rev int64) wire.Code {
	switch {
	case rev <= st.compactRev:
		return wire.CodeCompacted
	case rev > st.rev:
		return wire.CodeFutureRev
	}
	var doomed []*record
	st.revs.Ascend(&record{mod: st.compactRev}, func(r *record) bool {
		if r.mod > rev {
			return false
		}
		if prev := st.prevVersion(r); prev != nil {
			doomed = append(doomed, prev)
		}
		if r.tombstone && r.mod < rev {
			if next := st.nextVersion(r); next == nil || next.mod > rev {
				doomed = append(doomed, r)
			}
		}
		return true
	})
	for _, r := range doomed {
		st.history.Delete(r)
		st.revs.Delete(r)
		st.size -= r.size()
	}
	st.compactRev = rev
	return wire.CodeOK
}

// prevVersion returns the version of r's key just before r, or nil.
func (st *mvccState) prevVersion(r *record) *record {
	var prev *record
	st.history.Descend(r, func(p *record) bool {
		if p == r {
			return true
		}
		if p.key == r.key {
			prev = p
		}
		return false
	})
	return prev
}

// nextVersion returns the version of r's key just after r, or nil.
func (st *mvccState) nextVersion(r *record) *record {
	var next *record
	st.history.Ascend(r, func(n *record) bool {
		if n == r {
			return true
		}
		if n.key == r.key {
			next = n
		}
		return false
	})
	return next
}

// grantLease adds a lease.
func (st *mvccState) grantLease(id, ttl int64) wire.Code {
	if id <= 0 {
		return wire.CodeLeaseNotFound
	}
	if ttl > maxLeaseTTL {
		return wire.CodeTTLTooLarge
	}
	if _, ok := st.leases.Get(&leaseRecord{id: id}); ok {
		return wire.CodeLeaseExists
	}
	st.leases.Set(&leaseRecord{id: id, ttl: ttl})
	return wire.CodeOK
}

// revokeLease deletes a lease and every key attached to it, in key order, at one revision.
func (st *mvccState) revokeLease(id int64) (wire.Code, []event) {
	if _, ok := st.leases.Delete(&leaseRecord{id: id}); !ok {
		return wire.CodeLeaseNotFound, nil
	}
	keys := st.leaseKeysOf(id)
	w := st.beginWrite()
	var split []event
	for i, k := range keys {
		if plantedBug() == "split-revoke" && i == 1 {
			split = w.end()
			w = st.beginWrite()
		}
		if r, _ := st.latest.Get(&record{key: k}); r != nil {
			w.deleteKey(r)
		}
	}
	return wire.CodeOK, append(split, w.end()...)
}

// leaseKeysOf returns the keys attached to lease id, in key order.
func (st *mvccState) leaseKeysOf(id int64) []string {
	var keys []string
	st.leaseKeys.Ascend(leaseKey{lease: id}, func(lk leaseKey) bool {
		if lk.lease != id {
			return false
		}
		keys = append(keys, lk.key)
		return true
	})
	return keys
}

// checkpointLeases records the remaining TTL of leases that still exist, and returns those.
func (st *mvccState) checkpointLeases(cps []wire.LeaseCheckpoint) []wire.LeaseCheckpoint {
	var applied []wire.LeaseCheckpoint
	for _, cp := range cps {
		if l, ok := st.leases.Get(&leaseRecord{id: cp.ID}); ok && cp.RemainingMs > 0 {
			// Records are shared with snapshots: replace, never modify in place.
			st.leases.Set(&leaseRecord{id: l.id, ttl: l.ttl, remainingMs: cp.RemainingMs})
			applied = append(applied, cp)
		}
	}
	return applied
}

// maxLeaseTTL is etcd's MaxLeaseTTL, in seconds.
const maxLeaseTTL = 9_000_000_000
