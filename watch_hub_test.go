package ember

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/watchcheck"
)

// hubRig is a watch hub on an fsm of its own, with no raft log: the test applies entries and
// installs snapshots itself and, in manual mode, runs the dispatcher's steps itself, so that
// the interleavings of the apply path, the dispatcher and the watchers' goroutines are chosen
// by the test. A second fsm, src, applies the same entries and can run ahead: it is the leader
// whose snapshot a lagging rig installs.
type hubRig struct {
	t     testing.TB
	s     *Store
	h     *watchHub
	src   *fsm
	index uint64 // raft index of the last entry applied to src (and to the rig when it keeps up)
}

func newHubRig(t testing.TB, manual bool, limits hubLimits) *hubRig {
	t.Helper()
	lender := openMem(t) // lends its raft to the rig's response headers, and nothing else
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{cfg: lender.cfg, id: "rig", log: nopLogger(), raft: lender.raft, ctx: ctx, cancel: cancel}
	s.watch = newWatchHub(s)
	s.watch.limits = limits
	s.lessor = newLessor(s)
	s.fsm = newFSM(nopLogger(), s.watch, s.lessor)
	if !manual {
		s.spawn(s.watch.dispatch)
	}
	t.Cleanup(func() { // before the lender closes: cleanups run last in, first out
		cancel()
		s.wg.Wait()
	})
	return &hubRig{t: t, s: s, h: s.watch, src: detachedFSM()}
}

// put applies a put of key to src and, unless behind, to the rig; it returns the revision.
func (r *hubRig) put(key, val string, behind bool) int64 {
	r.t.Helper()
	r.index++
	cmd := putCmd(r.index, key, val, 0).Marshal(nil)
	r.src.ApplyBatch([]*raft.Log{{Index: r.index, Type: raft.LogCommand, Data: cmd}})
	if !behind {
		r.s.fsm.ApplyBatch([]*raft.Log{{Index: r.index, Type: raft.LogCommand, Data: cmd}})
		if got, want := r.s.fsm.view().st.rev, r.src.st.rev; got != want {
			r.t.Fatalf("rig at revision %d, src at %d", got, want)
		}
	}
	return r.src.st.rev
}

// installSnapshot replaces the rig's state with a snapshot of src, as raft does on a lagging
// member.
func (r *hubRig) installSnapshot() {
	r.t.Helper()
	snap, err := r.src.Snapshot()
	if err != nil {
		r.t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		r.t.Fatal(err)
	}
	if err := r.s.fsm.Restore(io.NopCloser(bytes.NewReader(sink.buf.Bytes()))); err != nil {
		r.t.Fatal(err)
	}
}

// drain runs the dispatcher until nothing is pending (manual mode).
func (r *hubRig) drain() {
	for r.h.dispatchOnce() {
	}
}

// history is every change src made, as watchcheck wants it.
func (r *hubRig) history() []watchcheck.Revision {
	var h []watchcheck.Revision
	r.src.st.revs.Scan(func(rec *record) bool {
		h = watchcheck.AppendEvents(h, []watchcheck.Event{checkEvent(eventOf(rec, r.src.st.prevVersion(rec), true))})
		return true
	})
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
	wc := r.s.Watch(ctx, "k", WithRev(2))
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
	if got := r.s.fsm.view().st.rev; got != snapRev {
		t.Fatalf("rig at revision %d after the snapshot, want %d", got, snapRev)
	}
	// The watcher now sends the rest of its view, through stale, and decides whether it is
	// synced; it must still get every revision the snapshot brought.
	receiveThrough(t, wc, cw, stale)
	r.awaitSynced(wc, cw)
	after := r.put("k", "after", false)
	r.drain()
	receiveThrough(t, wc, cw, after)
	if vs := watchcheck.Check(r.history(), *cw); len(vs) > 0 {
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
		{r.s.Watch(ctx, "k/", WithPrefix(), WithPrevKV(), WithCreatedNotify()),
			&watchcheck.Watch{Key: "k/", End: "k0", PrevKV: true}}, // synced from the start
		{r.s.Watch(ctx, "k/3", WithRev(2)), &watchcheck.Watch{Key: "k/3", StartRev: 2}}, // catching up
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
	h := r.history()
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
