package readindex

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A caller that arrives while a fetch runs must wait for the next one.
func TestBatcher_NeverJoinsARunningFetch(t *testing.T) {
	var calls atomic.Uint64
	release := make(chan struct{})
	b := New(func(ctx context.Context) (uint64, error) {
		n := calls.Add(1)
		if n == 1 {
			<-release
		}
		return n, nil
	})
	first := make(chan uint64)
	go func() {
		idx, _ := b.Get(context.Background())
		first <- idx
	}()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	second := make(chan uint64)
	go func() {
		idx, _ := b.Get(context.Background())
		second <- idx
	}()
	time.Sleep(20 * time.Millisecond)
	close(release)
	if got := <-first; got != 1 {
		t.Fatalf("first caller got index from fetch %d, want 1", got)
	}
	if got := <-second; got != 2 {
		t.Fatalf("caller arriving during fetch 1 got fetch %d, want 2", got)
	}
}

func TestBatcher_SharesOneFetchAmongWaiters(t *testing.T) {
	var calls atomic.Uint64
	gate := make(chan struct{})
	b := New(func(ctx context.Context) (uint64, error) {
		calls.Add(1)
		<-gate
		return 7, nil
	})
	// Occupy the batcher so the next callers all queue for the same round.
	go b.Get(context.Background())
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if idx, err := b.Get(context.Background()); err != nil || idx != 7 {
				t.Errorf("Get = %d, %v", idx, err)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	close(gate)
	wg.Wait()
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d fetches for 1 + 100 callers, want 2", n)
	}
}

func TestBatcher_ErrorsAndCancel(t *testing.T) {
	boom := errors.New("boom")
	b := New(func(ctx context.Context) (uint64, error) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
			return 0, boom
		}
	})
	if _, err := b.Get(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Get(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
}
