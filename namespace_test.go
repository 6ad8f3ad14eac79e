package ember_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ember-kv/ember"
)

func keysOf(kvs []*ember.KeyValue) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = string(kv.Key)
	}
	return out
}

func sameKeys(t *testing.T, what string, got []*ember.KeyValue, want ...string) {
	t.Helper()
	if g := keysOf(got); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("%s: keys %q, want %q", what, g, want)
	}
}

// Two namespaces of one store see only their own keys, without the prefix; the store sees them
// with it.
func TestNamespace_Isolated(t *testing.T) {
	s := openMemStore(t)
	ctx := ctxFor(t, 10*time.Second)
	a, b := ember.Namespace(s, "a/"), ember.Namespace(s, "b/")
	for _, ns := range []*ember.Store{a, b} {
		for _, k := range []string{"k1", "k2", "\xff"} {
			if _, err := ns.Put(ctx, k, "v"); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Neighbours of a/'s key space, outside it.
	for _, k := range []string{"a", "a0", "a.", "0"} {
		s.Put(ctx, k, "outside")
	}

	for name, opts := range map[string][]ember.OpOption{
		"prefix":   {ember.WithPrefix()},
		"from key": {ember.WithFromKey()},
		"range":    {ember.WithRange("\x00")},
	} {
		r, err := a.Get(ctx, "", opts...)
		if name == "range" {
			// An empty key with a range end is refused, as outside a namespace.
			if !errors.Is(err, ember.ErrEmptyKey) {
				t.Fatalf("Get(\"\", WithRange): %v, want ErrEmptyKey", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sameKeys(t, "a "+name, r.Kvs, "k1", "k2", "\xff")
		if r.Count != 3 {
			t.Fatalf("a %s: count %d, want 3", name, r.Count)
		}
	}
	r, _ := b.Get(ctx, "k", ember.WithPrefix(), ember.WithSort(ember.SortByKey, ember.SortDescend))
	sameKeys(t, "b prefix k, descending", r.Kvs, "k2", "k1")
	r, _ = a.Get(ctx, "k2", ember.WithFromKey())
	sameKeys(t, "a from k2", r.Kvs, "k2", "\xff")
	r, _ = s.Get(ctx, "a/", ember.WithPrefix())
	sameKeys(t, "store a/", r.Kvs, "a/k1", "a/k2", "a/\xff")

	pr, err := a.Put(ctx, "k1", "v2", ember.WithPrevKV())
	if err != nil || string(pr.PrevKv.Key) != "k1" {
		t.Fatalf("Put WithPrevKV: %+v, %v", pr, err)
	}
	dr, err := a.Delete(ctx, "", ember.WithPrefix(), ember.WithPrevKV())
	if err != nil || dr.Deleted != 3 {
		t.Fatalf("Delete prefix: %+v, %v", dr, err)
	}
	sameKeys(t, "deleted", dr.PrevKvs, "k1", "k2", "\xff")
	r, _ = b.Get(ctx, "", ember.WithPrefix())
	sameKeys(t, "b after a's delete", r.Kvs, "k1", "k2", "\xff")
	r, _ = s.Get(ctx, "", ember.WithFromKey())
	sameKeys(t, "store", r.Kvs, "0", "a", "a.", "a0", "b/k1", "b/k2", "b/\xff")

	for name, err := range map[string]error{
		"get":    func() error { _, err := a.Get(ctx, ""); return err }(),
		"put":    func() error { _, err := a.Put(ctx, "", "v"); return err }(),
		"delete": func() error { _, err := a.Delete(ctx, ""); return err }(),
		"compare": func() error {
			_, err := a.Txn(ctx).If(ember.Compare(ember.Version(""), "=", 0)).Commit()
			return err
		}(),
	} {
		if !errors.Is(err, ember.ErrEmptyKey) {
			t.Fatalf("%s of the empty key: %v, want ErrEmptyKey", name, err)
		}
	}
}

// A prefix ending in 0xff: a range to the namespace's end stops at the prefix's end (etcd's
// namespace would reach the key right after it).
func TestNamespace_PrefixEndingIn0xff(t *testing.T) {
	s := openMemStore(t)
	ctx := ctxFor(t, 10*time.Second)
	ns := ember.Namespace(s, "p\xff")
	ns.Put(ctx, "x", "in")
	s.Put(ctx, "q", "outside")
	s.Put(ctx, "q\x00", "outside")
	for _, opts := range [][]ember.OpOption{{ember.WithFromKey()}, {ember.WithPrefix()}} {
		r, err := ns.Get(ctx, "", opts...)
		if err != nil {
			t.Fatal(err)
		}
		sameKeys(t, "namespace p\\xff", r.Kvs, "x")
	}
	dr, err := ns.Delete(ctx, "\x00", ember.WithFromKey())
	if err != nil || dr.Deleted != 1 {
		t.Fatalf("Delete from key: %+v, %v", dr, err)
	}
	r, _ := s.Get(ctx, "q", ember.WithPrefix())
	sameKeys(t, "store after the namespace's delete", r.Kvs, "q", "q\x00")
}

// Compares and nested transactions run on the namespace's keys, and every response in the tree
// has its keys stripped.
func TestNamespace_Txn(t *testing.T) {
	s := openMemStore(t)
	ctx := ctxFor(t, 10*time.Second)
	a := ember.Namespace(s, "a/")
	s.Put(ctx, "x", "root") // same name outside the namespace: the compares must not see it
	a.Put(ctx, "x", "1")
	resp, err := a.Txn(ctx).
		If(ember.Compare(ember.Value("x"), "=", "1"), ember.Compare(ember.Version("x").WithPrefix(), ">", 0)).
		Then(
			ember.OpPut("y", "2", ember.WithPrevKV()),
			ember.OpTxn([]ember.Cmp{ember.Compare(ember.CreateRevision("x"), "=", 0)}, nil,
				[]ember.Op{ember.OpGet("", ember.WithPrefix()), ember.OpDelete("x", ember.WithPrevKV())}),
		).Commit()
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Succeeded {
		t.Fatal("compares on the namespace's keys failed")
	}
	if pk := resp.Responses[0].Put().PrevKv; pk != nil {
		t.Fatalf("put of a new key has PrevKv %+v", pk)
	}
	inner := resp.Responses[1].Txn()
	if inner.Succeeded {
		t.Fatal("nested compare CreateRevision(x) = 0 held, but x exists in the namespace")
	}
	sameKeys(t, "nested get", inner.Responses[0].Get().Kvs, "x", "y")
	sameKeys(t, "nested delete", inner.Responses[1].Del().PrevKvs, "x")

	r, _ := s.Get(ctx, "x")
	if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "root" {
		t.Fatalf("key x outside the namespace: %+v", r.Kvs)
	}
	// A Value compare on the namespace's x must not see the store's x.
	resp, err = a.Txn(ctx).If(ember.Compare(ember.Value("x"), "=", "root")).Commit()
	if err != nil || resp.Succeeded {
		t.Fatalf("compare saw a key outside the namespace: %+v, %v", resp, err)
	}
}

// A watch in a namespace gets the namespace's events only, keys stripped (previous pairs too),
// while a watch of the same keys on the store still gets them whole: the events they share are
// not changed.
func TestNamespace_Watch(t *testing.T) {
	s := openMemStore(t)
	ctx := ctxFor(t, 10*time.Second)
	a := ember.Namespace(s, "a/")
	nsAll := a.Watch(ctx, "", ember.WithPrefix(), ember.WithPrevKV())
	nsKey := a.Watch(ctx, "k")
	root := s.Watch(ctx, "a/k", ember.WithPrevKV())

	s.Put(ctx, "b/k", "other")
	s.Put(ctx, "a0", "outside")
	a.Put(ctx, "k", "1")
	a.Put(ctx, "k", "2")
	p, _ := a.Delete(ctx, "k")

	var evs []*ember.Event
	for len(evs) < 3 {
		wr := next(t, nsAll)
		evs = append(evs, wr.Events...)
	}
	want := []string{"PUT k  -", "PUT k 1 k", "DELETE k 2 k"}
	for i, e := range evs {
		prev := "-"
		if e.PrevKv != nil {
			prev = string(e.PrevKv.Key)
		}
		if got := fmt.Sprintf("%v %s %s %s", e.Type, e.Kv.Key, prevVal(e), prev); got != want[i] {
			t.Fatalf("namespace event %d: %q, want %q", i, got, want[i])
		}
	}
	if evs[2].Kv.ModRevision != p.Header.Revision {
		t.Fatalf("delete at %d, want %d", evs[2].Kv.ModRevision, p.Header.Revision)
	}
	if wr := next(t, nsKey); string(wr.Events[0].Kv.Key) != "k" {
		t.Fatalf("single-key watch in the namespace: key %q", wr.Events[0].Kv.Key)
	}
	for n := 0; n < 3; {
		wr := next(t, root)
		for _, e := range wr.Events {
			if string(e.Kv.Key) != "a/k" || (e.PrevKv != nil && string(e.PrevKv.Key) != "a/k") {
				t.Fatalf("store watch got key %q (prev %+v)", e.Kv.Key, e.PrevKv)
			}
			n++
		}
	}
}

func prevVal(e *ember.Event) string {
	if e.PrevKv == nil {
		return ""
	}
	return string(e.PrevKv.Value)
}

// TimeToLive in a namespace lists the attached keys under the prefix only, without it.
func TestNamespace_TimeToLiveKeys(t *testing.T) {
	s := openMemStore(t)
	ctx := ctxFor(t, 10*time.Second)
	a := ember.Namespace(s, "a/")
	g, err := a.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	a.Put(ctx, "x", "v", ember.WithLease(g.ID))
	s.Put(ctx, "b/y", "v", ember.WithLease(g.ID))
	r, err := a.TimeToLive(ctx, g.ID, ember.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%q", r.Keys) != `["x"]` {
		t.Fatalf("namespace keys %q, want [x]", r.Keys)
	}
	r, _ = s.TimeToLive(ctx, g.ID, ember.WithAttachedKeys())
	if fmt.Sprintf("%q", r.Keys) != `["a/x" "b/y"]` {
		t.Fatalf("store keys %q", r.Keys)
	}
}

// BenchmarkNamespace_Get compares a serializable Get on the store and through a namespace (one
// member in memory, one client): the namespace's cost is prefixing the key and stripping it.
//
//	go test -run xxx -bench BenchmarkNamespace_Get -benchmem
func BenchmarkNamespace_Get(b *testing.B) {
	s := openMemStore(b)
	ctx := context.Background()
	ns := ember.Namespace(s, "app/")
	for i := range 1000 {
		if _, err := ns.Put(ctx, fmt.Sprintf("key-%06d", i), "value"); err != nil {
			b.Fatal(err)
		}
	}
	for name, st := range map[string]*ember.Store{"store": s, "namespace": ns} {
		key := "app/key-%06d"
		if st == ns {
			key = "key-%06d"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				r, err := st.Get(ctx, fmt.Sprintf(key, i%1000), ember.WithSerializable())
				if err != nil || len(r.Kvs) != 1 {
					b.Fatal(r, err)
				}
			}
		})
	}
}
