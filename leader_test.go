package ember

import (
	"runtime"
	"testing"
)

// LeaderChanges has no unsubscribe, so every call used to keep its channel for the life of the
// store. A host that asks for a channel per request and drops it must not grow the store.
func TestStore_LeaderChanges_DroppedChannelsAreReleased(t *testing.T) {
	s := openMem(t)
	kept := s.LeaderChanges()
	for range 10_000 {
		s.LeaderChanges()
	}
	runtime.GC()
	if n := s.leaderSubs.sweep(); n > 10 {
		t.Fatalf("%d subscriptions after 10000 dropped channels and a GC, want the 1 held (plus stragglers)", n)
	}
	// The held subscription is still served.
	<-kept
	s.leaderSubs.publish(LeaderChange{ID: "x", Term: 99})
	if lc := <-kept; lc.ID != "x" || lc.Term != 99 {
		t.Fatalf("held subscription got %+v", lc)
	}
	s.Close()
	if _, ok := <-kept; ok {
		t.Fatal("subscription not closed by Close")
	}
	if _, ok := <-s.LeaderChanges(); ok {
		t.Fatal("LeaderChanges after Close returned an open channel")
	}
}

// Without any leader change to sweep them, subscribing sweeps often enough that the dropped
// subscriptions stay within a constant factor of the live ones.
func TestStore_LeaderChanges_SubscribingBoundsDeadEntries(t *testing.T) {
	s := openMem(t)
	var held []<-chan LeaderChange
	for i := range 5_000 {
		ch := s.LeaderChanges()
		if i%100 == 0 {
			held = append(held, ch)
		}
		if i%500 == 0 {
			runtime.GC()
		}
	}
	s.leaderSubs.mu.Lock()
	n := len(s.leaderSubs.subs)
	s.leaderSubs.mu.Unlock()
	if limit := 2*max(len(held), minLeaderSubsSweep) + 500; n > limit {
		t.Fatalf("%d subscriptions kept for %d held, want at most %d", n, len(held), limit)
	}
	runtime.KeepAlive(held)
}

// A subscriber that never reads holds at most the buffer, and the newest change is in it.
func TestStore_LeaderChanges_UnreadSubscriberKeepsLatest(t *testing.T) {
	s := openMem(t)
	ch := s.LeaderChanges()
	for term := uint64(1); term <= 1000; term++ {
		s.leaderSubs.publish(LeaderChange{ID: "n", Term: term})
	}
	if len(ch) > leaderChangesBuffer {
		t.Fatalf("unread subscription holds %d changes", len(ch))
	}
	var last LeaderChange
	for len(ch) > 0 {
		last = <-ch
	}
	if last.Term != 1000 {
		t.Fatalf("newest change held is term %d, want 1000", last.Term)
	}
}
