package ember_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ember-kv/ember"
)

// open starts an in-memory single-member store for the examples.
func open() (*ember.Store, context.Context, func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	s, err := ember.Open("")
	if err != nil {
		log.Fatal(err)
	}
	if err := s.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}
	return s, ctx, func() { s.Close(); cancel() }
}

func ExampleStore_Put() {
	s, ctx, done := open()
	defer done()

	r, err := s.Put(ctx, "greeting", "hello")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("revision", r.Header.Revision)

	r, _ = s.Put(ctx, "greeting", "hi", ember.WithPrevKV())
	fmt.Printf("replaced %q at revision %d\n", r.PrevKv.Value, r.Header.Revision)
	// Output:
	// revision 2
	// replaced "hello" at revision 3
}

func ExampleStore_Get() {
	s, ctx, done := open()
	defer done()
	for _, k := range []string{"svc/a", "svc/b", "svc/c", "other"} {
		s.Put(ctx, k, "up")
	}

	r, _ := s.Get(ctx, "svc/", ember.WithPrefix(), ember.WithLimit(2))
	for _, kv := range r.Kvs {
		fmt.Printf("%s=%s\n", kv.Key, kv.Value)
	}
	fmt.Println("more:", r.More, "count:", r.Count)

	old, _ := s.Get(ctx, "svc/", ember.WithPrefix(), ember.WithRev(3), ember.WithCountOnly())
	fmt.Println("keys at revision 3:", old.Count)
	// Output:
	// svc/a=up
	// svc/b=up
	// more: true count: 3
	// keys at revision 3: 2
}

func ExampleStore_Delete() {
	s, ctx, done := open()
	defer done()
	s.Put(ctx, "tmp/1", "x")
	s.Put(ctx, "tmp/2", "y")

	r, _ := s.Delete(ctx, "tmp/", ember.WithPrefix(), ember.WithPrevKV())
	fmt.Println("deleted", r.Deleted, "at revision", r.Header.Revision)
	// Output:
	// deleted 2 at revision 4
}

func ExampleStore_Txn() {
	s, ctx, done := open()
	defer done()

	// Create-if-absent: only the first caller gets the key.
	for _, who := range []string{"alice", "bob"} {
		r, err := s.Txn(ctx).
			If(ember.Compare(ember.CreateRevision("owner"), "=", 0)).
			Then(ember.OpPut("owner", who)).
			Else(ember.OpGet("owner")).
			Commit()
		if err != nil {
			log.Fatal(err)
		}
		if r.Succeeded {
			fmt.Println(who, "took it")
		} else {
			fmt.Println(who, "found", string(r.Responses[0].Get().Kvs[0].Value))
		}
	}
	// Output:
	// alice took it
	// bob found alice
}

func ExampleStore_Watch() {
	s, ctx, done := open()
	defer done()
	s.Put(ctx, "cfg/a", "1") // revision 2

	// Start in the past: history is replayed, then live events follow.
	wc := s.Watch(ctx, "cfg/", ember.WithPrefix(), ember.WithRev(2))
	s.Put(ctx, "cfg/a", "2")
	s.Delete(ctx, "cfg/a")

	for n := 0; n < 3; {
		wr := <-wc
		for _, ev := range wr.Events {
			fmt.Println(ev.Type, string(ev.Kv.Key), string(ev.Kv.Value), ev.Kv.ModRevision)
			n++
		}
	}
	// Output:
	// PUT cfg/a 1 2
	// PUT cfg/a 2 3
	// DELETE cfg/a  4
}

func ExampleStore_Grant() {
	s, ctx, done := open()
	defer done()

	lease, _ := s.Grant(ctx, 30)
	s.Put(ctx, "instances/web-1", "10.0.0.7", ember.WithLease(lease.ID))

	ttl, _ := s.TimeToLive(ctx, lease.ID, ember.WithAttachedKeys())
	fmt.Println("granted", ttl.GrantedTTL, "keys", len(ttl.Keys))

	s.Revoke(ctx, lease.ID) // the instance is gone: its keys go with the lease
	r, _ := s.Get(ctx, "instances/", ember.WithPrefix(), ember.WithCountOnly())
	fmt.Println("instances left:", r.Count)
	// Output:
	// granted 30 keys 1
	// instances left: 0
}

func ExampleStore_Compact() {
	s, ctx, done := open()
	defer done()
	for i := 0; i < 3; i++ {
		s.Put(ctx, "k", fmt.Sprint(i)) // revisions 2, 3, 4
	}
	s.Compact(ctx, 4)
	_, err := s.Get(ctx, "k", ember.WithRev(3))
	fmt.Println(err)
	r, _ := s.Get(ctx, "k", ember.WithRev(4))
	fmt.Println(string(r.Kvs[0].Value))
	// Output:
	// ember: mvcc: required revision has been compacted
	// 2
}
