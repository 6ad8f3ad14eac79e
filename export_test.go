package ember

import "github.com/ember-kv/ember/internal/mvcc"

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
