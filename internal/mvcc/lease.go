package mvcc

import (
	"github.com/ember-kv/ember/internal/planted"
	"github.com/ember-kv/ember/internal/wire"
)

// grantLease adds a lease.
func (st *State) GrantLease(id, ttl int64) wire.Code {
	if code := st.canGrant(id, ttl); code != wire.CodeOK {
		return code
	}
	st.grant(id, ttl)
	return wire.CodeOK
}

// canGrant says whether lease id can be granted for ttl seconds.
func (st *State) canGrant(id, ttl int64) wire.Code {
	if id == 0 { // NoLease; any other ID, negative ones included, is valid, as etcd
		return wire.CodeLeaseNotFound
	}
	if ttl > MaxLeaseTTL {
		return wire.CodeTTLTooLarge
	}
	if _, ok := st.leases.Get(&Lease{ID: id}); ok {
		return wire.CodeLeaseExists
	}
	return wire.CodeOK
}

func (st *State) grant(id, ttl int64) {
	l := &Lease{ID: id, TTL: ttl}
	st.leases.Set(l)
	st.markLease(id, l)
}

// revokeLease deletes a lease and every key attached to it, in key order, at one revision.
func (st *State) RevokeLease(id int64) (wire.Code, []Event) {
	if _, ok := st.leases.Delete(&Lease{ID: id}); !ok {
		return wire.CodeLeaseNotFound, nil
	}
	st.markLease(id, nil)
	keys := st.LeaseKeys(id)
	w := st.beginWrite()
	var split []Event
	for i, k := range keys {
		if planted.Enabled(planted.SplitRevoke) && i == 1 {
			split = w.end()
			w = st.beginWrite()
		}
		if r := st.live(k); r != nil {
			w.deleteKey(r)
		}
	}
	return wire.CodeOK, append(split, w.end()...)
}

// leaseKeysOf returns the keys attached to lease id, in key order.
func (st *State) LeaseKeys(id int64) []string {
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
func (st *State) CheckpointLeases(cps []wire.LeaseCheckpoint) []wire.LeaseCheckpoint {
	var applied []wire.LeaseCheckpoint
	for _, cp := range cps {
		if l, ok := st.leases.Get(&Lease{ID: cp.ID}); ok && cp.RemainingMs > 0 {
			// Records are shared with snapshots: replace, never modify in place.
			nl := &Lease{ID: l.ID, TTL: l.TTL, RemainingMs: cp.RemainingMs}
			st.leases.Set(nl)
			st.markLease(nl.ID, nl)
			applied = append(applied, cp)
		}
	}
	return applied
}

// maxLeaseTTL is etcd's MaxLeaseTTL, in seconds.
const MaxLeaseTTL = 9_000_000_000

// LeaseCount is the number of leases.
func (st *State) LeaseCount() int { return st.leases.Len() }

// ScanLeases calls fn for every lease in ID order until fn returns false. Leases are shared
// with clones: fn must not change them.
func (st *State) ScanLeases(fn func(*Lease) bool) { st.leases.Scan(fn) }
