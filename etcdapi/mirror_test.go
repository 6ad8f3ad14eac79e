package etcdapi

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/mirror"

	"github.com/ember-kv/ember"
)

// etcd's mirror is client-side: clientv3's Syncer runs over the gateway unchanged, its pages
// at the revision it was given and its updates from the next one.
func TestMirror_ClientV3(t *testing.T) {
	forEachTransport(t, func(t *testing.T, st *ember.Store, cli *clientv3.Client) {
		ctx := testCtx(t)
		mustPut(t, cli, "p/a", "1")
		rev := mustPut(t, cli, "p/b", "1").Header.Revision
		mustPut(t, cli, "p/a", "2") // after the revision: not in the copy

		y := mirror.NewSyncer(cli, "p/", rev)
		respc, errc := y.SyncBase(ctx)
		var got []string
		for r := range respc {
			for _, kv := range r.Kvs {
				got = append(got, string(kv.Key)+"="+string(kv.Value))
			}
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0] != "p/a=1" || got[1] != "p/b=1" {
			t.Fatalf("base %q, want [p/a=1 p/b=1]", got)
		}
		wr := <-y.SyncUpdates(ctx)
		if len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != "2" {
			t.Fatalf("first update %+v, want the put of p/a=2", wr)
		}
	})
}
