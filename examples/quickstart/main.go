// Command quickstart runs ember's embedded default: a single-member store under ./data (or the
// directory given as the first argument), with put, get, a compare-and-swap transaction, a
// watch, a lease and a compaction.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/ember-kv/ember"
)

func main() {
	dir := "data"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if err := run(os.Stdout, dir); err != nil {
		log.Fatal(err)
	}
}

func run(w io.Writer, dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	s, err := ember.Open(dir)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.WaitReady(ctx); err != nil {
		return err
	}

	// Watch the config/ prefix from now on; events arrive on the channel in revision order.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events := s.Watch(wctx, "config/", ember.WithPrefix())

	put, err := s.Put(ctx, "config/color", "blue")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "put config/color=blue at revision %d\n", put.Header.Revision)

	get, err := s.Get(ctx, "config/color")
	if err != nil {
		return err
	}
	kv := get.Kvs[0]
	fmt.Fprintf(w, "get config/color=%s (version %d)\n", kv.Value, kv.Version)

	// Compare-and-swap: change the value only if nobody changed it since we read it.
	txn, err := s.Txn(ctx).
		If(ember.Compare(ember.ModRevision("config/color"), "=", kv.ModRevision)).
		Then(ember.OpPut("config/color", "green")).
		Else(ember.OpGet("config/color")).
		Commit()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "cas blue->green succeeded=%v at revision %d\n", txn.Succeeded, txn.Header.Revision)

	for seen := 0; seen < 2; {
		wr := <-events
		for _, ev := range wr.Events {
			fmt.Fprintf(w, "watch: %s %s=%s at revision %d\n", ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
			seen++
		}
	}

	// A lease: the key disappears when the lease is revoked (or expires without keepalives).
	lease, err := s.Grant(ctx, 10)
	if err != nil {
		return err
	}
	if _, err := s.Put(ctx, "instances/a", "10.0.0.1", ember.WithLease(lease.ID)); err != nil {
		return err
	}
	if _, err := s.Revoke(ctx, lease.ID); err != nil {
		return err
	}
	left, err := s.Get(ctx, "instances/", ember.WithPrefix(), ember.WithCountOnly())
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "instances after revoking their lease: %d\n", left.Count)

	// Compaction drops history: reads before the compaction revision now fail.
	cur := txn.Header.Revision
	if _, err := s.Compact(ctx, cur); err != nil {
		return err
	}
	_, err = s.Get(ctx, "config/color", ember.WithRev(put.Header.Revision))
	fmt.Fprintf(w, "read at revision %d after compacting at %d: %v\n", put.Header.Revision, cur, err)
	return nil
}
