package ember_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/internal/writecheck"
)

// fwdWrite is the outcome of one Put a test made on a follower.
type fwdWrite struct {
	key, val string
	rev      int64
	err      error
}

// putAll puts n keys prefix/i concurrently through s, each on its own ctx from ctxOf, and
// returns each Put's outcome.
func putAll(s *ember.Store, prefix string, n int, ctxOf func(i int) context.Context, opts func(i int) []ember.OpOption) []fwdWrite {
	ws := make([]fwdWrite, n)
	var wg sync.WaitGroup
	for i := range ws {
		ws[i].key, ws[i].val = fmt.Sprintf("%s/%03d", prefix, i), fmt.Sprintf("v%d", i)
		wg.Go(func() {
			var o []ember.OpOption
			if opts != nil {
				o = opts(i)
			}
			p, err := s.Put(ctxOf(i), ws[i].key, ws[i].val, o...)
			if err == nil {
				ws[i].rev = p.Header.Revision
			}
			ws[i].err = err
		})
	}
	wg.Wait()
	return ws
}

// requireAppliedOnce checks, on s, that every write in ws that succeeded or whose outcome is
// unknown is stored with its own value, that each successful write's revision is its key's, and
// that the revision moved by exactly the number of those writes from rev0: none was applied twice.
func requireAppliedOnce(t *testing.T, s *ember.Store, rev0 int64, ws []fwdWrite) {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	applied := 0
	for _, w := range ws {
		if w.err != nil && writecheck.Classify(w.err) == writecheck.Definite {
			continue
		}
		applied++
		g, err := s.Get(ctx, w.key)
		if err != nil || len(g.Kvs) != 1 || string(g.Kvs[0].Value) != w.val {
			t.Fatalf("Get %s = %v, %v; want %q", w.key, g, err, w.val)
		}
		if w.err == nil && g.Kvs[0].ModRevision != w.rev {
			t.Fatalf("%s stored at revision %d, its Put answered %d", w.key, g.Kvs[0].ModRevision, w.rev)
		}
	}
	g, err := s.Get(ctx, "\x00")
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Header.Revision - rev0; got != int64(applied) {
		t.Fatalf("revision moved by %d for %d writes applied", got, applied)
	}
}

func currentRev(t *testing.T, s *ember.Store) int64 {
	t.Helper()
	g, err := s.Get(ctxFor(t, 10*time.Second), "\x00")
	if err != nil {
		t.Fatal(err)
	}
	return g.Header.Revision
}

// forwardRoundTrips is how many peer requests carrying writes the member behind reg sent to the
// leader: single forwards and batches.
func forwardRoundTrips(t *testing.T, reg prometheus.Gatherer) float64 {
	t.Helper()
	return metric(t, reg, "ember_forwarded_requests_total", "method", "write") +
		metric(t, reg, "ember_forwarded_requests_total", "method", "write_batch")
}

// TestStore_Forward_BatchedConcurrentWrites: many concurrent writes on a follower are each
// applied exactly once and each gets its own answer (a revision, or its own definite error), in
// fewer peer round trips than writes.
func TestStore_Forward_BatchedConcurrentWrites(t *testing.T) {
	c, regs := metricsCluster(t)
	l, f := c.Leader(), c.Followers()[0]
	// A slower link keeps a write in flight long enough for the next ones to gather.
	c.Network().SetFault(f.ID, l.ID, embertest.Fault{Delay: 5 * time.Millisecond})
	rev0 := currentRev(t, l.Store())
	rt0 := forwardRoundTrips(t, regs[f.ID])
	batches0 := metric(t, regs[f.ID], "ember_forwarded_requests_total", "method", "write_batch")

	const n = 200
	ctx := ctxFor(t, time.Minute)
	ws := putAll(f.Store(), "batch", n, func(int) context.Context { return ctx }, func(i int) []ember.OpOption {
		if i%10 == 0 {
			return []ember.OpOption{ember.WithLease(ember.LeaseID(1000 + i))} // no such lease
		}
		return nil
	})
	revs := map[int64]string{}
	for i, w := range ws {
		if i%10 == 0 {
			if !errors.Is(w.err, ember.ErrLeaseNotFound) {
				t.Fatalf("Put %s with a missing lease: %v, want ErrLeaseNotFound", w.key, w.err)
			}
			continue
		}
		if w.err != nil {
			t.Fatalf("Put %s: %v", w.key, w.err)
		}
		if other, dup := revs[w.rev]; dup {
			t.Fatalf("%s and %s both answered revision %d", w.key, other, w.rev)
		}
		revs[w.rev] = w.key
	}
	requireAppliedOnce(t, l.Store(), rev0, ws)

	rt := forwardRoundTrips(t, regs[f.ID]) - rt0
	batches := metric(t, regs[f.ID], "ember_forwarded_requests_total", "method", "write_batch") - batches0
	t.Logf("%d writes in %v peer round trips, %v of them batches", n, rt, batches)
	if batches < 1 || rt >= n/2 {
		t.Fatalf("%d writes took %v round trips (%v batches); want batches, and fewer than %d round trips", n, rt, batches, n/2)
	}
}

// inBatch starts lone writes on f, as many as f keeps in flight, that the link's fault keeps in
// flight, then, while they are, the writes of start, which queue behind them. It returns once
// f (whose metrics reg gathers) has sent a batch: the queued writes are on their way to the
// leader. The lone writes' outcomes come on the channel it returns.
func inBatch(t *testing.T, f *embertest.Member, reg prometheus.Gatherer, loneCtx context.Context, start func()) <-chan []fwdWrite {
	t.Helper()
	batches0 := metric(t, reg, "ember_forwarded_requests_total", "method", "write_batch")
	lone := make(chan []fwdWrite, 1)
	go func() {
		lone <- putAll(f.Store(), "lone", ember.ForwardInFlight, func(int) context.Context { return loneCtx }, nil)
	}()
	time.Sleep(50 * time.Millisecond)
	start()
	for deadline := time.Now().Add(30 * time.Second); metric(t, reg, "ember_forwarded_requests_total", "method", "write_batch") == batches0; {
		if time.Now().After(deadline) {
			t.Fatal("no batch sent")
		}
		time.Sleep(time.Millisecond)
	}
	return lone
}

