package ember_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/internal/watchcheck"
	"github.com/ember-kv/ember/internal/watchtest"
)

// watchRecorder keeps every response of one watch, for watchcheck.
type watchRecorder struct {
	done chan struct{}
	mu   sync.Mutex // guards w.Responses
	w    watchcheck.Watch
}

// recordWatch watches prefix from rev on s until the channel closes (ctx ends or the member
// stops).
func recordWatch(ctx context.Context, s *ember.Store, prefix string, rev int64, prevKV bool) *watchRecorder {
	r := &watchRecorder{done: make(chan struct{}), w: watchcheck.Watch{
		Key: prefix, End: ember.GetPrefixRangeEnd(prefix), StartRev: rev, PrevKV: prevKV}}
	var opts []ember.OpOption
	if rev == 0 {
		opts = append(opts, ember.WithCreatedNotify())
	}
	if prevKV {
		opts = append(opts, ember.WithPrevKV())
	}
	wc := s.Watch(ctx, prefix, append([]ember.OpOption{ember.WithPrefix(), ember.WithRev(rev)}, opts...)...)
	go func() {
		defer close(r.done)
		for resp := range wc {
			r.mu.Lock()
			r.w.Responses = append(r.w.Responses, watchtest.Response(resp))
			r.mu.Unlock()
		}
	}()
	return r
}

// lastRev is the highest event revision received so far.
func (r *watchRecorder) lastRev() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var last int64
	for _, resp := range r.w.Responses {
		for _, e := range resp.Events {
			last = max(last, e.Kv.ModRevision)
		}
	}
	return last
}

// check waits until the recorder has seen upTo (or its watch ended) and checks it against h.
func (r *watchRecorder) check(t *testing.T, name string, h []watchcheck.Revision, upTo int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for r.lastRev() < upTo && time.Now().Before(deadline) {
		select {
		case <-r.done:
			deadline = time.Now()
		case <-time.After(10 * time.Millisecond):
		}
	}
	r.mu.Lock()
	w := r.w
	w.Responses = append([]watchcheck.Response(nil), r.w.Responses...)
	r.mu.Unlock()
	if vs := watchcheck.Check(h, w); len(vs) > 0 {
		t.Errorf("%s: %d watch guarantee violations:%s", name, len(vs), watchcheck.List(vs))
	}
}

// historyOf reads the ground truth from s: every revision from 2 through final, by a watch from
// revision 1 (the tests using it never compact).
func historyOf(t *testing.T, s *ember.Store, final int64) []watchcheck.Revision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var h []watchcheck.Revision
	wc := s.Watch(ctx, "", ember.WithFromKey(), ember.WithRev(1), ember.WithPrevKV())
	for len(h) == 0 || h[len(h)-1].Rev < final {
		resp, ok := <-wc
		if !ok || resp.Err() != nil {
			t.Fatalf("history watch ended: %v", resp.Err())
		}
		h = watchcheck.AppendEvents(h, watchtest.Response(resp).Events)
	}
	if vs := watchcheck.CheckHistory(h); len(vs) > 0 {
		t.Fatalf("history: %s", watchcheck.List(vs))
	}
	return h
}
