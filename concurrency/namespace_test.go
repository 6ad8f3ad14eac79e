package concurrency_test

import (
	"context"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/concurrency"
)

// Locks of the same name in two namespaces are different locks; a lock's key, IsOwner and
// fencing all live inside its namespace.
func TestNamespace_Mutex(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	a, b := ember.Namespace(s, "a/"), ember.Namespace(s, "b/")
	sa, sb, sa2 := newSession(t, a), newSession(t, b), newSession(t, a)
	if sa.Store() != a {
		t.Fatal("session's Store is not the namespace it was made on")
	}
	ma, mb := concurrency.NewMutex(sa, "lock"), concurrency.NewMutex(sb, "lock")
	if err := ma.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mb.TryLock(ctx); err != nil {
		t.Fatalf("the same lock name in another namespace: %v", err)
	}
	if err := concurrency.NewMutex(sa2, "lock").TryLock(ctx); err != concurrency.ErrLocked {
		t.Fatalf("second holder in the same namespace: %v, want ErrLocked", err)
	}
	if k := ma.Key(); k != keyOf("lock", sa) {
		t.Fatalf("lock key %q, want %q inside the namespace", k, keyOf("lock", sa))
	}
	if !exists(t, s, "a/"+ma.Key()) || !exists(t, s, "b/"+mb.Key()) {
		t.Fatal("lock keys are not under their namespaces in the store")
	}
	if !guardedPut(t, a, ma.IsOwner(), "guarded") || value(t, s, "a/guarded") != "x" {
		t.Fatal("a write guarded by IsOwner in the namespace did not happen")
	}
	if err := ma.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if guardedPut(t, a, ma.IsOwner(), "guarded2") {
		t.Fatal("IsOwner held after Unlock")
	}
}

// An election in a namespace: the leader, its key and Observe's responses are all in the
// namespace's terms; a campaign of the same name elsewhere does not compete.
func TestNamespace_Election(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	a := ember.Namespace(s, "a/")
	e1 := concurrency.NewElection(newSession(t, a), "elect")
	e2 := concurrency.NewElection(newSession(t, a), "elect")
	other := concurrency.NewElection(newSession(t, ember.Namespace(s, "b/")), "elect")

	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	obs := e2.Observe(octx)
	if err := e1.Campaign(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	if err := other.Campaign(ctx, "elsewhere"); err != nil {
		t.Fatalf("campaign in another namespace: %v", err)
	}
	won := make(chan error, 1)
	go func() { won <- e2.Campaign(ctx, "two") }()
	notYet(t, "second campaign in the namespace", won)

	l, err := e2.Leader(ctx)
	if err != nil || string(l.Kvs[0].Key) != e1.Key() || string(l.Kvs[0].Value) != "one" {
		t.Fatalf("Leader: %+v, %v; want key %q", l, err, e1.Key())
	}
	select {
	case r := <-obs:
		if string(r.Kvs[0].Key) != e1.Key() || string(r.Kvs[0].Value) != "one" {
			t.Fatalf("observed %q=%q", r.Kvs[0].Key, r.Kvs[0].Value)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Observe sent nothing")
	}
	if err := e1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, "second campaign", won, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-obs:
		if string(r.Kvs[0].Key) != e2.Key() || string(r.Kvs[0].Value) != "two" {
			t.Fatalf("observed %q=%q after the resign", r.Kvs[0].Key, r.Kvs[0].Value)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Observe missed the new leader")
	}
}

// STM reads and writes the namespace's keys.
func TestNamespace_STM(t *testing.T) {
	s := openStore(t)
	a := ember.Namespace(s, "a/")
	put(t, s, "n", "outside")
	put(t, a, "n", "1")
	if _, err := concurrency.NewSTM(a, func(stm concurrency.STM) error {
		stm.Put("n", stm.Get("n")+"+1")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if v := value(t, s, "a/n"); v != "1+1" {
		t.Fatalf("a/n = %q, want 1+1", v)
	}
	if v := value(t, s, "n"); v != "outside" {
		t.Fatalf("n outside the namespace = %q", v)
	}
}