// TestStore_Forward_BatchedReplyLost: when the leader's answers to a follower vanish, every write
// of a batch ends with an unknown outcome (ErrTimeout), and was applied; once the link heals, the
// retries with the same request IDs get each write's own result without applying any twice.
func TestStore_Forward_BatchedReplyLost(t *testing.T) {
	c, regs := metricsCluster(t)
	l, f := c.Leader(), c.Followers()[0]
	rev0 := currentRev(t, l.Store())
	c.Network().SetFault(f.ID, l.ID, embertest.Fault{LostReplies: true})

	// The callers give up while their batch is unanswered.
	const n = 20
	done := make(chan []fwdWrite, 1)
	lone := inBatch(t, f, regs[f.ID], ctxFor(t, time.Second), func() {
		go func() {
			done <- putAll(f.Store(), "lost", n, func(int) context.Context { return ctxFor(t, 3*time.Second) }, nil)
		}()
	})
	ws := append(<-done, <-lone...)
	for _, w := range ws {
		if writecheck.Classify(w.err) != writecheck.Unknown || !errors.Is(w.err, ember.ErrTimeout) {
			t.Fatalf("Put %s: %v; want an unknown outcome (ErrTimeout)", w.key, w.err)
		}
	}
	requireAppliedOnce(t, l.Store(), rev0, ws)

	// Now the callers wait through the loss. When the link heals, the connection that lost the
	// batch's answer closes, and the retries find the writes applied and get their results.
	rev1 := currentRev(t, l.Store())
	go func() {
		time.Sleep(time.Second)
		c.Network().SetFault(f.ID, l.ID, embertest.Fault{})
	}()
	lone = inBatch(t, f, regs[f.ID], ctxFor(t, 300*time.Millisecond), func() {
		go func() {
			done <- putAll(f.Store(), "healed", n, func(int) context.Context { return ctxFor(t, time.Minute) }, nil)
		}()
	})
	ws = <-done
	for _, w := range ws {
		if w.err != nil {
			t.Fatalf("Put %s across the healed loss: %v", w.key, w.err)
		}
	}
	requireAppliedOnce(t, l.Store(), rev1, append(ws, <-lone...))
}

// TestStore_Forward_BatchedCallerCancelled: a caller whose ctx ends while its write is in a batch
// in flight gets an unknown outcome at once; the batch goes on, and the other writes in it
// succeed.
func TestStore_Forward_BatchedCallerCancelled(t *testing.T) {
	c, regs := metricsCluster(t)
	l, f := c.Leader(), c.Followers()[0]
	rev0 := currentRev(t, l.Store())
	c.Network().SetFault(f.ID, l.ID, embertest.Fault{Delay: 300 * time.Millisecond})

	const n = 10
	victim, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx := ctxFor(t, time.Minute)
	done := make(chan []fwdWrite, 1)
	lone := inBatch(t, f, regs[f.ID], ctx, func() {
		go func() {
			done <- putAll(f.Store(), "cancel", n, func(i int) context.Context {
				if i == 0 {
					return victim
				}
				return ctx
			}, nil)
		}()
	})
	cancel() // the batch is on the slow link
	ws := <-done
	if err := ws[0].err; writecheck.Classify(err) != writecheck.Unknown || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Put: %v; want an unknown outcome wrapping context.Canceled", err)
	}
	ws = append(ws, <-lone...)
	for _, w := range ws[1:] {
		if w.err != nil {
			t.Fatalf("Put %s: %v", w.key, w.err)
		}
	}
	requireAppliedOnce(t, l.Store(), rev0, ws)
}

// TestStore_Forward_BatchedLeaderChange: a batch in flight when leadership moves, or when the
// leader stops, is retried on the next leader: every write succeeds with its own result and none
// is applied twice, whether the old leader refused the commands (not leader: never appended) or
// its answer was lost with the connection.
func TestStore_Forward_BatchedLeaderChange(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *embertest.Cluster, l, next *embertest.Member) error
	}{
		{"transfer", func(c *embertest.Cluster, l, next *embertest.Member) error {
			return l.Store().TransferLeadership(ctxFor(t, 10*time.Second), next.ID)
		}},
		{"leader stops", func(c *embertest.Cluster, l, _ *embertest.Member) error {
			c.Stop(l.ID)
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, regs := metricsCluster(t)
			l, fs := c.Leader(), c.Followers()
			f := fs[0]
			rev0 := currentRev(t, l.Store())
			c.Network().SetFault(f.ID, l.ID, embertest.Fault{Delay: 200 * time.Millisecond})

			const n = 20
			ctx := ctxFor(t, time.Minute)
			done := make(chan []fwdWrite, 1)
			lone := inBatch(t, f, regs[f.ID], ctx, func() {
				go func() {
					done <- putAll(f.Store(), "moved", n, func(int) context.Context { return ctx }, nil)
				}()
			})
			if err := tc.change(c, l, fs[1]); err != nil {
				t.Fatalf("leader change: %v", err)
			}
			ws := append(<-done, <-lone...)
			for _, w := range ws {
				if w.err != nil {
					t.Fatalf("Put %s across the leader change: %v", w.key, w.err)
				}
			}
			requireAppliedOnce(t, f.Store(), rev0, ws)
		})
	}
}
