// Package mvcc is ember's revisioned state: every version of every key, the leases and the
// dedup table of request IDs, and the rules that change them. It has no goroutines, no locks
// and no raft: the root package's fsm applies the raft log through an [Applier], serializes
// every writer, and hands out read views ([State.Clone], O(1), copy-on-write).
//
// # Following a Put
//
// A Put reaches [Applier.Apply] as an encoded wire.Command. Apply answers a retried request ID
// from the dedup table; otherwise [ValidateTxn] checks it, [State.ApplyTxn] evaluates every
// compare against the state before the transaction, checks the chosen branches (leases exist,
// read revisions in the window), then writes each change at the next revision and returns them
// as [Event]s, which the fsm hands to the watch hub. [State.Compact] only moves the compaction
// revision; [State.CompactStep] removes the superseded versions a bounded batch at a time.
//
// # Files
//
//	state.go     State, Record, KeyRange; reads (Scan, RangeRecords, ReadTxn) and writes (ApplyTxn)
//	keyindex.go  the key index: a record per key, listing its older versions
//	changes.go   the versions in revision order (watch catch-up, hashes)
//	apply.go     Applier: commands of the raft log, the dedup window and its byte budget
//	validate.go  the stateless rules of a transaction
//	compact.go   compaction in bounded steps
//	lease.go     leases and the keys attached to them
//	dedup.go     the dedup table's storage
//	hash.go      HashKV's hash
//	snapshot.go  the snapshot stream format (raft snapshots and backups)
//	backend.go   the backend (state.db): batches, read views, Load, streams
//	pages.go     lookups of stored values in the backend's pages (pageReader)
//	prefetch.go  the backend file read into the page cache while Load walks it
//
// Records, leases and dedup entries are shared between the live state and its clones: they are
// never changed in place, only replaced.
package mvcc
