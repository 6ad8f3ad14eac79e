package ember

import (
	"github.com/ember-kv/ember/internal/planted"
	"github.com/ember-kv/ember/internal/wire"
)

// grantLease adds a lease.
func (st *mvccState) grantLease(id, ttl int64) wire.Code {
	if id == 0 { // NoLease; any other ID, negative ones included, is valid, as etcd
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
		if planted.Enabled(planted.SplitRevoke) && i == 1 {
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
