// Package crash runs ember members as separate processes, so that tests can SIGKILL them and
// restart them from their data dirs: goal G4, crash durability, of RELIABILITY_NOTES.md §8.
//
// A member process is the test binary itself, re-executed with -test.run=^TestHelperMember$
// and the member's MemberConfig as JSON in the EMBER_CRASH_MEMBER environment variable; the
// test binary's TestHelperMember calls HelperMember. The member opens a real data dir, joins
// its peers on loopback, and serves a small HTTP control API on a second loopback port, through
// which the parent test writes, reads and inspects it:
//
//	PUT /kv?key=K&value=V  put; answers {"revision": R} once the write is acknowledged
//	GET /kv?key=K          linearizable read of K
//	GET /kv?prefix=P       linearizable range read of every key under P
//	GET /status            the member's revision, applied index, raft term and leader
//	GET /hash?rev=R        Store.HashKV at revision R
//	GET /ready             200 once Store.WaitReady returns
//
// A non-2xx answer carries {"error": "..."}: the request failed, or its outcome is unknown.
//
// The process-management side (Cluster, Member) needs Unix process groups.
package crash
