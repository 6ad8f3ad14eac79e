package mirror

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ember-kv/ember"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openStore(t testing.TB) *ember.Store {
	t.Helper()
	s, err := ember.Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.WaitReady(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	return s
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// setLimits makes SyncBase use pages of n keys and read ahead by buffer pages for one test.
func setLimits(t testing.TB, n int64, buffer int) {
	oldN, oldBuf := batchLimit, respBuffer
	batchLimit, respBuffer = n, buffer
	t.Cleanup(func() { batchLimit, respBuffer = oldN, oldBuf })
}

// contents renders the keys and values under prefix, read at rev (0 = latest).
func contents(t testing.TB, s *ember.Store, prefix string, rev int64) string {
	t.Helper()
	opts := []ember.OpOption{ember.WithRev(rev)}
	if prefix == "" {
		prefix, opts = "\x00", append(opts, ember.WithFromKey())
	} else {
		opts = append(opts, ember.WithPrefix())
	}
	r, err := s.Get(testCtx(t), prefix, opts...)
	if err != nil {
		t.Fatal(err)
	}
	out := ""
	for _, kv := range r.Kvs {
		out += fmt.Sprintf("%q=%q ", kv.Key, kv.Value)
	}
	return out
}

// A prefix copied while it is written to equals the source at the Syncer's revision, page
// boundaries included; the copy then follows the source by SyncUpdates until they are equal.
func TestSyncer_CopyThenFollow(t *testing.T) {
	setLimits(t, 7, 1024) // many pages
	for _, prefix := range []string{"src/", ""} {
		t.Run(fmt.Sprintf("prefix %q", prefix), func(t *testing.T) {
			src, dst := openStore(t), openStore(t)
			ctx := testCtx(t)
			for i := range 60 {
				src.Put(ctx, fmt.Sprintf("src/%03d", i), "v0")
			}
			src.Put(ctx, "other", "outside the prefix")
			r, _ := src.Get(ctx, "src/")
			rev := r.Header.Revision
			// Changes after the revision, before the copy starts: it must not see them.
			src.Delete(ctx, "src/000")
			src.Put(ctx, "src/001", "changed")
			src.Put(ctx, "src/070", "new")

			// Writes during the copy: puts, deletes and new keys, inside and outside the prefix.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewSource(1))
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					k := fmt.Sprintf("src/%03d", rng.Intn(80))
					if rng.Intn(4) == 0 {
						src.Delete(ctx, k)
					} else {
						src.Put(ctx, k, fmt.Sprintf("v%d", i))
					}
					src.Put(ctx, "other", fmt.Sprint(i))
				}
			}()

			y := NewSyncer(src, prefix, rev)
			respc, errc := y.SyncBase(ctx)
			pages := 0
			for r := range respc {
				pages++
				for _, kv := range r.Kvs {
					if _, err := dst.Put(ctx, string(kv.Key), string(kv.Value)); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := <-errc; err != nil {
				t.Fatalf("SyncBase: %v", err)
			}
			if pages < 2 {
				t.Fatalf("%d pages, want several", pages)
			}
			if got, want := contents(t, dst, prefix, 0), contents(t, src, prefix, rev); got != want {
				t.Fatalf("copy differs from the source at revision %d:\n copy: %s\n  src: %s", rev, got, want)
			}

			wc := y.SyncUpdates(ctx)
			close(stop)
			wg.Wait()
			final, _ := src.Put(ctx, "src/final", "last")
			for done := false; !done; {
				var wr ember.WatchResponse
				select {
				case wr = <-wc:
				case <-time.After(10 * time.Second):
					t.Fatal("no update in 10s")
				}
				if err := wr.Err(); err != nil {
					t.Fatalf("SyncUpdates: %v", err)
				}
				for _, e := range wr.Events {
					var err error
					if e.Type == ember.EventTypeDelete {
						_, err = dst.Delete(ctx, string(e.Kv.Key))
					} else {
						_, err = dst.Put(ctx, string(e.Kv.Key), string(e.Kv.Value))
					}
					if err != nil {
						t.Fatal(err)
					}
					done = e.Kv.ModRevision == final.Header.Revision
				}
			}
			if got, want := contents(t, dst, prefix, 0), contents(t, src, prefix, 0); got != want {
				t.Fatalf("copy differs from the source after following it:\n copy: %s\n  src: %s", got, want)
			}
		})
	}
}

// A Syncer made with revision 0 copies at the store's revision when SyncBase starts, and
// SyncUpdates follows from there.
func TestSyncer_RevisionZero(t *testing.T) {
	src := openStore(t)
	ctx := testCtx(t)
	src.Put(ctx, "p/a", "1")
	y := NewSyncer(src, "p/", 0)
	respc, errc := y.SyncBase(ctx)
	var keys []string
	for r := range respc {
		for _, kv := range r.Kvs {
			keys = append(keys, string(kv.Key))
		}
	}
	if err := <-errc; err != nil || fmt.Sprint(keys) != "[p/a]" {
		t.Fatalf("SyncBase: %q, %v", keys, err)
	}
	wc := y.SyncUpdates(ctx)
	src.Put(ctx, "p/b", "2")
	if wr := <-wc; len(wr.Events) != 1 || string(wr.Events[0].Kv.Key) != "p/b" {
		t.Fatalf("first update %+v, want the put of p/b", wr)
	}
}

// A revision compacted before SyncBase reads it, or between two of its pages, ends the copy
// with ember.ErrCompacted, as etcd's Syncer.
func TestSyncer_Compacted(t *testing.T) {
	t.Run("before the first page", func(t *testing.T) {
		src := openStore(t)
		ctx := testCtx(t)
		p, _ := src.Put(ctx, "p/a", "1")
		src.Put(ctx, "p/a", "2")
		if _, err := src.Compact(ctx, p.Header.Revision+1); err != nil {
			t.Fatal(err)
		}
		respc, errc := NewSyncer(src, "p/", p.Header.Revision).SyncBase(ctx)
		for r := range respc {
			t.Fatalf("got a page %+v at a compacted revision", r)
		}
		if err := <-errc; !errors.Is(err, ember.ErrCompacted) {
			t.Fatalf("SyncBase: %v, want ErrCompacted", err)
		}
	})
	t.Run("between pages", func(t *testing.T) {
		// One key a page and no read-ahead: the third page is read only once the second was
		// taken, after the compaction.
		setLimits(t, 1, 0)
		src := openStore(t)
		ctx := testCtx(t)
		for _, k := range []string{"p/a", "p/b", "p/c", "p/d"} {
			src.Put(ctx, k, "1")
		}
		r, _ := src.Put(ctx, "p/a", "2")
		rev := r.Header.Revision - 1
		respc, errc := NewSyncer(src, "p/", rev).SyncBase(ctx)
		first := <-respc
		if len(first.Kvs) != 1 || string(first.Kvs[0].Key) != "p/a" || string(first.Kvs[0].Value) != "1" {
			t.Fatalf("first page %+v", first)
		}
		if _, err := src.Compact(ctx, rev+1); err != nil {
			t.Fatal(err)
		}
		pages := 1
		for range respc {
			pages++
		}
		if err := <-errc; !errors.Is(err, ember.ErrCompacted) {
			t.Fatalf("SyncBase: %v after %d pages, want ErrCompacted", err, pages)
		}
		if pages > 2 {
			t.Fatalf("%d pages at a compacted revision", pages)
		}
	})
	t.Run("updates", func(t *testing.T) {
		src := openStore(t)
		ctx := testCtx(t)
		p, _ := src.Put(ctx, "p/a", "1")
		src.Put(ctx, "p/a", "2")
		src.Put(ctx, "p/a", "3")
		src.Compact(ctx, p.Header.Revision+2)
		wr := <-NewSyncer(src, "p/", p.Header.Revision).SyncUpdates(ctx)
		if !errors.Is(wr.Err(), ember.ErrCompacted) {
			t.Fatalf("SyncUpdates from a compacted revision: %+v, want ErrCompacted", wr)
		}
	})
}

// SyncUpdates with no revision to follow from answers with a canceled response instead of
// panicking as etcd's does.
func TestSyncer_UpdatesWithoutRevision(t *testing.T) {
	src := openStore(t)
	wc := NewSyncer(src, "p/", 0).SyncUpdates(testCtx(t))
	wr, ok := <-wc
	if !ok || !wr.Canceled || wr.Err() == nil || wr.Err().Error() != ErrNoRevision.Error() {
		t.Fatalf("response %+v (err %v), want canceled with ErrNoRevision", wr, wr.Err())
	}
	if _, ok := <-wc; ok {
		t.Fatal("channel still open")
	}
}

// A consumer that stops reading and cancels ctx ends SyncBase's reader.
func TestSyncer_CancelStopsReader(t *testing.T) {
	setLimits(t, 1, 0)
	src := openStore(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	src.Put(ctx, "p/a", "1")
	src.Put(ctx, "p/b", "1")
	respc, errc := NewSyncer(src, "p/", 0).SyncBase(ctx)
	<-respc
	cancel()
	// Not reading on: the reader must give up its send of the second page by itself.
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("SyncBase after cancel: %v, want context.Canceled", err)
	}
}
