package ember

import (
	"context"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// Internal sizes that tests in package ember_test (the long-run memory test) watch.

// LeaseHeapLen returns how many entries the lease expiry heap holds (0 on a follower).
func LeaseHeapLen(s *Store) int {
	s.lessor.mu.Lock()
	defer s.lessor.mu.Unlock()
	return len(s.lessor.expiry)
}

// LeaderSubscriptions drops the collected LeaderChanges subscriptions and returns how many
// remain.
func LeaderSubscriptions(s *Store) int { return s.leaderSubs.sweep() }

// DedupWindow is how many log entries a request ID is remembered for: each member's dedup table
// grows until its log has advanced this far past the start, then stays that size.
const DedupWindow = mvcc.DedupWindow

// TakeSnapshot makes s take a raft snapshot now, which truncates its log to the trailing logs.
func TakeSnapshot(s *Store) error { return s.raft.Snapshot().Error() }

// DivergeState applies a put of key to s's state machine alone, outside the log, as a member
// whose state was damaged: its history then differs from the other members' from the next
// revision on. For the periodic hash check's tests.
func DivergeState(s *Store, key, value string) {
	cmd := &wire.Command{Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{{Kind: wire.OpPut, Key: []byte(key), Value: []byte(value)}}}}
	s.fsm.ApplyBatch([]*raft.Log{{Index: s.fsm.applied.Load(), Type: raft.LogCommand, Data: cmd.Marshal(nil)}})
	s.fsm.current.Store(nil) // the applied index did not move: drop the read view it keys
}

// CorruptCheck runs one periodic hash check on s, which must lead.
func CorruptCheck(ctx context.Context, s *Store) error { return s.corruptCheck(ctx) }

// ForwardInFlight is how many requests carrying writes a follower keeps in flight to the leader
// before the next writes wait to go as a batch.
const ForwardInFlight = forwardInFlight

// TrailingLogs is the TrailingLogs raft truncates s's log to at its next snapshot.
func TrailingLogs(s *Store) uint64 { return s.raft.ReloadableConfig().TrailingLogs }
