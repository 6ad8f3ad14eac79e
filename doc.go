// Package ember is etcd's data model as an embeddable library: a revisioned key-value store with
// compare-and-swap transactions, leases and watches, replicated with Raft among the instances of
// the host application. There is no server to run; every [Store] is a cluster member.
//
// # Basics
//
// [Open] starts a member. With no options it is a single-member cluster that persists under
// the given directory and needs no network listener; [Open] with an empty directory keeps
// everything in memory. A cluster of several members gives each an ID ([WithNodeID]), a peer
// address ([WithBindAddr]) and the same founding map ([WithInitialCluster]); later members join
// through any existing one ([WithJoin]).
//
// The API mirrors etcd's clientv3: [Store.Put], [Store.Get], [Store.Delete], [Store.Txn],
// [Store.Compact], [Store.Watch], [Store.Grant] and [Store.KeepAlive] take the same options
// ([WithPrefix], [WithRev], [WithLease], ...) and return the same shapes. Every change gets the
// next store revision; a key keeps its creation revision, modification revision and version,
// and older versions stay readable ([WithRev]) until [Store.Compact] drops them. The
// package concurrency builds sessions, locks with fencing tokens, elections and STM on top.
//
// # Consistency
//
// Writes go through the Raft log; they can be called on any member, and a follower forwards
// them to the leader over the peer port. A write returns once it is committed by a quorum and
// applied. Each write carries a request ID, and the state machine drops duplicates, so a write
// retried after a leader change is applied at most once. The retry gets the first attempt's
// result while the state machine still holds it ([WithDedupResultBytes] bounds the large ones);
// otherwise it fails with an error that wraps [ErrTimeout], and the write is not applied again.
//
// Reads are linearizable by default on every member: the member obtains the leader's commit
// index, confirmed by a majority of the voters after the read began (ReadIndex; concurrent reads
// share one confirmation), waits until it has applied that index, and reads its own copy. The
// confirmation counts acks to requests sent after the read began, from voters only, so it does
// not depend on timing or on raft's leader lease.
// [WithSerializable] reads the local copy at once; such a read may be stale, and may go back in
// time when a caller switches members.
//
// Watches deliver every event of a key range once, in revision order, with all events of one
// revision in one response, on leader and followers alike. A slow consumer never slows writes:
// it falls behind and catches up from history. Watches are not linearizable with reads; compare
// revisions to order them. The memory held for watchers that fall behind is bounded: at most
// 65,536 events (64 MiB of keys and values) wait for the store's dispatcher and 4,096 events
// (4 MiB) for each consumer; past that they are dropped and the watchers concerned re-read the
// revisions from history, as after a snapshot install. A response carries at most 1,024 events
// or 1 MiB, except that one revision's events are never split. A watch on a member cut off from
// the leader stays open and silent until the member rejoins, unless its context comes from
// [WithRequireLeader]: it then ends with [ErrNoLeader] after three election timeouts without a
// leader, as etcd's.
//
// # More of etcd
//
// [Store.GrantWithID] grants a lease under an ID the caller picks, as etcd's
// LeaseGrantRequest.ID; an ID in use is refused with [ErrLeaseExists]. Beyond etcd,
// [Store.GrantAndDo] grants such a lease and applies the ops that attach keys to it in one raft
// entry: registering a service costs one commit, not two, and no crash leaves the lease alone.
//
// [Namespace] gives a view of a Store under a key prefix, as etcd's client/v3/namespace does for
// a client: applications sharing a cluster each see only their own keys, and package
// concurrency works inside a namespace unchanged.
//
// Package mirror copies the keys under a prefix at one revision, then follows them by watch, as
// etcd's client/v3/mirror: to seed another store or keep a read-only copy.
//
// [WithCorruptCheckInterval] turns on etcd's periodic hash check: the leader compares the
// members' [Store.HashKV] and raises a CORRUPT alarm for one that diverged, after which writes
// fail with [ErrCorrupt] until [Store.AlarmDisarm].
//
// # Caveats
//
// A cancelled context abandons the wait for a write, not necessarily the write: an error that
// wraps [ErrTimeout] means the outcome is unknown, as with etcd. Every write error is one or the
// other: unknown (it matches ErrTimeout, and the context error that ended the wait, but no other
// ember error; its message names the cause), or definite (any other error: [ErrNoLeader],
// [ErrStopped] and the rest promise that the write took no effect). The etcd gateway answers
// unknown outcomes with etcd's "request timed out".
//
// A lock (package concurrency) is only as safe as its use of fencing: a holder paused past its
// lease can still act after another holder took over. Guard the protected resource with the
// lock's fencing token or an IsOwner compare in the same transaction.
//
// A member keeps its state in a bbolt file in its data dir (state.db: every kept version, the
// leases, the raft index it is at), loaded at start so that raft replays only the entries after
// it, and an index of it (keys, revisions, values up to 128 bytes) on the Go heap; larger values
// are read through the page cache. A member opened without a data dir keeps everything in
// memory. See docs/OPERATIONS.md "What lives where".
//
// The peer port is the only network listener ember opens. [WithClusterToken] (or [WithTLS]
// with client certificates) admits only peers holding the cluster's credentials, and encrypts
// their traffic; a listener other hosts can reach without either makes [Open] fail with
// [ErrInsecurePeers] unless the host says [WithInsecurePeers]. Peers that are not members may
// only ask to join ([ErrNotMember]). The in-process [Store] API is not authenticated: the host
// is trusted. etcd's users, roles and permissions apply to the clients of the etcd gateway
// (package etcdapi) only. See docs/OPERATIONS.md "Securing a cluster".
//
// The whole state lives in memory (copy-on-write B-trees), and the Raft log and snapshots on
// disk; size the host accordingly. Compact regularly, or history grows without bound.
package ember
