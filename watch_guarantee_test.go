package ember_test

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/internal/watchcheck"
	"github.com/ember-kv/ember/internal/watchtest"
)

// Load of TestWatch_GuaranteesUnderConcurrentWritersAndCompaction.
const (
	gwKeys         = 50
	gwWriters      = 4
	gwWriteFor     = 3 * time.Second
	gwCompactLag   = 200 // revisions kept behind the current one
	gwCompactEvery = 300 * time.Millisecond
	gwProgressTick = 100 * time.Millisecond // WithWatchProgressNotifyInterval
)

// TestWatch_GuaranteesUnderConcurrentWritersAndCompaction runs concurrent writers (puts,
// deletes, multi-key transactions, leases revoked with their keys) and a compactor while
// watchers with mixed ranges, start revisions and options read at different speeds, then checks
// every watcher's stream against etcd's guarantees with watchcheck. The ground truth is an
// unfiltered WithPrevKV watch of every key from revision 1, which the compactor never overtakes;
// it is itself cross-checked against the writers' acknowledgements and the final key-value
// state.
func TestWatch_GuaranteesUnderConcurrentWritersAndCompaction(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		s, err := ember.Open("", ember.WithWatchProgressNotifyInterval(gwProgressTick))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		gwRun(t, []*ember.Store{s})
	})
	t.Run("cluster", func(t *testing.T) {
		if testing.Short() {
			t.Skip("3-member cluster skipped in -short mode")
		}
		c := embertest.NewCluster(t, 3, ember.WithWatchProgressNotifyInterval(gwProgressTick))
		stores := []*ember.Store{c.Leader().Store()}
		for _, f := range c.Followers() {
			stores = append(stores, f.Store())
		}
		gwRun(t, stores)
	})
}

// gwStart says how a watcher picks its start revision.
type gwStart int

const (
	gwFromFirst gwStart = iota // WithRev(1)
	gwNow                      // no WithRev: after the current revision
	gwPast                     // current revision - delta (maybe compacted already)
	gwFuture                   // current revision + delta
	gwCompacted                // just below the compaction revision (1 before any compaction)
)

type gwSpec struct {
	name     string
	key, end string // end as watchcheck.Watch.End; ignored with prefix
	prefix   bool
	start    gwStart
	delta    int64
	delay    time.Duration // after the writers start

	prevKV, filterPut, filterDelete, progressNotify bool

	// slow is a pause after every response while the writers run; afterwards every watcher
	// drains at full speed so the final bookmarks come quickly.
	slow     time.Duration
	stall    bool          // stops reading for a second once it has run for half a second
	lateRead time.Duration // pause before the first receive, while a catch-up waits to send
}

// gwWatcher runs one watch and records what it receives.
type gwWatcher struct {
	spec   gwSpec
	s      *ember.Store
	cancel context.CancelFunc
	done   chan struct{}   // closed when the watch channel closed and the reader returned
	writes <-chan struct{} // closed when the writers stop

	maxSeen  atomic.Int64 // highest event revision received
	bookmark atomic.Int64 // highest progress notification received

	mu sync.Mutex // guards cw.Responses
	cw watchcheck.Watch
}

