package ember

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/watchcheck"
	"github.com/ember-kv/ember/internal/wire"
)

// hubRig is a watch hub on a host of its own (testHost: no raft, no Store), so the hub is
// tested alone: the test applies entries and installs snapshots itself and, in manual mode,
// runs the dispatcher's steps itself, so that the interleavings of the apply path, the
// dispatcher and the watchers' goroutines are chosen by the test. A second fsm, src, applies
// the same entries and can run ahead: it is the leader whose snapshot a lagging rig installs.
type hubRig struct {
	t     testing.TB
	host  *testHost
	h     *watchHub
	src   *fsm
	index uint64 // raft index of the last entry applied to src (and to the rig when it keeps up)
}

func newHubRig(t testing.TB, manual bool, limits hubLimits) *hubRig {
	t.Helper()
	host := newTestHost(t, limits)
	if !manual {
		host.spawn(host.fsm.watch.dispatch)
	}
	// src has a backend, so that installSnapshot sends a backend stream; its values stay
	// inline, so that writes outpace the dispatcher as the overflow tests need.
	s := &Store{core: &core{}}
	s.watch = newWatchHub(s, 0, 0)
	s.lessor = newLessor(s, hclog.NewNullLogger(), 0)
	s.fsm = newTestFSMInline(t, s.watch, s.lessor, defaultDedupResultBytes, mvcc.InlineValueMax)
	return &hubRig{t: t, host: host, h: host.fsm.watch, src: s.fsm}
}

// watch opens a watch on the rig's hub, as Store.Watch does for a start revision of 0 or more.
func (r *hubRig) watch(ctx context.Context, key string, opts ...OpOption) WatchChan {
	out := make(chan WatchResponse)
	r.h.add(ctx, OpGet(key, opts...), watchExtras{}, out)
	return out
}

// put applies a put of key to src and, unless behind, to the rig; it returns the revision.
func (r *hubRig) put(key, val string, behind bool) int64 {
	r.t.Helper()
	return r.apply(wireOps(wirePut(key, val)), behind)
}

// apply applies a transaction of ops to src and, unless behind, to the rig; it returns the
// revision.
func (r *hubRig) apply(ops []wire.Op, behind bool) int64 {
	r.t.Helper()
	r.index++
	cmd := txnCmd(r.index, &wire.Txn{Success: ops}).Marshal(nil)
	r.src.ApplyBatch([]*raft.Log{{Index: r.index, Type: raft.LogCommand, Data: cmd}})
	if !behind {
		r.host.fsm.ApplyBatch([]*raft.Log{{Index: r.index, Type: raft.LogCommand, Data: cmd}})
		if got, want := r.host.fsm.view().st.Rev(), r.src.app.State().Rev(); got != want {
			r.t.Fatalf("rig at revision %d, src at %d", got, want)
		}
	}
	return r.src.app.State().Rev()
}

// installSnapshot replaces the rig's state with a snapshot of src, as raft does on a lagging
// member.
func (r *hubRig) installSnapshot() {
	r.t.Helper()
	if err := r.host.fsm.Restore(io.NopCloser(bytes.NewReader(snapshotStream(r.t, r.src)))); err != nil {
		r.t.Fatal(err)
	}
}

// drain runs the dispatcher until nothing is pending (manual mode).
func (r *hubRig) drain() {
	for r.h.dispatchOnce() {
	}
}

// history is every change src made, as watchcheck wants it.
func (r *hubRig) history(t testing.TB) []watchcheck.Revision {
	t.Helper()
	var h []watchcheck.Revision
	st := r.src.app.State()
	if !st.Changes(0, func(rec *mvcc.Record) bool {
		prev, ok := st.PrevVersion(rec)
		if !ok {
			t.Fatalf("previous version of %s@%d missing", rec.Key, rec.Mod)
		}
		var prevValue string
		if prev != nil {
			prevValue, _ = st.Value(prev)
		}
		value, _ := st.Value(rec)
		h = watchcheck.AppendEvents(h, []watchcheck.Event{checkEvent(eventOf(rec, value, prev, prevValue, true))})
		return true
	}) {
		t.Fatal("the state's changes could not all be read")
	}
	return h
}

