// Package etcdapi serves etcd's v3 gRPC API from an ember Store, and gives code written
// against etcd's clientv3 an in-process client backed by a Store.
//
// Register adds etcd's KV, Watch, Lease, Cluster, Maintenance and Auth services (and the
// standard gRPC health service) to a grpc.Server; Serve runs such a server on a listener; NewClient
// returns a *clientv3.Client served in-process, so that go.etcd.io/etcd/client/v3/concurrency
// (Mutex, Election, STM) runs unchanged on ember.
//
// Serving a namespace of a store (ember.Namespace) gives its clients only the keys under the
// prefix, without it, as etcd's grpc-proxy --namespace does; clientv3's own namespace package
// works over the gateway too.
//
// Members are identified as etcd expects: a member's numeric ID is the FNV-64a hash of its ember
// ID (its name in MemberList), and the cluster ID is derived from the sorted member IDs, or
// pinned with WithClusterID.
//
// Where ember differs from etcd, the gateway answers as follows:
//   - Lease IDs that the server picks are random positive 63-bit numbers rather than etcd's
//     member-derived sequence; client-chosen IDs (LeaseGrantRequest.ID) are kept as etcd keeps
//     them, negative ones included.
//   - MemberAdd names the new member after its peer address (start it with ember.WithNodeID set
//     to that address); MemberUpdate keeps the member's name (its ember ID) and uses only the
//     first peer URL, as a member has one peer address; MoveLeader is accepted by any member.
//   - Alarm lists, raises and disarms alarms as etcd (NOSPACE, raised when the quota,
//     ember.WithQuotaBackendBytes, refuses a write, refuses growth until disarmed; CORRUPT,
//     raised by ember.WithCorruptCheckInterval's hash check or a client, refuses writes), but
//     ACTIVATE takes only a member's ID (NotFound otherwise) and NOSPACE or CORRUPT: ember keeps
//     alarms under its members' IDs, where etcd keeps any. The quota counts the kept versions,
//     so compaction alone brings a member under it; Defragment then gives the backend's
//     freed pages back to the file system, without stopping reads and writes as etcd's does.
//   - Snapshot streams ember's backup format framed as etcd's (padded to 512 bytes, then a
//     SHA-256), which etcdctl accepts; Restore turns it into an ember data dir. HashKV hashes
//     are comparable between ember members only.
//   - Requiring a leader (clientv3.WithRequireLeader) refuses every request, and every stream
//     when it opens, while the member knows no leader, as etcd. A watch stream then ends with
//     "no leader" when one of its watches does, after three election timeouts without one; a
//     stream with no watch open is not ended (clientv3 closes those itself), and neither is a
//     lease keepalive or snapshot stream (etcd ends them too; ember's keepalives fail without a
//     leader anyway).
//   - Authentication is etcd's (users, roles, key-range permissions, root, auth enable and
//     disable, replicated through the store's log; passwords hashed with bcrypt at
//     WithBcryptCost), with simple tokens only (no JWT, no client-certificate CN users): tokens
//     are local to the member that issued them, as etcd's simple tokens, and void after
//     WithTokenTTL unused. Permissions are checked against the member's applied auth state
//     before a request is served; a write carries the auth revision it was authorized at and
//     is refused at apply ("revision of auth store is old") if the auth state changed since,
//     as etcd refuses it. The in-process ember API, and NewClient, are not authenticated:
//     auth applies to the gateway's network clients only. A gateway serving a namespace
//     (ember.Namespace) checks permissions on the store's keys, prefix included, as etcd
//     checks the keys a grpc-proxy --namespace forwards; all namespaces of a store share its
//     users and roles.
//   - A progress request is answered per watch, with each watch's ID, once the watch has
//     delivered everything up to the revision it reports; etcd sends one response with watch
//     ID -1, which clientv3 delivers the same way.
package etcdapi
