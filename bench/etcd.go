package main

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
)

type etcdCluster struct {
	members  []*embed.Etcd
	clients  []*clientv3.Client
	leader   *clientv3.Client
	follower *clientv3.Client
}

// startEtcd starts n embedded etcd members on loopback with etcd's defaults (fsync on, 100 ms
// ticks, 1 s election), each reached through its in-process v3client, which calls the member's
// gRPC service implementations directly, without a socket.
func startEtcd(ctx context.Context, members int, root string) (cluster, error) {
	type urls struct{ peer, client url.URL }
	addrs := make([]urls, members)
	var initial []string
	for i := range addrs {
		for _, u := range []*url.URL{&addrs[i].peer, &addrs[i].client} {
			a, err := freeAddr()
			if err != nil {
				return nil, err
			}
			*u = url.URL{Scheme: "http", Host: a}
		}
		initial = append(initial, memberName(i)+"="+addrs[i].peer.String())
	}
	c := &etcdCluster{}
	for i, a := range addrs {
		cfg := embed.NewConfig()
		cfg.Name = memberName(i)
		cfg.Dir = filepath.Join(root, cfg.Name)
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{a.peer}, []url.URL{a.peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{a.client}, []url.URL{a.client}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			c.close()
			return nil, err
		}
		c.members = append(c.members, e)
	}
	for _, e := range c.members {
		select {
		case <-e.Server.ReadyNotify():
		case <-ctx.Done():
			c.close()
			return nil, fmt.Errorf("etcd: not ready: %w", ctx.Err())
		}
		c.clients = append(c.clients, v3client.New(e.Server))
	}
	for {
		c.leader, c.follower = nil, nil
		for i, e := range c.members {
			switch {
			case e.Server.Leader() == e.Server.MemberID():
				c.leader = c.clients[i]
			case c.follower == nil:
				c.follower = c.clients[i]
			}
		}
		if c.leader != nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			c.close()
			return nil, fmt.Errorf("etcd: no leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *etcdCluster) client(follower bool) client {
	if follower {
		return etcdClient{c.follower}
	}
	return etcdClient{c.leader}
}

func (c *etcdCluster) close() error {
	for _, cl := range c.clients {
		cl.Close()
	}
	for _, e := range c.members {
		e.Close()
	}
	return nil
}

type etcdClient struct{ c *clientv3.Client }

func (e etcdClient) put(ctx context.Context, key, val string) (int64, error) {
	r, err := e.c.Put(ctx, key, val)
	if err != nil {
		return 0, err
	}
	return r.Header.Revision, nil
}

func (e etcdClient) get(ctx context.Context, key string, serializable bool) error {
	var err error
	if serializable {
		_, err = e.c.Get(ctx, key, clientv3.WithSerializable())
	} else {
		_, err = e.c.Get(ctx, key)
	}
	return err
}

func (e etcdClient) cas(ctx context.Context, key string, modRev int64, val string) (bool, int64, error) {
	r, err := e.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpPut(key, val)).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return false, 0, err
	}
	if r.Succeeded {
		return true, r.Header.Revision, nil
	}
	if kvs := r.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		return false, kvs[0].ModRevision, nil
	}
	return false, 0, nil
}

func (e etcdClient) leasePut(ctx context.Context, key, val string, ttl int64, _ bool) error {
	l, err := e.c.Grant(ctx, ttl)
	if err != nil {
		return err
	}
	_, err = e.c.Put(ctx, key, val, clientv3.WithLease(l.ID))
	return err
}

func (e etcdClient) watch(ctx context.Context, key string, prefix bool, fn func([]event, error)) error {
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify()}
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	ch := e.c.Watch(ctx, key, opts...)
	first, ok := <-ch
	if !ok || !first.Created {
		return fmt.Errorf("etcd: watch %q not created: %v", key, first.Err())
	}
	go func() {
		for r := range ch {
			if err := r.Err(); err != nil || r.Canceled {
				fn(nil, fmt.Errorf("etcd: watch %q canceled: %v", key, err))
				return
			}
			evs := make([]event, len(r.Events))
			for i, ev := range r.Events {
				evs[i] = event{rev: ev.Kv.ModRevision, val: ev.Kv.Value}
			}
			fn(evs, nil)
		}
		if ctx.Err() == nil {
			fn(nil, fmt.Errorf("etcd: watch %q closed", key))
		}
	}()
	return nil
}