func checkKV(kv *KeyValue) watchcheck.KeyValue {
	return watchcheck.KeyValue{Key: string(kv.Key), Value: string(kv.Value), CreateRevision: kv.CreateRevision,
		ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
}

func checkEvent(e *Event) watchcheck.Event {
	ev := watchcheck.Event{Type: watchcheck.EventType(e.Type), Kv: checkKV(e.Kv)}
	if e.PrevKv != nil {
		p := checkKV(e.PrevKv)
		ev.PrevKv = &p
	}
	return ev
}

func checkResponse(resp WatchResponse) watchcheck.Response {
	r := watchcheck.Response{HeaderRev: resp.Header.Revision, CompactRevision: resp.CompactRevision,
		Created: resp.Created, Canceled: resp.Canceled}
	for _, e := range resp.Events {
		r.Events = append(r.Events, checkEvent(e))
	}
	return r
}

// awaitSynced waits until every watcher is synced, reading into cw whatever wc delivers
// meanwhile (a watcher catching up sends before it registers).
func (r *hubRig) awaitSynced(wc WatchChan, cw *watchcheck.Watch) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !r.allSynced() {
		select {
		case resp := <-wc:
			cw.Responses = append(cw.Responses, checkResponse(resp))
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.t.Fatal("watchers not synced within 10s")
		}
	}
}

func (r *hubRig) allSynced() bool {
	r.h.mu.Lock()
	defer r.h.mu.Unlock()
	for w := range r.h.all {
		w.mu.Lock()
		synced := w.synced
		w.mu.Unlock()
		if !synced {
			return false
		}
	}
	return true
}

// receive reads one response, failing the test if none comes within a few seconds.
func receive(t testing.TB, wc WatchChan) WatchResponse {
	t.Helper()
	select {
	case resp, ok := <-wc:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return resp
	case <-time.After(10 * time.Second):
		t.Fatal("no watch response within 10s")
	}
	return WatchResponse{}
}

// receiveThrough reads responses into cw until one carries an event at or past rev.
func receiveThrough(t testing.TB, wc WatchChan, cw *watchcheck.Watch, rev int64) {
	t.Helper()
	for {
		resp := receive(t, wc)
		if resp.Err() != nil {
			t.Fatalf("watch ended: %v", resp.Err())
		}
		cw.Responses = append(cw.Responses, checkResponse(resp))
		if n := len(resp.Events); n > 0 && resp.Events[n-1].Kv.ModRevision >= rev {
			return
		}
	}
}

// Finding 3 of the reliability review: the dispatcher took a pending batch, a snapshot was
// installed before it fanned the batch out, and the stale fan-out moved the hub's revision back
// below the snapshot's; a watcher catching up from a view older than the snapshot then
// registered as synced and never saw the revisions the snapshot brought.
func TestWatchHub_Restored_BatchTakenBeforeSnapshotSkipsNothing(t *testing.T) {
	r := newHubRig(t, true, defaultHubLimits)
	for i := range 1200 {
		r.put("k", fmt.Sprint(i), false)
	}
	r.drain()
	stale := r.put("k", "stale", false) // pending when the snapshot comes
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cw := &watchcheck.Watch{Key: "k", StartRev: 2}
	wc := r.watch(ctx, "k", WithRev(2))
	// More than one response's worth of revisions: once the first arrives, the watcher has taken
	// its view (at stale, before the snapshot) and waits to send the rest.
	cw.Responses = append(cw.Responses, checkResponse(receive(t, wc)))
	var snapRev int64
	for i := range 10 {
		snapRev = r.put("k", fmt.Sprint("snap", i), true) // the rig is behind: only the snapshot brings these
	}
	taken := false
	r.h.afterTake = func() {
		if !taken {
			taken = true
			r.installSnapshot() // between taking [stale] and fanning it out
		}
	}
	r.drain()
	if !taken {
		t.Fatal("the dispatcher took no batch")
	}
	if got := r.host.fsm.view().st.Rev(); got != snapRev {
		t.Fatalf("rig at revision %d after the snapshot, want %d", got, snapRev)
	}
	// The watcher now sends the rest of its view, through stale, and decides whether it is
	// synced; it must still get every revision the snapshot brought.
	receiveThrough(t, wc, cw, stale)
	r.awaitSynced(wc, cw)
	after := r.put("k", "after", false)
	r.drain()
	receiveThrough(t, wc, cw, after)
	if vs := watchcheck.Check(r.history(t), *cw); len(vs) > 0 {
		t.Fatalf("watch across the snapshot install: %d violations:%s\nresponses: %s", len(vs), watchcheck.List(vs), dumpResponses(cw))
	}
}

