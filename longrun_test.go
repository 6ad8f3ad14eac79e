package ember_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// A long-running cluster must not grow: 10k leases renewed over and over, a watcher whose
// channel is never read while writes go on, leadership moving every few seconds, and
// LeaderChanges subscribers that never read (some held, most dropped). After a warm-up the live
// heap (after a GC) stays within 25% plus a small constant of its first sample, and the
// structures that used to grow per event stay bounded by what is live: the lease expiry heap by
// the leases, the leader-change subscriptions by the channels held.
//
// Each member remembers the request IDs of the last DedupWindow (100k) log entries: that table
// fills at the start of a member's life, by design, and outweighs anything else here. The CI run
// (30 s) writes few enough entries for its filling to stay within the allowance; the soak run
// (EMBER_SOAK=1: 10 minutes; EMBER_LONGRUN_DURATION overrides either) first writes that many
// entries, so that what it measures is the steady state.
func TestStore_LongRun_MemoryStaysFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("long run")
	}
	duration := 30 * time.Second
	soak := os.Getenv("EMBER_SOAK") == "1"
	if soak {
		duration = 10 * time.Minute
	}
	if d, err := time.ParseDuration(os.Getenv("EMBER_LONGRUN_DURATION")); err == nil {
		duration = d
	}
	const (
		leases      = 10_000
		renewers    = 4
		heldSubs    = 8 // per member, never read
		droppedSubs = 200
		slackBytes  = 8 << 20
	)
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, duration+5*time.Minute)
	members := c.Members()
	store := func(i int) *ember.Store { return members[i%len(members)].Store() }

	if soak {
		fillDedupWindow(t, ctx, c.Leader().Store())
	}
	ids := grantLeases(t, ctx, c.Leader().Store(), leases)

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var renewals, renewErrs, puts atomic.Int64
	spawn := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn()
		}()
	}
	for r := range renewers {
		spawn(func() {
			for i := r; runCtx.Err() == nil; i += renewers {
				if _, err := store(i).KeepAliveOnce(runCtx, ids[i%leases]); err != nil {
					renewErrs.Add(1)
					continue
				}
				renewals.Add(1)
			}
		})
	}
	// A few streaming keepalives whose answers nobody reads.
	for i := range 16 {
		if _, err := store(i).KeepAlive(runCtx, ids[i]); err != nil {
			t.Fatal(err)
		}
	}
	// A watcher that is never read, on a prefix the writer below keeps changing.
	_ = c.Leader().Store().Watch(runCtx, "w/", ember.WithPrefix())
	spawn(func() {
		val := string(make([]byte, 256))
		for i := 0; runCtx.Err() == nil; i++ {
			if _, err := store(i).Put(runCtx, fmt.Sprintf("w/%d", i%100), val); err == nil {
				puts.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	// Compaction keeps the MVCC history bounded, as a host's auto-compaction would.
	spawn(func() {
		for runCtx.Err() == nil {
			sleepCtx(runCtx, 2*time.Second)
			if r, err := store(0).Get(runCtx, "w/0"); err == nil && r.Header.Revision > 100 {
				store(0).Compact(runCtx, r.Header.Revision-100)
			}
		}
	})
	var transfers atomic.Int64
	spawn(func() {
		for i := 0; runCtx.Err() == nil; i++ {
			sleepCtx(runCtx, 3*time.Second)
			leader, _ := store(0).Leader()
			to := members[(i+1)%len(members)].ID
			if to == leader {
				to = members[(i+2)%len(members)].ID
			}
			if err := store(i).TransferLeadership(runCtx, to); err == nil {
				transfers.Add(1)
			}
		}
	})
	var held []<-chan ember.LeaderChange
	for _, m := range members {
		for range heldSubs {
			held = append(held, m.Store().LeaderChanges())
		}
	}

	warmUp := duration / 4
	sleepCtx(ctx, warmUp)
	type sample struct {
		at                time.Duration
		heap              uint64
		leaseHeap, subs   int
		goroutines        int
		renewals, renewEr int64
	}
	// Held ones, plus what subscribing leaves before a sweep (twice the live ones or 64).
	subsLimit := 2*max(heldSubs, 64) + droppedSubs
	var samples []sample
	start := time.Now()
	for {
		for _, m := range members {
			for range droppedSubs {
				m.Store().LeaderChanges()
			}
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s := sample{at: time.Since(start), heap: ms.HeapAlloc, goroutines: runtime.NumGoroutine(),
			renewals: renewals.Load(), renewEr: renewErrs.Load()}
		for _, m := range members {
			s.leaseHeap = max(s.leaseHeap, ember.LeaseHeapLen(m.Store()))
			s.subs = max(s.subs, releasedSubscriptions(m.Store(), subsLimit))
		}
		samples = append(samples, s)
		var raftIndex uint64
		if st, err := members[0].Store().Status(ctx); err == nil {
			raftIndex = st.RaftIndex
		}
		t.Logf("t=%v heap=%.1f MiB leaseHeap=%d leaderSubs=%d goroutines=%d renewals=%d (errors %d) puts=%d transfers=%d raftIndex=%d",
			s.at.Round(time.Second), float64(s.heap)/(1<<20), s.leaseHeap, s.subs, s.goroutines, s.renewals, s.renewEr, puts.Load(), transfers.Load(), raftIndex)
		if s.leaseHeap > leases {
			t.Errorf("lease expiry heap holds %d entries for %d leases", s.leaseHeap, leases)
		}
		if s.subs > subsLimit {
			t.Errorf("%d leader-change subscriptions on one member, %d held", s.subs, heldSubs)
		}
		if time.Since(start) >= duration-warmUp {
			break
		}
		sleepCtx(ctx, max((duration-warmUp)/10, time.Second))
	}
	stop()
	wg.Wait()
	runtime.KeepAlive(held)

	first, last := samples[0], samples[len(samples)-1]
	if limit := first.heap + first.heap/4 + slackBytes; last.heap > limit {
		t.Errorf("live heap grew from %.1f MiB to %.1f MiB (limit %.1f MiB)",
			float64(first.heap)/(1<<20), float64(last.heap)/(1<<20), float64(limit)/(1<<20))
	}
	if last.renewals-first.renewals < 100 || transfers.Load() == 0 || puts.Load() == 0 {
		t.Errorf("the load did not run: %d renewals after warm-up, %d transfers, %d puts",
			last.renewals-first.renewals, transfers.Load(), puts.Load())
	}
}

// fillDedupWindow writes DedupWindow small entries through s, so that every member's table of
// remembered request IDs is as large as it gets, and compacts them away.
func fillDedupWindow(t *testing.T, ctx context.Context, s *ember.Store) {
	t.Helper()
	var n atomic.Int64
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n.Add(1) <= ember.DedupWindow && ctx.Err() == nil {
				s.Put(ctx, fmt.Sprintf("fill/%d", w), "x")
			}
		}()
	}
	wg.Wait()
	r, err := s.Put(ctx, "fill/done", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(ctx, r.Header.Revision); err != nil {
		t.Fatal(err)
	}
}

// grantLeases grants n leases of 10 minutes on s, a few at a time.
func grantLeases(t *testing.T, ctx context.Context, s *ember.Store, n int) []ember.LeaseID {
	t.Helper()
	ids := make([]ember.LeaseID, n)
	var wg sync.WaitGroup
	var failed atomic.Value
	const workers = 32
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				g, err := s.Grant(ctx, 600)
				if err != nil {
					failed.Store(err)
					return
				}
				ids[i] = g.ID
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	return ids
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// releasedSubscriptions sweeps s's LeaderChanges subscriptions and returns how many remain,
// collecting again (up to three times) while more than limit do: a channel that a concurrent
// publish held strongly while the collector was marking survives that cycle, not the next.
func releasedSubscriptions(s *ember.Store, limit int) int {
	n := ember.LeaderSubscriptions(s)
	for i := 0; i < 3 && n > limit; i++ {
		runtime.GC()
		n = ember.LeaderSubscriptions(s)
	}
	return n
}
