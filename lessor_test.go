package ember

import (
	"context"
	"testing"
	"time"
)

// leaderLessor returns a lessor that believes it leads, on a Store that runs no raft, holding
// grants for the given TTLs (lease IDs 1..n). Its loop does not run and its store counts as
// closing, so it starts no revokes: tests drive it directly.
func leaderLessor(t testing.TB, ttls ...int64) *lessor {
	t.Helper()
	l := newLessor(&Store{core: &core{closing: true}})
	l.promote(context.Background())
	changes := make([]leaseChange, len(ttls))
	for i, ttl := range ttls {
		changes[i] = leaseChange{id: int64(i + 1), ttl: ttl}
	}
	l.observe(changes)
	return l
}

// checkExpiryHeap fails unless the heap holds every known lease exactly once, at its index.
func checkExpiryHeap(t testing.TB, l *lessor) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.expiry) != len(l.known) {
		t.Fatalf("expiry heap holds %d entries for %d leases", len(l.expiry), len(l.known))
	}
	for i, lc := range l.expiry {
		if l.known[lc.id] != lc || lc.heapIdx != i {
			t.Fatalf("expiry heap entry %d is lease %d with index %d", i, lc.id, lc.heapIdx)
		}
	}
}

// Every renewal used to push another heap entry, and the stale ones below a live deadline were
// only dropped when they reached the top: a long lease renewed under a shorter one grew the
// heap by one entry per keepalive for as long as the shorter one lived.
func TestLessor_RenewalsDoNotGrowExpiryHeap(t *testing.T) {
	l := leaderLessor(t, 60, 600)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // renew extends the deadline before it waits for the checkpoint; nothing writes one here
	for range 10_000 {
		if _, err := l.renew(ctx, 2); err != context.Canceled {
			t.Fatalf("renew: %v", err)
		}
	}
	checkExpiryHeap(t, l)
	l.mu.Lock()
	first := l.expiry[0].id
	l.mu.Unlock()
	if first != 1 {
		t.Fatalf("lease %d expires first, want the 60 s lease 1", first)
	}
	l.observe([]leaseChange{{id: 1, revoked: true}})
	checkExpiryHeap(t, l)
}

// An expired lease stays in the heap at its revoke retry time, once.
func TestLessor_ExpiredLeaseRetriesInPlace(t *testing.T) {
	l := leaderLessor(t, 600, 600)
	l.mu.Lock()
	l.known[1].deadline = time.Now().Add(-time.Second)
	l.schedule(l.known[1])
	l.mu.Unlock()
	sem := make(chan struct{}, maxRevokesInFlight)
	l.expireDue(sem)
	l.expireDue(sem)
	checkExpiryHeap(t, l)
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc := l.known[1]; !lc.expired || l.expiry[0] != lc {
		t.Fatalf("expired lease 1: expired=%v, heap top is lease %d", lc.expired, l.expiry[0].id)
	}
}

// The periodic checkpoint scan runs every second under the lock the apply path waits for. It
// used to walk every lease; it now visits the leases due a checkpoint and stops at the first one
// checkpointed recently.
func TestLessor_CheckpointScanVisitsOnlyDueLeases(t *testing.T) {
	const n = 10_000
	ttls := make([]int64, n)
	for i := range ttls {
		ttls[i] = 600
	}
	l := leaderLessor(t, ttls...)
	// Leases 1..3 were granted long ago, 2 has been checkpointed since (moving it to the back),
	// and 3 was renewed: it goes out with the renewal batch, not twice.
	l.mu.Lock()
	for id := int64(1); id <= 3; id++ {
		l.known[id].at = time.Now().Add(-2 * checkpointEvery)
	}
	l.mu.Unlock()
	l.observe([]leaseChange{{id: 2, checkpoint: true, remainingMs: 300_000}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l.renew(ctx, 3)

	before := l.scanned
	b, cps := l.takeCheckpoint(true)
	visited := l.scanned - before
	if b == nil || len(b.ids) != 1 || !b.ids[3] {
		t.Fatalf("renewal batch %+v, want lease 3", b)
	}
	got := map[int64]bool{}
	for _, cp := range cps {
		if got[cp.ID] {
			t.Fatalf("lease %d checkpointed twice in one entry", cp.ID)
		}
		got[cp.ID] = true
	}
	if len(got) != 2 || !got[1] || !got[3] {
		t.Fatalf("checkpointed %v, want leases 1 (due) and 3 (renewed)", got)
	}
	if visited > 3 {
		t.Fatalf("the periodic scan visited %d of %d leases to find 1 due", visited, n)
	}

	// Once that checkpoint is applied nothing is due: the scan costs one look.
	l.observe([]leaseChange{{id: 1, checkpoint: true, remainingMs: 1}, {id: 3, checkpoint: true, remainingMs: 1}})
	before = l.scanned
	if b, cps := l.takeCheckpoint(true); b != nil || len(cps) != 0 {
		t.Fatalf("second checkpoint: batch %+v, %d checkpoints", b, len(cps))
	}
	if visited := l.scanned - before; visited > 1 {
		t.Fatalf("an idle scan visited %d of %d leases", visited, n)
	}
}

// BenchmarkLessor_Renew measures one renewal's bookkeeping (deadline and heap) among 10k leases.
func BenchmarkLessor_Renew(b *testing.B) {
	ttls := make([]int64, 10_000)
	for i := range ttls {
		ttls[i] = 600
	}
	l := leaderLessor(b, ttls...)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.ResetTimer()
	for i := range b.N {
		l.renew(ctx, int64(i%len(ttls))+1)
		if i%1000 == 999 {
			l.takeCheckpoint(false) // drop the batch, as the lessor's loop would
		}
	}
}

// BenchmarkLessor_PeriodicCheckpointScan measures the once-a-second scan among 10k leases of
// which none is due: the time the apply path may wait for the lessor's lock.
func BenchmarkLessor_PeriodicCheckpointScan(b *testing.B) {
	ttls := make([]int64, 10_000)
	for i := range ttls {
		ttls[i] = 600
	}
	l := leaderLessor(b, ttls...)
	b.ResetTimer()
	for range b.N {
		l.takeCheckpoint(true)
	}
}
