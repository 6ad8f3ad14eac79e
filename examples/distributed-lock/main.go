// Command distributed-lock shows why a distributed lock needs fencing. Three workers, each on
// its own member of a three-member ember cluster, take turns on a concurrency.Mutex to write
// to a shared storage service. The storage remembers the highest fencing token it has seen and
// rejects writes that carry a lower one.
//
// worker-1 takes the lock and then stalls, as in a long GC pause: its session stops sending
// keepalives, its lease expires, and the lock passes to the other workers while worker-1 still
// believes it holds it. When worker-1 resumes, its write to the storage is rejected because its
// token is stale, and its write to ember itself, guarded by the Mutex's IsOwner compare, fails
// as well.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/concurrency"
	"github.com/ember-kv/ember/examples/internal/demo"
)

const (
	lockPfx = "/locks/resource"
	// ownerKey is the copy of the resource kept in ember itself, written under IsOwner.
	ownerKey = "/resource/last-writer"
	// sessionTTL bounds how long a stalled holder keeps the lock.
	sessionTTL = 2
)

func main() {
	if err := run(os.Stdout, &storage{}); err != nil {
		log.Fatal(err)
	}
}

func run(w io.Writer, st *storage) error {
	w = demo.NewSyncWriter(w)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	root, err := os.MkdirTemp("", "ember-distributed-lock-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)

	ids := []string{"a", "b", "c"}
	stores, err := demo.StartCluster(ctx, root, ids)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range stores {
			s.Close()
		}
	}()
	fmt.Fprintf(w, "cluster of %d members is ready\n", len(ids))

	workers := []*worker{
		{name: "worker-1", store: stores["a"], w: w, st: st},
		{name: "worker-2", store: stores["b"], w: w, st: st},
		{name: "worker-3", store: stores["c"], w: w, st: st},
	}
	for _, wk := range workers {
		if err := wk.newSession(); err != nil {
			return err
		}
		defer wk.sess.Close()
	}

	slow := workers[0]
	if err := slow.lock(ctx); err != nil {
		return err
	}
	if err := slow.write(ctx, "report v1"); err != nil {
		return err
	}
	// Orphan stops the keepalives but leaves the lease to run out, which is what a process
	// frozen by a GC pause or a stopped VM looks like from the cluster's side.
	slow.sess.Orphan()
	pauseStart := time.Now()
	fmt.Fprintf(w, "%s stalls (a long GC pause): its session stops sending keepalives\n", slow.name)

	// The others queue for the lock; they get it once worker-1's lease has expired.
	var wg sync.WaitGroup
	errs := make(chan error, len(workers)-1)
	for _, wk := range workers[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- wk.lockWriteUnlock(ctx, "report v2 by "+wk.name)
		}()
	}
	// The pause lasts until both have written, so the stale write below comes after theirs.
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "%s resumes after %.1fs, still believing it holds the lock (token %d)\n",
		slow.name, time.Since(pauseStart).Seconds(), slow.m.FencingToken())

	if err := slow.write(ctx, "report v1, late"); err != nil {
		return err
	}

	// A worker that notices its session has ended starts a new one and queues again; the new
	// grant carries a higher token, so its writes are accepted again.
	<-slow.sess.Done()
	fmt.Fprintf(w, "%s notices its session has ended and starts a new one\n", slow.name)
	if err := slow.newSession(); err != nil {
		return err
	}
	defer slow.sess.Close()
	return slow.lockWriteUnlock(ctx, "report v3")
}

// worker is one process that writes to the storage while it holds the lock.
type worker struct {
	name  string
	store *ember.Store
	w     io.Writer
	st    *storage
	sess  *concurrency.Session
	m     *concurrency.Mutex
}

// newSession gives the worker a fresh session and a Mutex on it: the lock belongs to the
// session, so a worker whose session ended needs both anew.
func (wk *worker) newSession() error {
	sess, err := concurrency.NewSession(wk.store, concurrency.WithTTL(sessionTTL))
	if err != nil {
		return err
	}
	wk.sess, wk.m = sess, concurrency.NewMutex(sess, lockPfx)
	return nil
}

func (wk *worker) lock(ctx context.Context) error {
	if err := wk.m.Lock(ctx); err != nil {
		return fmt.Errorf("%s: lock: %w", wk.name, err)
	}
	fmt.Fprintf(wk.w, "%s holds the lock with fencing token %d\n", wk.name, wk.m.FencingToken())
	return nil
}

func (wk *worker) lockWriteUnlock(ctx context.Context, data string) error {
	if err := wk.lock(ctx); err != nil {
		return err
	}
	if err := wk.write(ctx, data); err != nil {
		return err
	}
	if err := wk.m.Unlock(ctx); err != nil {
		return fmt.Errorf("%s: unlock: %w", wk.name, err)
	}
	fmt.Fprintf(wk.w, "%s releases the lock\n", wk.name)
	return nil
}

// write sends data to the storage with the worker's fencing token, and records the worker as
// the last writer in ember under the IsOwner guard. Either may refuse a stale holder; that is
// narrated, not an error. The error is for requests that fail.
func (wk *worker) write(ctx context.Context, data string) error {
	token := wk.m.FencingToken()
	if err := wk.st.Write(wk.name, token, data); err != nil {
		fmt.Fprintf(wk.w, "  storage rejects %q from %s: %v\n", data, wk.name, err)
	} else {
		fmt.Fprintf(wk.w, "  storage accepts %q from %s (token %d)\n", data, wk.name, token)
	}
	resp, err := wk.store.Txn(ctx).
		If(wk.m.IsOwner()).
		Then(ember.OpPut(ownerKey, wk.name)).
		Commit()
	if err != nil {
		return fmt.Errorf("%s: guarded put: %w", wk.name, err)
	}
	if resp.Succeeded {
		fmt.Fprintf(wk.w, "  ember accepts %s=%s (IsOwner holds)\n", ownerKey, wk.name)
	} else {
		fmt.Fprintf(wk.w, "  ember rejects %s=%s: IsOwner fails, the lock key is gone\n", ownerKey, wk.name)
	}
	return nil
}

// storage is the protected resource, a stand-in for a file server or database outside ember.
// It accepts a write only if its fencing token is at least the highest it has seen, so a
// holder whose lock has passed to another can no longer write.
type storage struct {
	mu       sync.Mutex
	highest  int64
	accepted []write
	rejected []write
}

type write struct {
	worker string
	token  int64
	data   string
}

func (s *storage) Write(worker string, token int64, data string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	wr := write{worker: worker, token: token, data: data}
	if token < s.highest {
		s.rejected = append(s.rejected, wr)
		return fmt.Errorf("token %d is below %d, the highest seen", token, s.highest)
	}
	s.highest = token
	s.accepted = append(s.accepted, wr)
	return nil
}
