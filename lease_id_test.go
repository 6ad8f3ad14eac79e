package ember_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// GrantWithID grants the lease the caller names, as etcd's LeaseGrantRequest.ID: negative IDs
// included, an ID in use refused with ErrLeaseExists, NoLease meaning "pick one".
func TestLease_GrantWithID(t *testing.T) {
	s := openMemStore(t)
	ctx := ctxFor(t, 10*time.Second)
	tests := []struct {
		name string
		id   ember.LeaseID
		ttl  int64
		err  error
	}{
		{name: "positive", id: 42, ttl: 60},
		{name: "negative", id: -9, ttl: 60},
		{name: "in use", id: 42, ttl: 30, err: ember.ErrLeaseExists},
		{name: "negative in use", id: -9, ttl: 60, err: ember.ErrLeaseExists},
		{name: "TTL too large", id: 43, ttl: 9_000_000_001, err: ember.ErrTTLTooLarge},
		{name: "store picks", id: ember.NoLease, ttl: 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := s.GrantWithID(ctx, tt.id, tt.ttl)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("GrantWithID(%d): %v, want %v", tt.id, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.id != ember.NoLease && r.ID != tt.id || tt.id == ember.NoLease && r.ID == ember.NoLease {
				t.Fatalf("granted ID %d, asked for %d", r.ID, tt.id)
			}
			ttl, err := s.TimeToLive(ctx, r.ID)
			if err != nil || ttl.GrantedTTL != tt.ttl {
				t.Fatalf("TimeToLive(%d): %+v, %v", r.ID, ttl, err)
			}
		})
	}
	// The first grant of 42 stands: the refused one did not change its TTL.
	if ttl, _ := s.TimeToLive(ctx, 42); ttl.GrantedTTL != 60 {
		t.Fatalf("lease 42 granted TTL %d after the refused grant, want 60", ttl.GrantedTTL)
	}
}

// Every member grants the same ID at once: one grant wins, the others get ErrLeaseExists, and
// every member ends with the one lease.
func TestLease_GrantWithID_ConcurrentDuplicates(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, 30*time.Second)
	var wg sync.WaitGroup
	errs := make([]error, 0, 3)
	var mu sync.Mutex
	for _, m := range c.Members() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Store().GrantWithID(ctx, 7, 60)
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ember.ErrLeaseExists):
			t.Fatalf("grant: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d grants of lease 7 succeeded, want 1 (%v)", won, errs)
	}
	for _, m := range c.Members() {
		r, err := m.Store().Leases(ctx)
		if err != nil || len(r.Leases) != 1 || r.Leases[0].ID != 7 {
			t.Fatalf("member %s leases: %+v, %v", m.ID, r, err)
		}
	}
}

// A negative lease and its keys survive a backup and restore (the snapshot format takes any
// lease ID but NoLease).
func TestLease_GrantWithID_NegativeSurvivesRestore(t *testing.T) {
	s := openMemStore(t)
	ctx := ctxFor(t, 20*time.Second)
	for _, id := range []ember.LeaseID{-9, -3, 5} {
		if _, err := s.GrantWithID(ctx, id, 600); err != nil {
			t.Fatal(err)
		}
	}
	s.Put(ctx, "k", "v", ember.WithLease(-9))
	var backup bytes.Buffer
	if err := s.Snapshot(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if err := ember.Restore(bytes.NewReader(backup.Bytes()), dir); err != nil {
		t.Fatal(err)
	}
	r, err := ember.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	g, err := r.Get(ctx, "k")
	if err != nil || len(g.Kvs) != 1 || g.Kvs[0].Lease != -9 {
		t.Fatalf("restored k: %+v, %v", g, err)
	}
	ttl, err := r.TimeToLive(ctx, -9, ember.WithAttachedKeys())
	if err != nil || ttl.GrantedTTL != 600 || len(ttl.Keys) != 1 {
		t.Fatalf("restored lease -9: %+v, %v", ttl, err)
	}
	if _, err := r.Revoke(ctx, -9); err != nil {
		t.Fatal(err)
	}
	if g, _ := r.Get(ctx, "k"); len(g.Kvs) != 0 {
		t.Fatal("revoking the restored negative lease left its key")
	}
}
