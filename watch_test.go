package ember_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember"
)

func openMemStore(t testing.TB, opts ...ember.Option) *ember.Store {
	t.Helper()
	return openDirStore(t, "", opts...)
}

func next(t *testing.T, wc ember.WatchChan) ember.WatchResponse {
	t.Helper()
	select {
	case wr, ok := <-wc:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return wr
	case <-time.After(10 * time.Second):
		t.Fatal("no watch response in 10s")
	}
	return ember.WatchResponse{}
}

// An idle WithProgressNotify watcher reports the current revision every interval; a progress
// notification never carries a revision below an event already delivered.
func TestWatch_ProgressNotify(t *testing.T) {
	s := openMemStore(t, ember.WithWatchProgressNotifyInterval(50*time.Millisecond))
	ctx := ctxFor(t, 30*time.Second)
	for i := 0; i < 3; i++ {
		s.Put(ctx, "other", "x") // revisions 2..4
	}
	wc := s.Watch(ctx, "p", ember.WithProgressNotify())
	wr := next(t, wc)
	if !wr.IsProgressNotify() || wr.Header.Revision != 4 {
		t.Fatalf("first response %+v, want progress at revision 4", wr)
	}
	p, _ := s.Put(ctx, "p", "1")
	var sawEvent bool
	for {
		wr := next(t, wc)
		if len(wr.Events) > 0 {
			sawEvent = true
			continue
		}
		if !wr.IsProgressNotify() {
			t.Fatalf("unexpected response %+v", wr)
		}
		if sawEvent {
			if wr.Header.Revision < p.Header.Revision {
				t.Fatalf("progress at %d after an event at %d", wr.Header.Revision, p.Header.Revision)
			}
			return
		}
		if wr.Header.Revision >= p.Header.Revision {
			t.Fatalf("progress at %d before the event at %d was delivered", wr.Header.Revision, p.Header.Revision)
		}
	}
}

// Cancelling a watch's context closes its channel and frees its goroutine and registration.
func TestWatch_CancelFreesEverything(t *testing.T) {
	s := openMemStore(t)
	ctx := ctxFor(t, 30*time.Second)
	base := runtime.NumGoroutine()
	wctx, cancel := context.WithCancel(ctx)
	var chans []ember.WatchChan
	for i := 0; i < 1000; i++ {
		opts := []ember.OpOption{}
		if i%2 == 0 {
			opts = append(opts, ember.WithPrefix(), ember.WithRev(1))
		}
		chans = append(chans, s.Watch(wctx, fmt.Sprintf("c/%d", i), opts...))
	}
	if st, _ := s.Status(ctx); st.Watchers != 1000 {
		t.Fatalf("%d watchers registered, want 1000", st.Watchers)
	}
	s.Put(ctx, "c/1", "v")
	cancel()
	for i, wc := range chans {
		for range wc {
		}
		_ = i
	}
	waitFor(t, 5*time.Second, "watchers unregistered", func() bool {
		st, _ := s.Status(ctx)
		return st.Watchers == 0
	})
	waitFor(t, 5*time.Second, "watch goroutines gone", func() bool {
		return runtime.NumGoroutine() <= base+5
	})
}

func TestWatch_CreatedNotifyAndNegativeRevision(t *testing.T) {
	s := openMemStore(t)
	ctx := ctxFor(t, 30*time.Second)
	s.Put(ctx, "k", "v")
	wr := next(t, s.Watch(ctx, "k", ember.WithCreatedNotify()))
	if !wr.Created || wr.Header.Revision != 2 {
		t.Fatalf("created notice %+v, want Created at revision 2", wr)
	}
	wc := s.Watch(ctx, "k", ember.WithRev(-1))
	wr = next(t, wc)
	if !wr.Canceled || !errors.Is(wr.Err(), ember.ErrCompacted) {
		t.Fatalf("negative start: %+v, want canceled with ErrCompacted", wr)
	}
	if _, ok := <-wc; ok {
		t.Fatal("channel open after cancel")
	}
}

// A watch that starts at the compaction revision itself sees every event of that revision, the
// deletes included: compaction keeps the tombstones at its own revision.
func TestWatch_StartAtCompactionRevision(t *testing.T) {
	s := openMemStore(t)
	ctx := ctxFor(t, 30*time.Second)
	s.Put(ctx, "a", "1") // 2
	s.Put(ctx, "b", "1") // 3
	d, _ := s.Delete(ctx, "a")
	if _, err := s.Compact(ctx, d.Header.Revision); err != nil {
		t.Fatal(err)
	}
	wr := next(t, s.Watch(ctx, "", ember.WithFromKey(), ember.WithRev(d.Header.Revision)))
	if wr.Err() != nil || len(wr.Events) != 1 || wr.Events[0].Type != ember.EventTypeDelete {
		t.Fatalf("watch at the compaction revision: %+v", wr)
	}
	wr = next(t, s.Watch(ctx, "", ember.WithFromKey(), ember.WithRev(d.Header.Revision-1)))
	if !errors.Is(wr.Err(), ember.ErrCompacted) || wr.CompactRevision != d.Header.Revision {
		t.Fatalf("watch below the compaction revision: %+v", wr)
	}
}

