package concurrency_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/concurrency"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openStore opens an in-memory single node with short raft timeouts, so that it is ready
// quickly and lease TTLs may be short.
func openStore(t testing.TB) *ember.Store {
	t.Helper()
	s, err := ember.Open("",
		ember.WithElectionTimeout(100*time.Millisecond),
		ember.WithHeartbeatTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.WaitReady(testCtx(t)); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	return s
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newSession starts a session that is closed when the test ends.
func newSession(t testing.TB, s *ember.Store, opts ...concurrency.SessionOption) *concurrency.Session {
	t.Helper()
	sess, err := concurrency.NewSession(s, opts...)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

// keyOf is the key session sess queues under in a Mutex or Election on pfx.
func keyOf(pfx string, sess *concurrency.Session) string {
	return fmt.Sprintf("%s/%x", pfx, int64(sess.Lease()))
}

// waitForKeys waits until exactly n keys exist under the mutex or election prefix pfx, that is
// until n contenders have queued.
func waitForKeys(t testing.TB, s *ember.Store, pfx string, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := s.Get(testCtx(t), pfx+"/", ember.WithPrefix(), ember.WithCountOnly())
		if err != nil {
			t.Fatalf("Get(%q): %v", pfx, err)
		}
		if resp.Count == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys under %q, want %d", resp.Count, pfx, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func exists(t testing.TB, s *ember.Store, key string) bool {
	t.Helper()
	resp, err := s.Get(testCtx(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return len(resp.Kvs) > 0
}

func value(t testing.TB, s *ember.Store, key string) string {
	t.Helper()
	resp, err := s.Get(testCtx(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

func put(t testing.TB, s *ember.Store, key, val string) {
	t.Helper()
	if _, err := s.Put(testCtx(t), key, val); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

// guardedPut writes key only if cmp holds, and reports whether it did.
func guardedPut(t testing.TB, s *ember.Store, cmp ember.Cmp, key string) bool {
	t.Helper()
	resp, err := s.Txn(testCtx(t)).If(cmp).Then(ember.OpPut(key, "x")).Commit()
	if err != nil {
		t.Fatalf("guarded put: %v", err)
	}
	return resp.Succeeded
}

// recv waits for the result of a call running in another goroutine.
func recv(t testing.TB, what string, c <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(within):
		t.Fatalf("%s did not return within %v", what, within)
		return nil
	}
}

// notYet fails the test if a call running in another goroutine has returned.
func notYet(t testing.TB, what string, c <-chan error) {
	t.Helper()
	select {
	case err := <-c:
		t.Fatalf("%s returned early: %v", what, err)
	case <-time.After(100 * time.Millisecond):
	}
}