// dumpResponses summarizes the responses a watch received, for failure messages.
func dumpResponses(cw *watchcheck.Watch) string {
	var b bytes.Buffer
	for _, r := range cw.Responses {
		fmt.Fprintf(&b, "[hdr %d: %d events", r.HeaderRev, len(r.Events))
		if len(r.Events) > 0 {
			fmt.Fprintf(&b, " %d..%d", r.Events[0].Kv.ModRevision, r.Events[len(r.Events)-1].Kv.ModRevision)
		}
		b.WriteString("] ")
	}
	return b.String()
}

// Finding 6 of the reliability review: with the dispatcher behind and consumers that stop
// reading, the hub's memory stays within its bounds while writes go on (the apply path never
// waits), and once the consumers read again they get every revision, in order, whole, in
// responses within the response bounds.
func TestWatchHub_StalledWatcherAndDispatcherBehind_MemoryBounded(t *testing.T) {
	lim := hubLimits{pendingEvents: 64, pendingBytes: 16 << 10, queueEvents: 32, queueBytes: 8 << 10,
		respEvents: 16, respBytes: 4 << 10}
	r := newHubRig(t, true, lim)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type stalled struct {
		wc WatchChan
		cw *watchcheck.Watch
	}
	ws := []stalled{
		{r.watch(ctx, "k/", WithPrefix(), WithPrevKV(), WithCreatedNotify()),
			&watchcheck.Watch{Key: "k/", End: "k0", PrevKV: true}}, // synced from the start
		{r.watch(ctx, "k/3", WithRev(2)), &watchcheck.Watch{Key: "k/3", StartRev: 2}}, // catching up
	}
	const writes = 3000
	val := string(bytes.Repeat([]byte("v"), 100))
	var peak hubMemory
	var last int64
	for i := range writes {
		last = r.put(fmt.Sprintf("k/%d", i%10), fmt.Sprint(i, val), false)
		// The dispatcher alternates between far behind (pending overflows) and keeping up
		// (the stalled consumers' queues fill up).
		if i%500 == 499 || (i/500)%2 == 0 && i%20 == 19 {
			r.drain()
		}
		m := r.h.memory()
		peak.pendingEvents = max(peak.pendingEvents, m.pendingEvents)
		peak.pendingBytes = max(peak.pendingBytes, m.pendingBytes)
		peak.maxQueuedBytes = max(peak.maxQueuedBytes, m.maxQueuedBytes)
		peak.queuedEvents = max(peak.queuedEvents, m.queuedEvents)
		if m.pendingEvents > lim.pendingEvents || m.pendingBytes > lim.pendingBytes ||
			m.maxQueuedBytes > lim.queueBytes || m.queuedEvents > len(ws)*lim.queueEvents {
			t.Fatalf("after write %d: hub holds %+v, limits %+v", i, m, lim)
		}
	}
	r.drain()
	t.Logf("peak: %+v over %d writes", peak, writes)
	if peak.pendingEvents == 0 || peak.queuedEvents == 0 {
		t.Fatalf("peak %+v: the test never queued anything", peak)
	}
	h := r.history(t)
	for i, w := range ws {
		for {
			resp := receive(t, w.wc)
			if resp.Err() != nil {
				t.Fatalf("watch %d ended: %v", i, resp.Err())
			}
			cr := checkResponse(resp)
			w.cw.Responses = append(w.cw.Responses, cr)
			var size int64
			revs := map[int64]bool{}
			for _, e := range cr.Events {
				revs[e.Kv.ModRevision] = true
				size += int64(len(e.Kv.Key)+len(e.Kv.Value)) + eventOverhead
				if e.PrevKv != nil {
					size += int64(len(e.PrevKv.Key) + len(e.PrevKv.Value))
				}
			}
			if len(revs) > 1 && (len(cr.Events) > lim.respEvents || size > lim.respBytes) {
				t.Fatalf("watch %d: a response of %d revisions, %d events, %d bytes exceeds %d events, %d bytes",
					i, len(revs), len(cr.Events), size, lim.respEvents, lim.respBytes)
			}
			if n := len(cr.Events); n > 0 && cr.Events[n-1].Kv.ModRevision >= last-9 {
				break // k/3's last put is at most 9 revisions before the last
			}
		}
		if vs := watchcheck.Check(h, *w.cw); len(vs) > 0 {
			t.Fatalf("watch %d: %d violations:%s\nresponses: %s", i, len(vs), watchcheck.List(vs), dumpResponses(w.cw))
		}
		events := 0
		for _, resp := range w.cw.Responses {
			events += len(resp.Events)
		}
		if want := map[int]int{0: writes, 1: writes / 10}[i]; events != want {
			t.Fatalf("watch %d received %d events, want %d", i, events, want)
		}
	}
}

