package etcdapi

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/ember-kv/ember/embertest"
)

// memberClients returns n in-process clients spread over the cluster's members.
func memberClients(t testing.TB, c *embertest.Cluster, n int) []*clientv3.Client {
	t.Helper()
	ms := c.Members()
	clis := make([]*clientv3.Client, n)
	for i := range clis {
		clis[i] = inProcClient(t, ms[i%len(ms)].Store())
	}
	return clis
}

func newSession(t testing.TB, cli *clientv3.Client) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConcurrency_Mutex runs etcd's own Mutex on ember: 8 clients on 3 members take the lock in
// turn; the protected read-modify-write must never interleave.
func TestConcurrency_Mutex(t *testing.T) {
	const workers, rounds = 8, 5
	c := embertest.NewCluster(t, 3)
	clis := memberClients(t, c, workers)
	ctx := testCtx(t)
	var holders atomic.Int32
	var counter atomic.Int64 // updated as load-then-store: only the lock keeps updates from being lost
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i, cli := range clis {
		sess := newSession(t, cli)
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := concurrency.NewMutex(sess, "/lock")
			for range rounds {
				if err := m.Lock(ctx); err != nil {
					errs <- fmt.Errorf("worker %d: Lock: %w", i, err)
					return
				}
				if n := holders.Add(1); n != 1 {
					errs <- fmt.Errorf("worker %d holds the lock with %d others", i, n-1)
				}
				v := counter.Load()
				runtime.Gosched()
				counter.Store(v + 1)
				holders.Add(-1)
				if err := m.Unlock(ctx); err != nil {
					errs <- fmt.Errorf("worker %d: Unlock: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := counter.Load(); got != workers*rounds {
		t.Errorf("counter = %d, want %d", got, workers*rounds)
	}
}

// TestConcurrency_Election runs etcd's Election: candidates on different members campaign and
// resign in turn; exactly one leads at a time, and an observer sees the leaders.
func TestConcurrency_Election(t *testing.T) {
	const candidates, terms = 4, 3
	c := embertest.NewCluster(t, 3)
	clis := memberClients(t, c, candidates+1)
	ctx := testCtx(t)

	obsCtx, stopObserving := context.WithCancel(ctx)
	defer stopObserving()
	observed := concurrency.NewElection(newSession(t, clis[candidates]), "/elect").Observe(obsCtx)
	var seen sync.Map
	obsDone := make(chan struct{})
	go func() {
		defer close(obsDone)
		for r := range observed {
			seen.Store(string(r.Kvs[0].Value), true)
		}
	}()

	var leaders atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, candidates*terms)
	for i := range candidates {
		sess := newSession(t, clis[i])
		name := "candidate-" + strconv.Itoa(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := concurrency.NewElection(sess, "/elect")
			for range terms {
				if err := e.Campaign(ctx, name); err != nil {
					errs <- fmt.Errorf("%s: Campaign: %w", name, err)
					return
				}
				if n := leaders.Add(1); n != 1 {
					errs <- fmt.Errorf("%s leads with %d others", name, n-1)
				}
				r, err := e.Leader(ctx)
				if err != nil || string(r.Kvs[0].Value) != name {
					errs <- fmt.Errorf("%s: Leader = %v, %v", name, r, err)
				}
				leaders.Add(-1)
				if err := e.Resign(ctx); err != nil {
					errs <- fmt.Errorf("%s: Resign: %w", name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	stopObserving()
	<-obsDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n := 0
	seen.Range(func(k, _ any) bool {
		n++
		return true
	})
	if n == 0 {
		t.Error("the observer saw no leader")
	}
}

// TestConcurrency_STM runs etcd's software transactional memory: concurrent transfers between
// accounts under serializable isolation keep the total constant.
func TestConcurrency_STM(t *testing.T) {
	const accounts, workers, transfers, initial = 5, 8, 10, 100
	c := embertest.NewCluster(t, 3)
	clis := memberClients(t, c, workers)
	ctx := testCtx(t)
	for i := range accounts {
		mustPut(t, clis[0], fmt.Sprintf("acct/%d", i), strconv.Itoa(initial))
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w, cli := range clis {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range transfers {
				from, to := rng.IntN(accounts), rng.IntN(accounts-1)
				if to >= from {
					to++
				}
				amount := rng.IntN(10) + 1
				_, err := concurrency.NewSTM(cli, func(s concurrency.STM) error {
					fk, tk := fmt.Sprintf("acct/%d", from), fmt.Sprintf("acct/%d", to)
					fv, _ := strconv.Atoi(s.Get(fk))
					tv, _ := strconv.Atoi(s.Get(tk))
					s.Put(fk, strconv.Itoa(fv-amount))
					s.Put(tk, strconv.Itoa(tv+amount))
					return nil
				}, concurrency.WithIsolation(concurrency.Serializable), concurrency.WithAbortContext(ctx))
				if err != nil {
					errs <- fmt.Errorf("worker %d: STM: %w", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	r, err := clis[0].Get(ctx, "acct/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	total := 0
	for _, kv := range r.Kvs {
		v, _ := strconv.Atoi(string(kv.Value))
		total += v
	}
	if total != accounts*initial {
		t.Errorf("total = %d, want %d", total, accounts*initial)
	}
}
