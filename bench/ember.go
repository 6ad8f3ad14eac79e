package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"time"

	"github.com/ember-kv/ember"
)

type emberCluster struct {
	stores   []*ember.Store
	leader   *ember.Store
	follower *ember.Store
}

// logStore is the -log-store flag: the raft log store of ember's members and of raw raft.
var logStore = ember.LogStoreWAL

// startEmber opens one member as the embedded default (Open(dir): persistent, fsync on, no
// listener), or n members on loopback with ember's default raft timings.
func startEmber(ctx context.Context, members int, root string) (cluster, error) {
	c := &emberCluster{}
	if members == 1 {
		s, err := ember.Open(filepath.Join(root, "m1"), ember.WithLogStore(logStore))
		if err != nil {
			return nil, err
		}
		c.stores = []*ember.Store{s}
	} else {
		peers := map[string]string{}
		for i := range members {
			addr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			peers[memberName(i)] = addr
		}
		for i := range members {
			id := memberName(i)
			s, err := ember.Open(filepath.Join(root, id),
				ember.WithNodeID(id),
				ember.WithBindAddr(peers[id]),
				ember.WithInitialCluster(peers),
				ember.WithLogStore(logStore))
			if err != nil {
				c.close()
				return nil, err
			}
			c.stores = append(c.stores, s)
		}
	}
	for _, s := range c.stores {
		if err := s.WaitReady(ctx); err != nil {
			c.close()
			return nil, err
		}
	}
	if err := c.findLeader(ctx); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *emberCluster) findLeader(ctx context.Context) error {
	for {
		c.leader, c.follower = nil, nil
		for _, s := range c.stores {
			if s.IsLeader() {
				c.leader = s
			} else if c.follower == nil {
				c.follower = s
			}
		}
		if c.leader != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ember: no leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *emberCluster) client(follower bool) client {
	if follower {
		return emberClient{c.follower}
	}
	return emberClient{c.leader}
}

func (c *emberCluster) close() error {
	var errs []error
	for _, s := range c.stores {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

type emberClient struct{ s *ember.Store }

func (e emberClient) put(ctx context.Context, key, val string) (int64, error) {
	r, err := e.s.Put(ctx, key, val)
	if err != nil {
		return 0, err
	}
	return r.Header.Revision, nil
}

func (e emberClient) get(ctx context.Context, key string, serializable bool) error {
	var err error
	if serializable {
		_, err = e.s.Get(ctx, key, ember.WithSerializable())
	} else {
		_, err = e.s.Get(ctx, key)
	}
	return err
}

func (e emberClient) cas(ctx context.Context, key string, modRev int64, val string) (bool, int64, error) {
	r, err := e.s.Txn(ctx).
		If(ember.Compare(ember.ModRevision(key), "=", modRev)).
		Then(ember.OpPut(key, val)).
		Else(ember.OpGet(key)).
		Commit()
	if err != nil {
		return false, 0, err
	}
	if r.Succeeded {
		return true, r.Header.Revision, nil
	}
	if kvs := r.Responses[0].Get().Kvs; len(kvs) > 0 {
		return false, kvs[0].ModRevision, nil
	}
	return false, 0, nil
}

func (e emberClient) leasePut(ctx context.Context, key, val string, ttl int64, oneEntry bool) error {
	if oneEntry {
		id := ember.LeaseID(rand.Int64N(math.MaxInt64-1) + 1)
		_, _, err := e.s.GrantAndDo(ctx, id, ttl, ember.OpPut(key, val, ember.WithLease(id)))
		return err
	}
	l, err := e.s.Grant(ctx, ttl)
	if err != nil {
		return err
	}
	_, err = e.s.Put(ctx, key, val, ember.WithLease(l.ID))
	return err
}

func (e emberClient) watch(ctx context.Context, key string, prefix bool, fn func([]event, error)) error {
	opts := []ember.OpOption{ember.WithCreatedNotify()}
	if prefix {
		opts = append(opts, ember.WithPrefix())
	}
	ch := e.s.Watch(ctx, key, opts...)
	first, ok := <-ch
	if !ok || !first.Created {
		return fmt.Errorf("ember: watch %q not created: %v", key, first.Err())
	}
	go func() {
		for r := range ch {
			if err := r.Err(); err != nil || r.Canceled {
				fn(nil, fmt.Errorf("ember: watch %q canceled: %v %s", key, err, r.CancelReason))
				return
			}
			evs := make([]event, len(r.Events))
			for i, ev := range r.Events {
				evs[i] = event{rev: ev.Kv.ModRevision, val: ev.Kv.Value}
			}
			fn(evs, nil)
		}
		if ctx.Err() == nil {
			fn(nil, fmt.Errorf("ember: watch %q closed", key))
		}
	}()
	return nil
}