// hubConsumer reads one watch into cw, pausing now and then, and records the revision it has
// reached (by event or progress notification).
type hubConsumer struct {
	cw      watchcheck.Watch
	wc      WatchChan
	reached atomic.Int64
	done    chan struct{}
	mu      sync.Mutex // guards cw.Responses
}

func (c *hubConsumer) run(rng *rand.Rand, pause time.Duration) {
	defer close(c.done)
	for resp := range c.wc {
		cr := checkResponse(resp)
		c.mu.Lock()
		c.cw.Responses = append(c.cw.Responses, cr)
		c.mu.Unlock()
		reached := c.reached.Load()
		for _, e := range cr.Events {
			reached = max(reached, e.Kv.ModRevision)
		}
		if cr.IsProgress() || cr.Created {
			reached = max(reached, cr.HeaderRev)
		}
		c.reached.Store(reached)
		if pause > 0 && rng.Intn(4) == 0 {
			time.Sleep(time.Duration(rng.Int63n(int64(pause))))
		}
	}
}

// The hub under real concurrency, with small bounds: the dispatcher runs on its own while the
// apply path writes, overflows pending, and installs snapshots of a source that ran ahead;
// watchers of every kind (now, past, future; keys, prefixes, ranges; filters, prevKV) are
// opened along the way, some with slow consumers. Every stream must hold watchcheck's
// guarantees.
func TestWatchHub_GapsAndSnapshotInstallsUnderConcurrency(t *testing.T) {
	lim := hubLimits{pendingEvents: 24, pendingBytes: 4 << 10, queueEvents: 12, queueBytes: 2 << 10,
		respEvents: 8, respBytes: 1 << 10}
	r := newHubRig(t, false, lim)
	seed := time.Now().UnixNano()
	if v := os.Getenv("EMBER_RELIABILITY_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("EMBER_RELIABILITY_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d (EMBER_RELIABILITY_SEED reruns it)", seed)
	rng := rand.New(rand.NewSource(seed))
	ctx, cancel := context.WithCancel(context.Background())
	var consumers []*hubConsumer
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	key := func() string { return fmt.Sprintf("k/%d", rng.Intn(10)) }
	open := func(cur int64) {
		c := &hubConsumer{done: make(chan struct{})}
		var opts []OpOption
		k := key()
		switch rng.Intn(3) {
		case 0:
			c.cw.Key = k
		case 1:
			c.cw.Key, c.cw.End = "k/", "k0"
			opts = append(opts, WithPrefix())
		default:
			c.cw.Key, c.cw.End = "k/2", "k/7"
			opts = append(opts, WithRange("k/7"))
		}
		switch rng.Intn(3) {
		case 0:
			opts = append(opts, WithCreatedNotify())
		case 1:
			c.cw.StartRev = 2 + rng.Int63n(cur-1)
		default:
			c.cw.StartRev = cur + 1 + rng.Int63n(50)
		}
		if c.cw.StartRev != 0 {
			opts = append(opts, WithRev(c.cw.StartRev))
		}
		if rng.Intn(2) == 0 {
			c.cw.PrevKV = true
			opts = append(opts, WithPrevKV())
		}
		switch rng.Intn(4) {
		case 0:
			c.cw.FilterPut = true
			opts = append(opts, WithFilterPut())
		case 1:
			c.cw.FilterDelete = true
			opts = append(opts, WithFilterDelete())
		}
		c.wc = r.watch(ctx, c.cw.Key, opts...)
		pause := time.Duration(0)
		if rng.Intn(3) == 0 {
			pause = 3 * time.Millisecond
		}
		crng := rand.New(rand.NewSource(rng.Int63()))
		consumers = append(consumers, c)
		wg.Add(1)
		go func() { defer wg.Done(); c.run(crng, pause) }()
	}
	val := string(bytes.Repeat([]byte("v"), 40))
	cur := r.put("k/0", val, false)
	installs := 0
	for i := range 2500 {
		if i%60 == 0 {
			open(cur)
		}
		if i%500 == 499 {
			for j := range 30 + rng.Intn(30) {
				r.put(key(), fmt.Sprint("behind", i, j), true)
			}
			r.installSnapshot()
			installs++
		}
		switch n := rng.Intn(10); {
		case n == 0:
			cur = r.apply(wireOps(wireDel(key(), "")), false)
		case n == 1:
			cur = r.apply(wireOps(wirePut("k/8", fmt.Sprint(i, val)), wirePut("k/3", fmt.Sprint(i, val))), false)
		default:
			cur = r.put(key(), fmt.Sprint(i, val), false)
		}
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // let the dispatcher and consumers run now and then
		}
	}
	final := r.put("k/0", "final", false)
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range consumers {
		for c.reached.Load() < final && c.cw.StartRev <= final {
			if time.Now().After(deadline) {
				t.Fatalf("watch %+v reached %d, not %d", c.cw, c.reached.Load(), final)
			}
			r.h.requestProgress()
			time.Sleep(5 * time.Millisecond)
		}
	}
	cancel()
	wg.Wait()
	h := r.history(t)
	events := 0
	for i, c := range consumers {
		for _, resp := range c.cw.Responses {
			events += len(resp.Events)
		}
		if vs := watchcheck.Check(h, c.cw); len(vs) > 0 {
			t.Errorf("watch %d (key %q end %q start %d prevKV %v filters %v/%v): %d violations:%s\nresponses: %s",
				i, c.cw.Key, c.cw.End, c.cw.StartRev, c.cw.PrevKV, c.cw.FilterPut, c.cw.FilterDelete, len(vs), watchcheck.List(vs), dumpResponses(&c.cw))
		}
	}
	gaps := r.h.memory().gaps
	t.Logf("%d revisions, %d snapshot installs, %d gaps, %d watches, %d events checked", final, installs, gaps, len(consumers), events)
	if gaps <= uint64(installs) {
		t.Errorf("%d gaps for %d snapshot installs: pending never overflowed", gaps, installs)
	}
}
