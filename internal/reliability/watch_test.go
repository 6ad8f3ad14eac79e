package reliability

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/internal/watchcheck"
	"github.com/ember-kv/ember/internal/watchtest"
)

// G2: watchers run alongside every G1 run and are checked with watchcheck against the history
// an unfiltered recorder watch received. The recorder is itself checked for consistency and
// gaps, and against the clients' acknowledgements (see linearizability_test.go).

// startKind says how a watcher picks its start revision.
type startKind int

const (
	startNow       startKind = iota // no WithRev: after the current revision
	startPast                       // current revision - delta (maybe compacted already)
	startFuture                     // current revision + delta
	startCompacted                  // just below the compaction revision (1 before any compaction)
)

// watchSpec is one watcher of a run.
type watchSpec struct {
	name     string
	key, end string // end as watchcheck.Watch.End; ignored with prefix
	prefix   bool
	start    startKind
	delta    int64
	at       time.Duration // when the watch opens, from the start of traffic

	prevKV, filterPut, filterDelete, progress bool

	// slow is a pause after every response while traffic runs; once it stops, every watcher
	// drains at full speed so that the final bookmarks come quickly.
	slow time.Duration
}

// watcher runs one watchSpec on one member, and resumes after the member restarts, from the
// revision after the last one it reached (etcd's resumable guarantee). Each watch it opens is a
// separate watchcheck.Watch.
type watcher struct {
	spec    watchSpec
	member  *embertest.Member
	clk     clock
	traffic <-chan struct{} // closed when the clients stop

	reached   atomic.Int64 // highest revision up to which every matching event was delivered or passed
	compacted atomic.Bool  // canceled by compaction; it is not resumed
	done      chan struct{}

	mu   sync.Mutex // guards segs and seen
	segs []*watchcheck.Watch
	// seen maps the value of each put event to when it was first received, for the recorder
	// only (nil otherwise): receipt bounds when the put took effect.
	seen map[string]int64
}

func newWatcher(sp watchSpec, m *embertest.Member, clk clock, traffic <-chan struct{}) *watcher {
	return &watcher{spec: sp, member: m, clk: clk, traffic: traffic, done: make(chan struct{})}
}

// run opens the watch, and opens it again whenever it ends without being asked to, until ctx
// ends. Errors opening the watch (a stopped member) are retried: they are the fault's doing.
func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	var resume int64 // 0: the spec's own start
	for ctx.Err() == nil {
		s := w.member.Store()
		if s == nil {
			sleepCtx(ctx, 50*time.Millisecond)
			continue
		}
		seg, wc, err := w.open(ctx, s, resume)
		if err != nil {
			sleepCtx(ctx, 50*time.Millisecond)
			continue
		}
		w.read(seg, wc)
		if w.compacted.Load() {
			return
		}
		if r := w.reached.Load(); r > 0 {
			resume = max(seg.StartRev, r+1)
		} else {
			resume = seg.StartRev
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// open starts one watch. Its start revision, and whether it is compacted already, come from
// the serving member's own state, which is what the member judges the request by.
func (w *watcher) open(ctx context.Context, s *ember.Store, resume int64) (*watchcheck.Watch, ember.WatchChan, error) {
	st, err := s.Status(ctx)
	if err != nil {
		return nil, nil, err
	}
	sp := w.spec
	cw := &watchcheck.Watch{Key: sp.key, End: sp.end, FilterPut: sp.filterPut, FilterDelete: sp.filterDelete, PrevKV: sp.prevKV}
	var opts []ember.OpOption
	switch {
	case sp.prefix:
		cw.End = ember.GetPrefixRangeEnd(sp.key)
		opts = append(opts, ember.WithPrefix())
	case sp.end == "\x00":
		opts = append(opts, ember.WithFromKey())
	case sp.end != "":
		opts = append(opts, ember.WithRange(sp.end))
	}
	switch {
	case resume > 0:
		cw.StartRev = resume
	case sp.start == startNow:
		// The created response's header tells the checker, and a resumption, where "now" was.
		opts = append(opts, ember.WithCreatedNotify())
	case sp.start == startPast:
		cw.StartRev = max(1, st.Revision-sp.delta)
	case sp.start == startFuture:
		cw.StartRev = st.Revision + sp.delta
	case sp.start == startCompacted:
		cw.StartRev = max(1, st.CompactRevision-1)
	}
	if cw.StartRev != 0 {
		opts = append(opts, ember.WithRev(cw.StartRev))
	}
	cw.StartCompacted = cw.StartRev != 0 && cw.StartRev < st.CompactRevision
	for _, o := range []struct {
		on  bool
		opt ember.OpOption
	}{{sp.prevKV, ember.WithPrevKV()}, {sp.filterPut, ember.WithFilterPut()},
		{sp.filterDelete, ember.WithFilterDelete()}, {sp.progress, ember.WithProgressNotify()}} {
		if o.on {
			opts = append(opts, o.opt)
		}
	}
	w.mu.Lock()
	w.segs = append(w.segs, cw)
	w.mu.Unlock()
	return cw, s.Watch(ctx, sp.key, opts...), nil
}

// read records responses until the watch channel closes.
func (w *watcher) read(cw *watchcheck.Watch, wc ember.WatchChan) {
	for resp := range wc {
		at := w.clk.now()
		r := watchtest.Response(resp)
		w.mu.Lock()
		cw.Responses = append(cw.Responses, r)
		for _, e := range r.Events {
			if _, ok := w.seen[e.Kv.Value]; !ok && w.seen != nil && e.Type == watchcheck.Put {
				w.seen[e.Kv.Value] = at
			}
		}
		w.mu.Unlock()
		reached := w.reached.Load()
		for _, e := range r.Events {
			reached = max(reached, e.Kv.ModRevision)
		}
		if r.IsProgress() || (r.Created && cw.StartRev == 0) {
			reached = max(reached, r.HeaderRev)
		}
		w.reached.Store(reached)
		if r.CompactRevision != 0 {
			w.compacted.Store(true)
		}
		if w.spec.slow > 0 && !closed(w.traffic) {
			time.Sleep(w.spec.slow)
		}
	}
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// watches returns a copy of every watch opened so far.
func (w *watcher) watches() []watchcheck.Watch {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]watchcheck.Watch, len(w.segs))
	for i, s := range w.segs {
		out[i] = *s
		out[i].Responses = append([]watchcheck.Response(nil), s.Responses...)
	}
	return out
}

// lastStart is the start revision of the watch opened last, 0 for a "now" watch.
func (w *watcher) lastStart() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.segs) == 0 {
		return 0
	}
	return w.segs[len(w.segs)-1].StartRev
}

