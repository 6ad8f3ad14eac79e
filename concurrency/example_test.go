package concurrency_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strconv"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/concurrency"
)

func ExampleNewSession() {
	ctx := context.Background()
	s, err := ember.Open("")
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	if err := s.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	sess, err := concurrency.NewSession(s, concurrency.WithTTL(10))
	if err != nil {
		log.Fatal(err)
	}
	// A key attached to the session's lease lives exactly as long as the session.
	if _, err := s.Put(ctx, "/members/worker-1", "10.0.0.1", ember.WithLease(sess.Lease())); err != nil {
		log.Fatal(err)
	}
	resp, _ := s.Get(ctx, "/members/", ember.WithPrefix())
	fmt.Println("members while the session lives:", resp.Count)

	if err := sess.Close(); err != nil {
		log.Fatal(err)
	}
	<-sess.Done()
	resp, _ = s.Get(ctx, "/members/", ember.WithPrefix())
	fmt.Println("members after Close:", resp.Count)
	// Output:
	// members while the session lives: 1
	// members after Close: 0
}

func ExampleMutex_Lock() {
	ctx := context.Background()
	s, err := ember.Open("")
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	if err := s.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	s1, _ := concurrency.NewSession(s)
	defer s1.Close()
	s2, _ := concurrency.NewSession(s)
	defer s2.Close()
	m1 := concurrency.NewMutex(s1, "/locks/report")
	m2 := concurrency.NewMutex(s2, "/locks/report")

	if err := m1.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("m1 locked")
	if err := m2.TryLock(ctx); errors.Is(err, concurrency.ErrLocked) {
		fmt.Println("m2: locked by another session")
	}

	// The lock alone does not exclude a holder whose session has ended; the write is fenced
	// with IsOwner, so it only happens while m1 really holds the lock.
	resp, err := s.Txn(ctx).If(m1.IsOwner()).Then(ember.OpPut("/report", "by m1")).Commit()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("fenced write applied:", resp.Succeeded)
	first := m1.FencingToken()

	locked := make(chan struct{})
	go func() {
		if err := m2.Lock(ctx); err != nil {
			log.Fatal(err)
		}
		close(locked)
	}()
	if err := m1.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	<-locked
	fmt.Println("m2 locked; its token is higher:", m2.FencingToken() > first)
	if err := m2.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// m1 locked
	// m2: locked by another session
	// fenced write applied: true
	// m2 locked; its token is higher: true
}

func ExampleElection_Campaign() {
	ctx := context.Background()
	s, err := ember.Open("")
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	if err := s.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	s1, _ := concurrency.NewSession(s)
	defer s1.Close()
	s2, _ := concurrency.NewSession(s)
	defer s2.Close()
	e1 := concurrency.NewElection(s1, "/elections/scheduler")
	e2 := concurrency.NewElection(s2, "/elections/scheduler")

	if err := e1.Campaign(ctx, "node-1"); err != nil {
		log.Fatal(err)
	}
	leader, _ := e1.Leader(ctx)
	fmt.Println("leader:", string(leader.Kvs[0].Value))

	elected := make(chan struct{})
	go func() {
		// Blocks while node-1 leads.
		if err := e2.Campaign(ctx, "node-2"); err != nil {
			log.Fatal(err)
		}
		close(elected)
	}()
	if err := e1.Resign(ctx); err != nil {
		log.Fatal(err)
	}
	<-elected
	leader, _ = e2.Leader(ctx)
	fmt.Println("leader:", string(leader.Kvs[0].Value))
	// Output:
	// leader: node-1
	// leader: node-2
}

func ExampleNewSTM() {
	ctx := context.Background()
	s, err := ember.Open("")
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	if err := s.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}
	s.Put(ctx, "/accounts/alice", "100")
	s.Put(ctx, "/accounts/bob", "50")

	// apply may run more than once: it is retried until no key it read changed before its
	// writes committed.
	transfer := func(stm concurrency.STM) error {
		alice, _ := strconv.Atoi(stm.Get("/accounts/alice"))
		bob, _ := strconv.Atoi(stm.Get("/accounts/bob"))
		if alice < 30 {
			return errors.New("insufficient funds")
		}
		stm.Put("/accounts/alice", strconv.Itoa(alice-30))
		stm.Put("/accounts/bob", strconv.Itoa(bob+30))
		return nil
	}
	if _, err := concurrency.NewSTM(s, transfer); err != nil {
		log.Fatal(err)
	}
	for _, name := range []string{"alice", "bob"} {
		resp, _ := s.Get(ctx, "/accounts/"+name)
		fmt.Printf("%s: %s\n", name, resp.Kvs[0].Value)
	}
	// Output:
	// alice: 70
	// bob: 80
}
