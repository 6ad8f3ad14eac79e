package etcdapi

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/client/v3/namespace"

	"github.com/ember-kv/ember"
)

// etcd's namespaces are client-side, so clientv3's namespace package runs over the gateway
// unchanged, and its keys are those of ember.Namespace with the same prefix.
func TestNamespace_ClientV3(t *testing.T) {
	forEachTransport(t, func(t *testing.T, st *ember.Store, cli *clientv3.Client) {
		ctx := testCtx(t)
		cli.KV = namespace.NewKV(cli.KV, "app/")
		cli.Watcher = namespace.NewWatcher(cli.Watcher, "app/")
		cli.Lease = namespace.NewLease(cli.Lease, "app/")
		native := ember.Namespace(st, "app/")

		wch := cli.Watch(ctx, "", clientv3.WithPrefix())
		mustPut(t, cli, "from-etcd", "1")
		if _, err := native.Put(ctx, "from-ember", "2"); err != nil {
			t.Fatal(err)
		}
		st.Put(ctx, "outside", "3")

		r, err := cli.Get(ctx, "", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if got := keysOf(r); len(got) != 2 || got[0] != "from-ember" || got[1] != "from-etcd" {
			t.Fatalf("clientv3 namespace sees %q", got)
		}
		nr, err := native.Get(ctx, "", ember.WithPrefix())
		if err != nil || len(nr.Kvs) != 2 || string(nr.Kvs[1].Key) != "from-etcd" {
			t.Fatalf("ember namespace sees %+v, %v", nr, err)
		}
		for n := 0; n < 2; {
			wr := <-wch
			for _, e := range wr.Events {
				if k := string(e.Kv.Key); k != "from-etcd" && k != "from-ember" {
					t.Fatalf("clientv3 namespaced watch got %q", k)
				}
				n++
			}
		}

		// clientv3's recipes over the namespaced client put their keys under the prefix.
		sess, err := concurrency.NewSession(cli)
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		m := concurrency.NewMutex(sess, "lock")
		if err := m.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if r, err := native.Get(ctx, m.Key()); err != nil || len(r.Kvs) != 1 {
			t.Fatalf("lock key %q in the ember namespace: %+v, %v", m.Key(), r, err)
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// Serving a namespace (as etcd's grpc-proxy --namespace): clients of the gateway see only the
// keys under the prefix, without it, in reads, txns, watches and lease key lists.
func TestNamespace_Served(t *testing.T) {
	st := openStore(t)
	cli := serveTCP(t, ember.Namespace(st, "tenant/"))
	ctx := testCtx(t)
	st.Put(ctx, "outside", "x")
	wch := cli.Watch(ctx, "", clientv3.WithPrefix())
	g, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, cli, "k", "v", clientv3.WithLease(g.ID))
	r, err := st.Get(ctx, "tenant/k")
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("tenant/k in the store: %+v, %v", r, err)
	}
	all, err := cli.Get(ctx, "", clientv3.WithFromKey())
	if err != nil || len(all.Kvs) != 1 || string(all.Kvs[0].Key) != "k" {
		t.Fatalf("client sees %+v, %v; want only k", all, err)
	}
	tr, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("k"), "=", "v")).Then(clientv3.OpGet("k")).Commit()
	if err != nil || !tr.Succeeded || string(tr.Responses[0].GetResponseRange().Kvs[0].Key) != "k" {
		t.Fatalf("txn: %+v, %v", tr, err)
	}
	if wr := <-wch; len(wr.Events) != 1 || string(wr.Events[0].Kv.Key) != "k" {
		t.Fatalf("watch: %+v", wr)
	}
	ttl, err := cli.TimeToLive(ctx, g.ID, clientv3.WithAttachedKeys())
	if err != nil || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "k" {
		t.Fatalf("lease keys: %+v, %v", ttl, err)
	}
}