// start opens the watch. The start revision and whether it is compacted already come from the
// serving member's own state, which is what the member judges the request by.
func (w *gwWatcher) start(ctx context.Context) error {
	st, err := w.s.Status(ctx)
	if err != nil {
		return err
	}
	sp := w.spec
	w.cw = watchcheck.Watch{Key: sp.key, End: sp.end, FilterPut: sp.filterPut, FilterDelete: sp.filterDelete, PrevKV: sp.prevKV}
	var opts []ember.OpOption
	switch {
	case sp.prefix:
		w.cw.End = ember.GetPrefixRangeEnd(sp.key)
		opts = append(opts, ember.WithPrefix())
	case sp.end == "\x00":
		opts = append(opts, ember.WithFromKey())
	case sp.end != "":
		opts = append(opts, ember.WithRange(sp.end))
	}
	switch sp.start {
	case gwFromFirst:
		w.cw.StartRev = 1
	case gwNow:
		// The created response's header tells the checker where "now" was.
		opts = append(opts, ember.WithCreatedNotify())
	case gwPast:
		w.cw.StartRev = max(1, st.Revision-sp.delta)
	case gwFuture:
		w.cw.StartRev = st.Revision + sp.delta
	case gwCompacted:
		w.cw.StartRev = max(1, st.CompactRevision-1)
	}
	if w.cw.StartRev != 0 {
		opts = append(opts, ember.WithRev(w.cw.StartRev))
	}
	w.cw.StartCompacted = w.cw.StartRev != 0 && w.cw.StartRev < st.CompactRevision
	for _, o := range []struct {
		on  bool
		opt ember.OpOption
	}{{sp.prevKV, ember.WithPrevKV()}, {sp.filterPut, ember.WithFilterPut()},
		{sp.filterDelete, ember.WithFilterDelete()}, {sp.progressNotify, ember.WithProgressNotify()}} {
		if o.on {
			opts = append(opts, o.opt)
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	w.cancel = cancel
	wc := w.s.Watch(wctx, sp.key, opts...)
	go w.read(wc)
	return nil
}

func (w *gwWatcher) read(wc ember.WatchChan) {
	defer close(w.done)
	time.Sleep(w.spec.lateRead)
	began := time.Now()
	stalled := false
	for resp := range wc {
		r := watchtest.Response(resp)
		w.mu.Lock()
		w.cw.Responses = append(w.cw.Responses, r)
		w.mu.Unlock()
		for _, e := range r.Events {
			w.maxSeen.Store(max(w.maxSeen.Load(), e.Kv.ModRevision))
		}
		if r.IsProgress() {
			w.bookmark.Store(max(w.bookmark.Load(), r.HeaderRev))
		}
		if w.spec.slow > 0 && !gwClosed(w.writes) {
			time.Sleep(w.spec.slow)
		}
		if w.spec.stall && !stalled && time.Since(began) > 500*time.Millisecond {
			stalled = true
			time.Sleep(time.Second)
		}
	}
}

func gwClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (w *gwWatcher) watch() watchcheck.Watch {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cw
}

// gwAck is a change a writer's response reported.
type gwAck struct {
	rev   int64
	key   string
	del   bool
	val   string
	lease int64
	// prefixDeleted is, for a delete of every key under key, how many it deleted.
	prefixDeleted int64
}

func gwKey(r *rand.Rand) string { return fmt.Sprintf("k/%02d", r.Intn(gwKeys)) }

// gwDistinctKeys returns n different keys.
func gwDistinctKeys(r *rand.Rand, n int) []string {
	var ks []string
	for _, i := range r.Perm(gwKeys)[:n] {
		ks = append(ks, fmt.Sprintf("k/%02d", i))
	}
	return ks
}

// gwWrite does one random write through s and returns the changes its response reports.
func gwWrite(ctx context.Context, s *ember.Store, r *rand.Rand, val string) ([]gwAck, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	switch x := r.Intn(20); {
	case x < 8:
		k := gwKey(r)
		p, err := s.Put(ctx, k, val)
		if err != nil {
			return nil, err
		}
		return []gwAck{{rev: p.Header.Revision, key: k, val: val}}, nil
	case x < 11:
		k := gwKey(r)
		d, err := s.Delete(ctx, k)
		if err != nil || d.Deleted == 0 {
			return nil, err
		}
		return []gwAck{{rev: d.Header.Revision, key: k, del: true}}, nil
	case x < 12:
		pfx := fmt.Sprintf("k/%d", r.Intn(gwKeys/10))
		d, err := s.Delete(ctx, pfx, ember.WithPrefix())
		if err != nil || d.Deleted == 0 {
			return nil, err
		}
		return []gwAck{{rev: d.Header.Revision, key: pfx, del: true, prefixDeleted: d.Deleted}}, nil
	case x < 17:
		ks := gwDistinctKeys(r, 3)
		tr, err := s.Txn(ctx).If(ember.Compare(ember.Version(ks[0]), ">", 0)).
			Then(ember.OpPut(ks[0], val), ember.OpDelete(ks[1]), ember.OpPut(ks[2], val)).
			Else(ember.OpPut(ks[1], val), ember.OpPut(ks[2], val)).Commit()
		if err != nil {
			return nil, err
		}
		var acks []gwAck
		if tr.Succeeded {
			acks = append(acks, gwAck{rev: tr.Header.Revision, key: ks[0], val: val})
			if tr.Responses[1].Del().Deleted > 0 {
				acks = append(acks, gwAck{rev: tr.Header.Revision, key: ks[1], del: true})
			}
		} else {
			acks = append(acks, gwAck{rev: tr.Header.Revision, key: ks[1], val: val})
		}
		return append(acks, gwAck{rev: tr.Header.Revision, key: ks[2], val: val}), nil
	}
	// A lease with keys attached in one transaction, then revoked: its keys go in one revision.
	g, err := s.Grant(ctx, 60)
	if err != nil {
		return nil, err
	}
	var ops []ember.Op
	ks := gwDistinctKeys(r, 1+r.Intn(3))
	for _, k := range ks {
		ops = append(ops, ember.OpPut(k, val, ember.WithLease(g.ID)))
	}
	tr, err := s.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	var acks []gwAck
	for _, k := range ks {
		acks = append(acks, gwAck{rev: tr.Header.Revision, key: k, val: val, lease: int64(g.ID)})
	}
	_, err = s.Revoke(ctx, g.ID)
	return acks, err
}

// gwRun runs the scenario on stores: stores[0] records the history and compacts; writers and
// watchers spread over all of them.
func gwRun(t *testing.T, stores []*ember.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range stores {
		if err := s.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)

	stop := make(chan struct{}) // closed when the writers are to stop
	// The recorder starts before the first write with no start revision, so it never needs to
	// catch up from history unless it falls behind.
	rec := &gwWatcher{spec: gwSpec{name: "recorder", key: "", end: "\x00", start: gwNow, prevKV: true},
		s: stores[0], done: make(chan struct{}), writes: stop}
	if err := rec.start(ctx); err != nil {
		t.Fatal(err)
	}
	specs := []gwSpec{
		{name: "prefix k/1 from rev 1, prevKV, slow", key: "k/1", prefix: true, start: gwFromFirst,
			prevKV: true, slow: 2 * time.Millisecond},
		{name: "key k/07 now, deletes filtered", key: "k/07", start: gwNow, delay: 500 * time.Millisecond,
			filterDelete: true},
		{name: "from k/3, 100 back, prevKV, puts filtered, progress", key: "k/3", end: "\x00", start: gwPast,
			delta: 100, delay: time.Second, prevKV: true, filterPut: true, progressNotify: true},
		{name: "range [k/20, k/40), below the compaction", key: "k/20", end: "k/40", start: gwCompacted,
			delay: 1500 * time.Millisecond, prevKV: true},
		{name: "prefix k/, 50 ahead, progress", key: "k/", prefix: true, start: gwFuture, delta: 50,
			delay: 700 * time.Millisecond, progressNotify: true},
		{name: "prefix k/ now, prevKV, stalls", key: "k/", prefix: true, start: gwNow,
			delay: 200 * time.Millisecond, prevKV: true, stall: true},
		{name: "prefix k/4, 150 back, deletes filtered, reads late and slowly", key: "k/4", prefix: true,
			start: gwPast, delta: 150, delay: 1200 * time.Millisecond, filterDelete: true,
			lateRead: 300 * time.Millisecond, slow: 5 * time.Millisecond},
		{name: "range [k/05, k/15) now, prevKV, progress", key: "k/05", end: "k/15", start: gwNow,
			prevKV: true, progressNotify: true},
	}
	watchers := make([]*gwWatcher, len(specs))
	for i, sp := range specs {
		watchers[i] = &gwWatcher{spec: sp, s: stores[i%len(stores)], done: make(chan struct{}), writes: stop}
	}

	var bg sync.WaitGroup
	var maxCompact atomic.Int64 // highest compaction ever requested
	var writeErrs atomic.Int64
	acks := make([][]gwAck, gwWriters)
	for i := range gwWriters {
		bg.Add(1)
		go func() {
			defer bg.Done()
			r := rand.New(rand.NewSource(seed + int64(i)))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				a, err := gwWrite(ctx, stores[r.Intn(len(stores))], r, fmt.Sprintf("w%d-%d", i, n))
				if err != nil {
					writeErrs.Add(1)
				}
				acks[i] = append(acks[i], a...)
			}
		}()
	}
	bg.Add(1)
	go func() { // compactor: never past what the recorder has received, so it is never canceled
		defer bg.Done()
		tick := time.NewTicker(gwCompactEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			st, err := stores[0].Status(ctx)
			if err != nil {
				continue
			}
			target := min(st.Revision-gwCompactLag, rec.maxSeen.Load())
			if target > maxCompact.Load() {
				maxCompact.Store(target)
				if _, err := stores[0].Compact(ctx, target); err != nil {
					t.Logf("compact %d: %v", target, err)
				}
			}
		}
	}()
	bg.Add(1)
	go func() { // progress requests on every member
		defer bg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for _, s := range stores {
				if err := s.RequestProgress(ctx); err != nil {
					t.Errorf("RequestProgress: %v", err)
				}
			}
		}
	}()
	var starters sync.WaitGroup
	for _, w := range watchers {
		starters.Add(1)
		go func() {
			defer starters.Done()
			time.Sleep(w.spec.delay)
			if err := w.start(ctx); err != nil {
				t.Errorf("%s: start: %v", w.spec.name, err)
				close(w.done)
			}
		}()
	}
	time.Sleep(gwWriteFor)
	close(stop)
	bg.Wait()
	starters.Wait()

	// Every change is in; let the recorder and every live watcher be bookmarked at the final
	// revision, so that reliability is checked up to the end.
	final, err := stores[0].Get(ctx, "\x00", ember.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	finalRev := final.Header.Revision
	deadline := time.Now().Add(20 * time.Second)
	for _, w := range append([]*gwWatcher{rec}, watchers...) {
		// A future start beyond the final revision never reaches a revision to report.
		for !gwClosed(w.done) && w.bookmark.Load() < finalRev && w.watch().StartRev <= finalRev+1 {
			if time.Now().After(deadline) {
				t.Errorf("%s: no progress notification at the final revision %d (last %d, last event %d)",
					w.spec.name, finalRev, w.bookmark.Load(), w.maxSeen.Load())
				break
			}
			if err := w.s.RequestProgress(ctx); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, w := range append([]*gwWatcher{rec}, watchers...) {
		if w.cancel != nil {
			w.cancel()
		}
		<-w.done
	}

	history := gwHistory(t, rec, finalRev)
	gwCheckAcks(t, history, acks, writeErrs.Load())
	gwCheckFinalState(t, history, final.Kvs)
	t.Logf("%d revisions, %d write errors, compacted through %d", finalRev, writeErrs.Load(), maxCompact.Load())
	for _, w := range append([]*gwWatcher{rec}, watchers...) {
		cw := w.watch()
		cw.PrevCompactedThrough = maxCompact.Load()
		var events, progress int
		var compacted int64
		for _, r := range cw.Responses {
			events += len(r.Events)
			if r.IsProgress() {
				progress++
			}
			compacted = max(compacted, r.CompactRevision)
		}
		t.Logf("%s on %s: start %d (compacted %v), %d responses, %d events, %d progress, canceled at compaction %d",
			w.spec.name, w.s.ID(), cw.StartRev, cw.StartCompacted, len(cw.Responses), events, progress, compacted)
		if vs := watchcheck.Check(history, cw); len(vs) > 0 {
			t.Errorf("%s on %s: %d violations:%s", w.spec.name, w.s.ID(), len(vs), watchcheck.List(vs))
		}
	}
}

// gwHistory turns the recorder's stream into the history (watchcheck.RecordedHistory checks
// that it is one).
func gwHistory(t *testing.T, rec *gwWatcher, finalRev int64) []watchcheck.Revision {
	t.Helper()
	h, err := watchcheck.RecordedHistory(rec.watch().Responses, finalRev)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// gwCheckAcks checks that every change a writer's response reported is in the history.
func gwCheckAcks(t *testing.T, h []watchcheck.Revision, acks [][]gwAck, errs int64) {
	t.Helper()
	n := 0
	for _, as := range acks {
		for _, a := range as {
			n++
			evs := h[a.rev-2].Events
			if a.prefixDeleted > 0 {
				var got int64
				for _, e := range evs {
					if e.Type == watchcheck.Delete && strings.HasPrefix(e.Kv.Key, a.key) {
						got++
					}
				}
				if got != a.prefixDeleted {
					t.Errorf("delete of prefix %q at %d removed %d keys, history has %d", a.key, a.rev, a.prefixDeleted, got)
				}
				continue
			}
			found := false
			for _, e := range evs {
				if e.Kv.Key == a.key {
					found = true
					if (e.Type == watchcheck.Delete) != a.del || (!a.del && (e.Kv.Value != a.val || e.Kv.Lease != a.lease)) {
						t.Errorf("write at %d: %+v, history has %v %+v", a.rev, a, e.Type, e.Kv)
					}
				}
			}
			if !found {
				t.Errorf("write at %d: %+v, not in the history", a.rev, a)
			}
		}
	}
	if n < 100 {
		t.Fatalf("only %d acknowledged changes (%d write errors): the run proves little", n, errs)
	}
}

// gwCheckFinalState checks that replaying the history gives the store's final contents.
func gwCheckFinalState(t *testing.T, h []watchcheck.Revision, kvs []*ember.KeyValue) {
	t.Helper()
	state := map[string]watchcheck.KeyValue{}
	for _, r := range h {
		for _, e := range r.Events {
			if e.Type == watchcheck.Delete {
				delete(state, e.Kv.Key)
			} else {
				state[e.Kv.Key] = e.Kv
			}
		}
	}
	for _, kv := range kvs {
		got := watchtest.KV(kv)
		if want, ok := state[got.Key]; !ok || want != got {
			t.Errorf("final %q = %+v, history replays to %+v (present %v)", got.Key, got, want, ok)
		}
		delete(state, got.Key)
	}
	for k, kv := range state {
		t.Errorf("history replays to %q = %+v, absent from the store", k, kv)
	}
}

// A watch catching up from history reads a view, sends what it holds, then joins the live
// stream. Revisions applied while its consumer was slow to take the catch-up response must
// still be delivered.
func TestWatch_GuaranteesCatchUpWithSlowConsumer(t *testing.T) {
	s, err := ember.Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	var history []watchcheck.Revision
	put := func(i int64) {
		t.Helper()
		p, err := s.Put(ctx, "k", fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		kv := watchcheck.KeyValue{Key: "k", Value: fmt.Sprint(i), CreateRevision: 2, ModRevision: p.Header.Revision, Version: i + 1}
		history = append(history, watchcheck.Revision{Rev: kv.ModRevision, Events: []watchcheck.Event{{Type: watchcheck.Put, Kv: kv}}})
	}
	for i := range int64(10) {
		put(i)
	}
	wc := s.Watch(ctx, "k", ember.WithRev(2))
	time.Sleep(200 * time.Millisecond) // the catch-up has read its view and waits for the consumer
	for i := int64(10); i < 20; i++ {
		put(i)
	}
	time.Sleep(200 * time.Millisecond) // the live stream has moved past them
	cw := watchcheck.Watch{Key: "k", StartRev: 2}
	cw.Responses = append(cw.Responses, watchtest.Response(<-wc))
	put(20)
	last := history[len(history)-1].Rev
	for seen := int64(0); seen < last; {
		select {
		case resp, ok := <-wc:
			if !ok {
				t.Fatal("watch closed")
			}
			r := watchtest.Response(resp)
			cw.Responses = append(cw.Responses, r)
			for _, e := range r.Events {
				seen = max(seen, e.Kv.ModRevision)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no event at revision %d within 5s", last)
		}
	}
	if vs := watchcheck.Check(history, cw); len(vs) > 0 {
		t.Errorf("%d violations:%s", len(vs), watchcheck.List(vs))
	}
}
