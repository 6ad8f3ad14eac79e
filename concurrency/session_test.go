package concurrency_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/concurrency"
)

func TestSession_DoneOnRevoke(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	// The store notices the revoke at the next renewal, a third of the TTL away.
	sess := newSession(t, s, concurrency.WithTTL(2))
	select {
	case <-sess.Done():
		t.Fatal("Done closed on a live session")
	default:
	}
	if _, err := s.Revoke(ctx, sess.Lease()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the lease was revoked")
	}
	if sess.Ctx().Err() == nil {
		t.Fatal("Ctx not cancelled when the session ended")
	}
}

func TestSession_CloseRevokes(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	sess, err := concurrency.NewSession(s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "/owned", "v", ember.WithLease(sess.Lease())); err != nil {
		t.Fatal(err)
	}
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	<-sess.Done()
	if exists(t, s, "/owned") {
		t.Fatal("Close left the lease's key")
	}
	if err := sess.Close(); !errors.Is(err, ember.ErrLeaseNotFound) {
		t.Fatalf("second Close: %v, want ErrLeaseNotFound", err)
	}
}

func TestSession_OrphanKeepsLease(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	sess := newSession(t, s)
	if _, err := s.Put(ctx, "/owned", "v", ember.WithLease(sess.Lease())); err != nil {
		t.Fatal(err)
	}
	sess.Orphan()
	<-sess.Done()
	if !exists(t, s, "/owned") {
		t.Fatal("Orphan deleted the lease's key")
	}
	ttl, err := s.TimeToLive(ctx, sess.Lease())
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("TimeToLive after Orphan: %+v, %v; want a live lease", ttl, err)
	}
}

func TestSession_KeepsLeaseAlive(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	sess := newSession(t, s, concurrency.WithTTL(1))
	ttl, err := s.TimeToLive(ctx, sess.Lease())
	if err != nil {
		t.Fatal(err)
	}
	// Outlive the granted TTL twice over: only keepalives can have saved the lease.
	time.Sleep(2*time.Duration(ttl.GrantedTTL)*time.Second + 200*time.Millisecond)
	select {
	case <-sess.Done():
		t.Fatal("session ended while kept alive")
	default:
	}
	if ttl, err := s.TimeToLive(ctx, sess.Lease()); err != nil || ttl.TTL <= 0 {
		t.Fatalf("TimeToLive: %+v, %v; want a live lease", ttl, err)
	}
}

func TestSession_Options(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	existing, err := s.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		opts      []concurrency.SessionOption
		wantLease ember.LeaseID // NoLease: a new lease
		wantGrant int64
	}{
		{"default TTL", nil, ember.NoLease, 60},
		{"WithTTL", []concurrency.SessionOption{concurrency.WithTTL(5)}, ember.NoLease, 5},
		{"WithTTL zero ignored", []concurrency.SessionOption{concurrency.WithTTL(0)}, ember.NoLease, 60},
		{"WithTTL negative ignored", []concurrency.SessionOption{concurrency.WithTTL(-3)}, ember.NoLease, 60},
		{"WithLease", []concurrency.SessionOption{concurrency.WithLease(existing.ID)}, existing.ID, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sess := newSession(t, s, tt.opts...)
			if tt.wantLease != ember.NoLease && sess.Lease() != tt.wantLease {
				t.Fatalf("Lease = %x, want %x", sess.Lease(), tt.wantLease)
			}
			if sess.Store() != s {
				t.Fatal("Store is not the store the session was made on")
			}
			ttl, err := s.TimeToLive(ctx, sess.Lease())
			if err != nil {
				t.Fatal(err)
			}
			if ttl.GrantedTTL != tt.wantGrant {
				t.Fatalf("granted TTL %d, want %d", ttl.GrantedTTL, tt.wantGrant)
			}
		})
	}
}

func TestSession_WithContext(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	sess := newSession(t, s, concurrency.WithContext(ctx))
	cancel()
	select {
	case <-sess.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the session's context was cancelled")
	}
	// The lease is not revoked, only no longer renewed.
	if ttl, err := s.TimeToLive(testCtx(t), sess.Lease()); err != nil || ttl.TTL <= 0 {
		t.Fatalf("TimeToLive: %+v, %v; want a live lease", ttl, err)
	}
}

func TestNewSession_UnknownLease(t *testing.T) {
	s := openStore(t)
	if _, err := concurrency.NewSession(s, concurrency.WithLease(ember.LeaseID(0x7e57))); !errors.Is(err, ember.ErrLeaseNotFound) {
		t.Fatalf("NewSession on an unknown lease: %v, want ErrLeaseNotFound", err)
	}
}
