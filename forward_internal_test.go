package ember

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ember-kv/ember/internal/wire"
)

// legacyLeader stands in for the peer client of a follower whose leader runs an earlier version:
// the request goes to s's own handler (s leads), except that mForwardBatch gets the answer an
// earlier version's dispatchRPC gives a method it does not know. Single forwards wait for
// release, so that the writes behind them queue up.
type legacyLeader struct {
	s       *Store
	release chan struct{}
	batches atomic.Int32
	singles atomic.Int32
}

func (l *legacyLeader) call(ctx context.Context, _ string, method uint8, req []byte) ([]byte, error) {
	if method == mForwardBatch {
		l.batches.Add(1)
		return nil, fromPeer(peerError(fmt.Errorf("%w: unknown method %d", wire.ErrMalformed, method)))
	}
	l.singles.Add(1)
	select {
	case <-l.release:
	case <-ctx.Done(): // a failed test's cleanup: the store's Close waits for this call
		return nil, fromPeer(peerError(ctx.Err()))
	}
	resp, err := l.s.dispatchRPC(ctx, method, req)
	return resp, fromPeer(peerError(err))
}

// TestForwarder_LegacyLeader: a leader that does not know mForwardBatch answers it as an unknown
// method; the writes of the batch then go one by one and each gets its own result, and later
// batches to the same leader in the same term are not tried again.
func TestForwarder_LegacyLeader(t *testing.T) {
	s := emberTestStore(t)
	ctx := emberTestCtx(t)
	l := &legacyLeader{s: s, release: make(chan struct{})}
	s.fwd.call = l.call

	forwardAll := func(prefix string, n int) {
		t.Helper()
		revs := make([]int64, n)
		singles0 := l.singles.Load()
		var wg sync.WaitGroup
		for i := range n {
			cmd := &wire.Command{ID: s.nextID(), Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{
				{Kind: wire.OpPut, Key: fmt.Appendf(nil, "%s/%d", prefix, i), Value: []byte("v")}}}}
			wg.Go(func() {
				resp, err := s.fwd.forward(ctx, "old-leader:1", cmd.Marshal(nil))
				if err != nil {
					t.Errorf("forward %d: %v", i, err)
					return
				}
				res, err := wire.UnmarshalResult(resp)
				if err != nil || res.Code != wire.CodeOK {
					t.Errorf("forward %d: result %+v, %v", i, res, err)
					return
				}
				revs[i] = res.Revision
			})
		}
		for deadline := time.Now().Add(10 * time.Second); l.singles.Load() != singles0+forwardInFlight || waiting(s.fwd) != n-forwardInFlight; {
			if time.Now().After(deadline) {
				t.Fatalf("%d single forwards and %d writes queued, want %d and %d", l.singles.Load()-singles0, waiting(s.fwd), forwardInFlight, n-forwardInFlight)
			}
			time.Sleep(time.Millisecond)
		}
		close(l.release)
		wg.Wait()
		seen := map[int64]bool{}
		for i, r := range revs {
			if r == 0 || seen[r] {
				t.Fatalf("write %d answered revision %d; revisions %v", i, r, revs)
			}
			seen[r] = true
		}
	}

	const n = 20
	forwardAll("a", n)
	if b, one := l.batches.Load(), l.singles.Load(); b != 1 || one != n {
		t.Fatalf("%d batches and %d single forwards, want 1 batch (refused) and %d singles", b, one, n)
	}
	// The sender of round a's last batch may still hold its in-flight slot after its callers
	// have their answers; round b's counts assume every slot free.
	for deadline := time.Now().Add(10 * time.Second); !idle(s.fwd); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the forwarder still sends round a's writes")
		}
	}
	l.release = make(chan struct{})
	forwardAll("b", n)
	if b, one := l.batches.Load(), l.singles.Load(); b != 1 || one != 2*n {
		t.Fatalf("%d batches and %d single forwards in all, want the legacy leader remembered: 1 and %d", b, one, 2*n)
	}
}

// idle reports whether f has no request in flight and no write waiting.
func idle(f *forwarder) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, q := range f.queues {
		if q.inFlight > 0 || len(q.pending) > 0 {
			return false
		}
	}
	return true
}

// waiting returns how many writes wait in f's queues.
func waiting(f *forwarder) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, q := range f.queues {
		n += len(q.pending)
	}
	return n
}