// A consumer that stops reading falls back to history and later receives everything in order;
// writers are not slowed by it.
func TestWatch_StalledConsumerCatchesUp(t *testing.T) {
	s := openMemStore(t)
	ctx := ctxFor(t, 60*time.Second)
	wc := s.Watch(ctx, "s/", ember.WithPrefix(), ember.WithPrevKV())
	const n = 10000
	for i := 0; i < n; i++ {
		if _, err := s.Txn(ctx).Then(ember.OpPut(fmt.Sprintf("s/%d", i%10), fmt.Sprint(i)),
			ember.OpPut(fmt.Sprintf("s/x%d", i%10), fmt.Sprint(i))).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	var last int64
	for got := 0; got < 2*n; {
		wr := next(t, wc)
		if wr.Err() != nil {
			t.Fatal(wr.Err())
		}
		byRev := map[int64]int{}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision < last {
				t.Fatalf("revision went back from %d to %d", last, ev.Kv.ModRevision)
			}
			last = ev.Kv.ModRevision
			byRev[last]++
			if ev.IsModify() && ev.PrevKv == nil {
				t.Fatalf("modify at %d without PrevKv", last)
			}
			got++
		}
		for rev, k := range byRev {
			if k != 2 {
				t.Fatalf("revision %d split: %d of 2 events in one response", rev, k)
			}
		}
	}
	if last != n+1 {
		t.Fatalf("last revision %d, want %d", last, n+1)
	}
}

// Applying an overwrite reads the previous value from the backend only when something needs it:
// a watcher WithPrevKV, started at any point of a stream of overwrites of values kept only in
// the backend, gets every previous value right, whether it was live when the change was applied,
// registered while it was (the apply path reads the values once a watcher wants them), or read
// it from history.
func TestWatch_PrevKV_StoredValues(t *testing.T) {
	s := openDirStore(t, t.TempDir())
	ctx := ctxFor(t, 60*time.Second)
	const keys, rounds = 4, 300
	pad := strings.Repeat("p", 300) // longer than the inline limit: the value lives in state.db
	value := func(key string, version int64) string { return fmt.Sprintf("%s-v%d-%s", key, version, pad) }

	type started struct {
		wc   ember.WatchChan
		from int64 // first revision it must see
	}
	var watchers []started
	for round := range rounds {
		for k := range keys {
			key := fmt.Sprintf("k%d", k)
			if _, err := s.Put(ctx, key, value(key, int64(round+1))); err != nil {
				t.Fatal(err)
			}
		}
		if round%50 == 10 {
			r, err := s.Get(ctx, "k0")
			if err != nil {
				t.Fatal(err)
			}
			watchers = append(watchers,
				started{s.Watch(ctx, "k", ember.WithPrefix(), ember.WithPrevKV()), r.Header.Revision + 1},
				started{s.Watch(ctx, "k", ember.WithPrefix(), ember.WithPrevKV(), ember.WithRev(r.Header.Revision-20)), r.Header.Revision - 20})
		}
	}
	last := int64(1 + keys*rounds)
	for i, w := range watchers {
		for rev := w.from; rev <= last; {
			wr := next(t, w.wc)
			if wr.Err() != nil {
				t.Fatal(wr.Err())
			}
			for _, ev := range wr.Events {
				if ev.Kv.ModRevision < rev {
					continue // a watcher started at the current revision may see a little before from
				}
				rev = ev.Kv.ModRevision + 1
				key := string(ev.Kv.Key)
				if got, want := string(ev.Kv.Value), value(key, ev.Kv.Version); got != want {
					t.Fatalf("watcher %d at %d: value %.12q, want %.12q", i, ev.Kv.ModRevision, got, want)
				}
				if ev.Kv.Version == 1 {
					continue
				}
				if ev.PrevKv == nil {
					t.Fatalf("watcher %d at %d: no PrevKv for version %d of %s", i, ev.Kv.ModRevision, ev.Kv.Version, key)
				}
				if got, want := string(ev.PrevKv.Value), value(key, ev.Kv.Version-1); got != want {
					t.Fatalf("watcher %d at %d: PrevKv %.12q, want %.12q", i, ev.Kv.ModRevision, got, want)
				}
			}
		}
	}
}
