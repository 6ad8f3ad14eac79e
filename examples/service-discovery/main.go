// Command service-discovery keeps a live list of the instances of a "web" service in ember.
// Each instance registers /services/web/<id> with its address under a lease that it keeps
// alive, so its entry disappears when it deregisters (revokes the lease) or when it dies and
// its keepalives stop (the lease expires). A client reads the current set with one prefix Get
// and then follows every change with a Watch that starts right after the Get's revision, so
// it neither misses nor repeats a change.
//
// The instances and the client run on different members of a three-member cluster.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/examples/internal/demo"
)

const (
	servicePfx = "/services/web/"
	// leaseTTL bounds how long a dead instance stays listed.
	leaseTTL = 2
)

func main() {
	if err := run(os.Stdout, newClient()); err != nil {
		log.Fatal(err)
	}
}

func run(w io.Writer, cl *client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	root, err := os.MkdirTemp("", "ember-service-discovery-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)

	stores, err := demo.StartCluster(ctx, root, []string{"a", "b", "c"})
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range stores {
			s.Close()
		}
	}()
	fmt.Fprintln(w, "cluster of 3 members is ready")

	web1, err := register(ctx, w, stores["a"], "web-1", "127.0.0.1:8081")
	if err != nil {
		return err
	}
	web2, err := register(ctx, w, stores["b"], "web-2", "127.0.0.1:8082")
	if err != nil {
		return err
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchErr := make(chan error, 1)
	changes := make(chan change)
	if err := cl.load(ctx, stores["c"]); err != nil {
		return err
	}
	fmt.Fprintf(w, "client on member c loads %s at revision %d: %s\n", servicePfx, cl.rev, cl.describe())
	go func() { watchErr <- cl.follow(watchCtx, stores["c"], changes) }()

	// expect waits until the client has seen the next change, and narrates it.
	expect := func() error {
		select {
		case ch := <-changes:
			fmt.Fprintf(w, "client sees %s at revision %d, live set: %s\n", ch, ch.rev, cl.describe())
			return nil
		case err := <-watchErr:
			return fmt.Errorf("watch ended: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	web3, err := register(ctx, w, stores["c"], "web-3", "127.0.0.1:8083")
	if err != nil {
		return err
	}
	defer web3.deregister()
	if err := expect(); err != nil {
		return err
	}

	fmt.Fprintln(w, "web-1 shuts down cleanly and revokes its lease")
	if err := web1.deregister(); err != nil {
		return err
	}
	if err := expect(); err != nil {
		return err
	}

	fmt.Fprintf(w, "web-2 crashes: its keepalives stop, and its lease runs out within %ds\n", leaseTTL)
	crashed := time.Now()
	web2.crash()
	if err := expect(); err != nil {
		return err
	}
	fmt.Fprintf(w, "(web-2 was removed %.1fs after it crashed)\n", time.Since(crashed).Seconds())

	web1, err = register(ctx, w, stores["a"], "web-1", "127.0.0.1:9081")
	if err != nil {
		return err
	}
	defer web1.deregister()
	if err := expect(); err != nil {
		return err
	}

	stopWatch()
	<-watchErr
	fmt.Fprintf(w, "final live set: %s\n", cl.describe())
	return nil
}

// instance is a registered instance of the service.
type instance struct {
	store     *ember.Store
	lease     ember.LeaseID
	keepAlive context.CancelFunc
}

// register puts the instance's address under a fresh lease, granted in the same raft entry
// (GrantAndDo: one commit, and no lease left without its key by a crash in between), and keeps
// the lease alive until the instance deregisters or crashes.
func register(ctx context.Context, w io.Writer, s *ember.Store, id, addr string) (*instance, error) {
	var g *ember.LeaseGrantResponse
	for {
		lease := ember.LeaseID(rand.Int64N(math.MaxInt64) + 1)
		var err error
		g, _, err = s.GrantAndDo(ctx, lease, leaseTTL, ember.OpPut(servicePfx+id, addr, ember.WithLease(lease)))
		if err == nil {
			break
		}
		if !errors.Is(err, ember.ErrLeaseExists) { // another lease has that ID: pick again
			return nil, err
		}
	}
	kaCtx, stop := context.WithCancel(context.Background())
	ka, err := s.KeepAlive(kaCtx, g.ID)
	if err != nil {
		stop()
		return nil, err
	}
	// Nobody needs the renewals' answers; the channel must still be drained.
	go func() {
		for range ka {
		}
	}()
	fmt.Fprintf(w, "%s registers %s%s=%s with lease %x (TTL %ds)\n", id, servicePfx, id, addr, int64(g.ID), g.TTL)
	return &instance{store: s, lease: g.ID, keepAlive: stop}, nil
}

// deregister removes the instance at once by revoking its lease, which deletes its key.
func (in *instance) deregister() error {
	in.keepAlive()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := in.store.Revoke(ctx, in.lease)
	return err
}

// crash stops the keepalives without revoking: the key stays until the lease expires.
func (in *instance) crash() { in.keepAlive() }

// client keeps the live set of instances, id → address.
type client struct {
	mu   sync.Mutex
	live map[string]string
	rev  int64 // the revision the live set reflects
	seen []change
}

// change is one instance coming up or going down.
type change struct {
	rev  int64
	up   bool
	id   string
	addr string
}

func (c change) String() string {
	if c.up {
		return fmt.Sprintf("%s up at %s", c.id, c.addr)
	}
	return fmt.Sprintf("%s down", c.id)
}

func newClient() *client { return &client{live: map[string]string{}} }

// load reads the whole set, and the revision it was read at.
func (c *client) load(ctx context.Context, s *ember.Store) error {
	resp, err := s.Get(ctx, servicePfx, ember.WithPrefix())
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.live)
	for _, kv := range resp.Kvs {
		c.live[strings.TrimPrefix(string(kv.Key), servicePfx)] = string(kv.Value)
	}
	c.rev = resp.Header.Revision
	return nil
}

// follow applies every change after the loaded revision, and sends each on changes. Starting
// the watch at rev+1 makes Get and Watch one consistent stream: the Get saw everything up to
// rev, the watch delivers everything after it.
func (c *client) follow(ctx context.Context, s *ember.Store, changes chan<- change) error {
	for wr := range s.Watch(ctx, servicePfx, ember.WithPrefix(), ember.WithRev(c.rev+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			ch := change{rev: ev.Kv.ModRevision, id: strings.TrimPrefix(string(ev.Kv.Key), servicePfx)}
			c.mu.Lock()
			if ev.Type == ember.EventTypePut {
				ch.up, ch.addr = true, string(ev.Kv.Value)
				c.live[ch.id] = ch.addr
			} else {
				delete(c.live, ch.id)
			}
			c.rev = ch.rev
			c.seen = append(c.seen, ch)
			c.mu.Unlock()
			select {
			case changes <- ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return ctx.Err()
}

// describe formats the live set in ID order.
func (c *client) describe() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(c.live)) {
		parts = append(parts, id+"="+c.live[id])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