// awaitReached asks w's member for progress notifications until w has reached rev, the watch
// ended, or deadline passed; it reports whether w reached rev or cannot (a compacted watch, or
// one starting after rev).
func (w *watcher) awaitReached(rev int64, deadline time.Time) bool {
	for w.reached.Load() < rev && !w.compacted.Load() && w.lastStart() <= rev {
		if time.Now().After(deadline) {
			return false
		}
		if s := w.member.Store(); s != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			s.RequestProgress(ctx)
			cancel()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// recordedHistory turns the recorder's watches into the store's history
// (watchcheck.RecordedHistory checks that it is one).
func recordedHistory(t testing.TB, rec *watcher, final int64) []watchcheck.Revision {
	t.Helper()
	var rs []watchcheck.Response
	for _, cw := range rec.watches() {
		rs = append(rs, cw.Responses...)
	}
	h, err := watchcheck.RecordedHistory(rs, final)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// g2Stats counts what the watch checks covered.
type g2Stats struct {
	watches, events, violations int
}

// checkWatchers waits until every watcher reached final and checks each of its watches.
func checkWatchers(t testing.TB, ws []*watcher, h []watchcheck.Revision, final, compactedThrough int64) g2Stats {
	t.Helper()
	var st g2Stats
	deadline := time.Now().Add(30 * time.Second)
	for _, w := range ws {
		if !w.awaitReached(final, deadline) {
			st.violations++
			t.Errorf("watch %q on %s: did not reach the final revision %d within 30s of traffic stopping (reached %d)",
				w.spec.name, w.member.ID, final, w.reached.Load())
		}
	}
	// Events above final (none are written, but a late unknown write could land) are not in
	// the history; the check covers revisions up to final.
	h = h[:final-1]
	for _, w := range ws {
		for i, cw := range w.watches() {
			cw.PrevCompactedThrough = compactedThrough
			cw.Responses = upTo(cw.Responses, final)
			st.watches++
			for _, r := range cw.Responses {
				st.events += len(r.Events)
			}
			if vs := watchcheck.Check(h, cw); len(vs) > 0 {
				st.violations += len(vs)
				t.Errorf("watch %q on %s (opening %d, start %d, start compacted %v): %d violations:%s",
					w.spec.name, w.member.ID, i, cw.StartRev, cw.StartCompacted, len(vs), watchcheck.List(vs))
			}
		}
	}
	return st
}

// upTo drops the responses received after the first one that goes past rev.
func upTo(rs []watchcheck.Response, rev int64) []watchcheck.Response {
	for i, r := range rs {
		for _, e := range r.Events {
			if e.Kv.ModRevision > rev {
				return rs[:i]
			}
		}
		if r.HeaderRev > rev && r.IsProgress() {
			return rs[:i]
		}
	}
	return rs
}
