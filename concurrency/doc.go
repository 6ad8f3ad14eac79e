// Package concurrency provides etcd's client-side concurrency recipes on an ember Store:
// sessions, distributed mutexes, leader elections and software transactional memory. The API
// and the key layout match go.etcd.io/etcd/client/v3/concurrency, so code written for etcd
// ports by swapping the import and passing a *ember.Store for the client.
//
// A namespace (ember.Namespace) is a *ember.Store too: a Session made on one keeps its Mutexes,
// Elections and STMs inside the namespace, as with a clientv3 client wrapped by etcd's
// namespace package.
//
// Everything here is built on the public ember API: a Session is a lease kept alive, and a
// Mutex or Election is a queue of keys attached to session leases under a prefix
// (<pfx>/<lease ID in hex>), ordered by create revision.
//
// # A lock is not mutual exclusion
//
// A Mutex or Election tells its holder that it held the lock when Lock returned. It cannot
// tell it that it still holds it: a holder that pauses for longer than its session TTL (a GC
// pause, a stopped VM, a slow disk) or whose lease is revoked loses the lock while it still
// runs, and a new holder gets it. Jepsen's 2020 analysis of etcd 3.4.3 found etcd's locks
// "fundamentally unsafe" for this reason: they "did not, and can not, guarantee mutual
// exclusion in asynchronous networks". As Martin Kleppmann argued in "How to do distributed
// locking" (2016), the fix is for the protected resource itself to reject stale holders,
// using a fencing token that increases with every grant.
//
// Session.Done closes as soon as the session is known to be gone, but no notification can
// arrive before a write the holder has already sent. So check ownership where the write lands.
// For data in the same store, make the write conditional on still holding the lock, with
// IsOwner in the Txn's If; the store checks it atomically with the write:
//
//	if err := m.Lock(ctx); err != nil {
//		return err
//	}
//	defer m.Unlock(ctx)
//	resp, err := s.Txn(ctx).If(m.IsOwner()).Then(ember.OpPut("config", v)).Commit()
//	if err != nil {
//		return err
//	}
//	if !resp.Succeeded {
//		return errLockLost // the lock was lost; the write did not happen
//	}
//
// For an external system, send FencingToken with every write: it is the lock key's create
// revision, which strictly increases from one holder to the next. The system stores the
// highest token it has accepted and rejects writes that carry a lower one:
//
//	token := m.FencingToken()
//	err := bucket.Write(obj, data, token) // fails if a token above token was seen
//
// An Election's leader fences the same way, with CreateRevision(e.Key()) = e.Rev() or with
// e.Rev() as the token.
//
// # Beyond etcd
//
// A Mutex or Election waiter returns ErrSessionExpired as soon as its session ends or its own
// key is deleted, rather than only once its predecessors are gone (etcd#19597). A Lock or
// Campaign that gives up never leaves its key queued, even when ctx ends while the key is being
// put. Election.Observe walks the election's history in revision order, so a slow reader still
// sees every leader unless that history is compacted first. NewLocker's Locker also excludes
// the goroutines that share it.
package concurrency
