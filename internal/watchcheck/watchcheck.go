// Package watchcheck checks the responses a watcher received against etcd's watch guarantees
// (ordered, unique, reliable, atomic, resumable, bookmarkable) and against the store's history:
// every delivered event must be the change the store made, filtered and decorated as the watch
// asked. Check reports every violation, so a test can fail with all of them at once.
//
// The types are plain values with no dependency on ember, so tests of any package can convert
// their watch responses and feed them in. Nothing here keeps state: every function is safe for
// concurrent use as long as callers do not modify the slices they pass while it runs.
package watchcheck

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// EventType says what an event did, with etcd's numbering.
type EventType int

const (
	Put    EventType = 0
	Delete EventType = 1
)

func (t EventType) String() string {
	if t == Delete {
		return "DELETE"
	}
	return "PUT"
}

// KeyValue is one version of a key.
type KeyValue struct {
	Key, Value                                  string
	CreateRevision, ModRevision, Version, Lease int64
}

// Event is one change of one key. For a delete, Kv holds only Key and ModRevision (the revision
// of the delete), as etcd sends it.
type Event struct {
	Type   EventType
	Kv     KeyValue
	PrevKv *KeyValue // the key before the change; nil when absent
}

// Revision is every change of one store revision, in the order the store applied them.
type Revision struct {
	Rev    int64
	Events []Event
}

// Response is one watch response as the watcher received it.
type Response struct {
	HeaderRev       int64
	Events          []Event
	CompactRevision int64
	Created         bool
	Canceled        bool
}

// IsProgress reports whether r is a progress notification (a bookmark): every matching event
// up to HeaderRev has been delivered before it. Same rule as etcd's IsProgressNotify.
func (r Response) IsProgress() bool {
	return len(r.Events) == 0 && !r.Created && !r.Canceled && r.CompactRevision == 0 && r.HeaderRev != 0
}

// Watch describes one watcher: what it asked for and what it received.
type Watch struct {
	// Key and End are the watched range with ember's (and etcd's) conventions: End "" watches
	// Key alone, End "\x00" every key from Key on, anything else [Key, End).
	Key, End string
	// StartRev is the WithRev revision, or 0 for a watch that starts after the current revision.
	StartRev int64
	// CreatedRev is, for StartRev 0, the store revision when the watch was created: events after
	// it are expected. When 0, the header revision of a first Created response is used; with
	// neither, the watch is taken to start at its first event and its start is not checked.
	CreatedRev int64
	// StartCompacted says that StartRev was already compacted on the serving member when the
	// watch was created: the watch must be canceled with CompactRevision set and deliver nothing.
	StartCompacted bool
	// PrevCompactedThrough is the highest compaction revision in force while the watch ran.
	// Compacting at C drops the previous versions of changes at revisions <= C, so such events
	// may lack PrevKv; when present it must still be right.
	PrevCompactedThrough int64

	FilterPut, FilterDelete, PrevKV bool

	// Responses are in the order the watcher received them.
	Responses []Response
}

// Kind names the guarantee a violation breaks.
type Kind string

const (
	// KindOrdered: event revisions go backwards, or one revision's events are not in the
	// store's order.
	KindOrdered Kind = "ordered"
	// KindUnique: an event was delivered twice.
	KindUnique Kind = "unique"
	// KindReliable: a matching event between the first delivered one and the last revision the
	// watch reached (by event or bookmark) is missing.
	KindReliable Kind = "reliable"
	// KindAtomic: a response carries only part of a revision's matching events.
	KindAtomic Kind = "atomic"
	// KindResumable: the stream does not begin with the first matching event at or after the
	// start revision, a compacted start was not canceled, a watch was canceled as compacted
	// although its next revision was available, or a response followed a cancellation.
	KindResumable Kind = "resumable"
	// KindBookmarkable: a progress notification at R came before a matching event <= R, or
	// behind an event above R.
	KindBookmarkable Kind = "bookmarkable"
	// KindFilter: an event outside the watched range, or of a filtered type, was delivered.
	KindFilter Kind = "filter"
	// KindPrevKV: PrevKv is wrong, missing, or present without WithPrevKV.
	KindPrevKV Kind = "prevkv"
	// KindContent: an event differs from the history's change, is not in the history at all, or
	// a response's header revision is below its events.
	KindContent Kind = "content"
	// KindHistory: the history itself is inconsistent (CheckHistory).
	KindHistory Kind = "history"
)

// Violation is one broken guarantee.
type Violation struct {
	Kind   Kind
	Detail string
}

func (v Violation) String() string { return string(v.Kind) + ": " + v.Detail }

// evID names one change of the history: its revision and its place in that revision.
type evID struct {
	rev int64
	idx int
}

// index is the history prepared for checking.
type index struct {
	history []Revision
	byRev   map[int64]int      // revision -> position in history
	byKey   map[revKey]int     // (revision, key) -> place in the revision
	prev    map[evID]*KeyValue // expected PrevKv of each change; nil for none
}

type revKey struct {
	rev int64
	key string
}

func newIndex(history []Revision) *index {
	ix := &index{history: history, byRev: map[int64]int{}, byKey: map[revKey]int{},
		prev: map[evID]*KeyValue{}}
	latest := map[string]*Event{}
	for i, r := range history {
		ix.byRev[r.Rev] = i
		for j := range r.Events {
			e := &r.Events[j]
			id := evID{r.Rev, j}
			ix.byKey[revKey{r.Rev, e.Kv.Key}] = j
			// A key's first change in the history has only its own record of what came before.
			var p *KeyValue
			if last, ok := latest[e.Kv.Key]; ok {
				if last.Type == Put {
					p = &last.Kv
				}
			} else {
				p = e.PrevKv
			}
			ix.prev[id] = p
			latest[e.Kv.Key] = e
		}
	}
	return ix
}

func (ix *index) event(id evID) *Event { return &ix.history[ix.byRev[id.rev]].Events[id.idx] }

// lookup finds the change an event reports.
func (ix *index) lookup(e Event) (evID, bool) {
	i, ok := ix.byRev[e.Kv.ModRevision]
	if !ok {
		return evID{}, false
	}
	j, ok := ix.byKey[revKey{e.Kv.ModRevision, e.Kv.Key}]
	if !ok {
		return evID{}, false
	}
	return evID{ix.history[i].Rev, j}, true
}

func (w *Watch) contains(key string) bool {
	switch w.End {
	case "":
		return key == w.Key
	case "\x00":
		return key >= w.Key
	}
	return key >= w.Key && key < w.End
}

func (w *Watch) wants(key string, t EventType) bool {
	return w.contains(key) && !(t == Put && w.FilterPut) && !(t == Delete && w.FilterDelete)
}

// startRev returns the first revision the watch must deliver, or ok false when it is unknown.
func (w *Watch) startRev() (int64, bool) {
	switch {
	case w.StartRev > 0:
		return w.StartRev, true
	case w.CreatedRev > 0:
		return w.CreatedRev + 1, true
	case len(w.Responses) > 0 && w.Responses[0].Created && w.Responses[0].HeaderRev > 0:
		return w.Responses[0].HeaderRev + 1, true
	}
	return 0, false
}

// expected normalizes a history change to what a watch must deliver: a delete carries only the
// key and the revision.
func expected(e *Event) Event {
	if e.Type == Delete {
		return Event{Type: Delete, Kv: KeyValue{Key: e.Kv.Key, ModRevision: e.Kv.ModRevision}}
	}
	return Event{Type: e.Type, Kv: e.Kv}
}

func describe(e Event) string {
	return fmt.Sprintf("%v %q@%d", e.Type, e.Kv.Key, e.Kv.ModRevision)
}

func kvString(kv *KeyValue) string {
	if kv == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%+v", *kv)
}

// Check returns every violation of the watch guarantees in w's responses, given the history of
// the store. history must hold, in increasing revision order, every revision from the watch's
// start revision through the last revision the watch reached, with at most one change per key
// per revision (as etcd guarantees); it may cover more keys and revisions than the watch.
// Violations come in the order they are found, response by response; details number responses
// and their events from 0.
func Check(history []Revision, w Watch) []Violation {
	ix := newIndex(history)
	c := &checker{ix: ix, w: &w, delivered: map[evID]bool{}, canceled: -1}
	c.first, c.startKnown = w.startRev()
	for i, r := range w.Responses {
		c.response(i, r)
	}
	c.finish()
	return c.vs
}

type checker struct {
	ix *index
	w  *Watch
	vs []Violation

	first      int64 // first revision the watch must deliver
	startKnown bool

	delivered   map[evID]bool
	firstEvent  evID // first delivered event, valid when anyEvent
	anyEvent    bool
	last        evID // last delivered event, for ordering
	maxSeen     int64
	bookmark    int64 // highest progress revision so far
	bookmarkChk int64 // matching changes up to here were checked against a bookmark
	canceled    int   // index of the cancel response, -1 before
	compacted   bool
}

func (c *checker) add(k Kind, format string, args ...any) {
	c.vs = append(c.vs, Violation{Kind: k, Detail: fmt.Sprintf(format, args...)})
}

func (c *checker) response(i int, r Response) {
	if c.canceled >= 0 {
		c.add(KindResumable, "response %d after the watch was canceled by response %d", i, c.canceled)
		return
	}
	if r.CompactRevision != 0 {
		c.compactedResponse(i, r)
	} else if r.Canceled {
		c.canceled = i
	}
	if r.IsProgress() {
		c.progress(i, r.HeaderRev)
		return
	}
	// Distinct matching changes per revision in this response, for atomicity.
	perRev := map[int64]map[int]bool{}
	var revOrder []int64
	for j, e := range r.Events {
		if e.Kv.ModRevision > r.HeaderRev {
			c.add(KindContent, "response %d: header revision %d below its event %s", i, r.HeaderRev, describe(e))
		}
		id, ok := c.event(i, j, e)
		if !ok {
			continue
		}
		if perRev[id.rev] == nil {
			perRev[id.rev] = map[int]bool{}
			revOrder = append(revOrder, id.rev)
		}
		perRev[id.rev][id.idx] = true
	}
	for _, rev := range revOrder {
		if got, want := len(perRev[rev]), c.matching(rev); got < want {
			c.add(KindAtomic, "response %d carries %d of the %d matching events of revision %d", i, got, want, rev)
		}
	}
}

// compactedResponse checks a cancellation for compaction. The server cancels a watch when the
// next revision it needs is below the compaction revision; that revision is at least the start
// and past everything the watch already reached.
func (c *checker) compactedResponse(i int, r Response) {
	if !c.compacted {
		c.canceled, c.compacted = i, true
	}
	if !r.Canceled {
		c.add(KindResumable, "response %d has compact revision %d but is not canceled", i, r.CompactRevision)
	}
	if len(r.Events) > 0 {
		c.add(KindResumable, "response %d has compact revision %d and %d events", i, r.CompactRevision, len(r.Events))
	}
	next := max(c.first, c.maxSeen+1, c.bookmark+1)
	if next >= r.CompactRevision {
		c.add(KindResumable, "response %d cancels the watch as compacted at %d, but its next revision %d is at or above it and still available",
			i, r.CompactRevision, next)
	}
}

// progress checks a bookmark at rev.
func (c *checker) progress(i int, rev int64) {
	if rev < c.maxSeen {
		c.add(KindBookmarkable, "response %d: progress at %d after an event at %d", i, rev, c.maxSeen)
	}
	if rev > c.bookmarkChk && c.startKnown {
		missing := c.missing(max(c.first, c.bookmarkChk+1), rev)
		if len(missing) > 0 {
			c.add(KindBookmarkable, "response %d: progress at %d before %d matching events at or below it, first %s",
				i, rev, len(missing), describe(*c.ix.event(missing[0])))
		}
		c.bookmarkChk = rev
	}
	c.bookmark = max(c.bookmark, rev)
}

// event checks one delivered event and records it. It returns the change the event reports
// when that change is one the watch wants.
func (c *checker) event(i, j int, e Event) (evID, bool) {
	w := c.w
	at := fmt.Sprintf("response %d event %d (%s)", i, j, describe(e))
	id, ok := c.ix.lookup(e)
	if !ok {
		c.add(KindContent, "%s: no such change in the history", at)
		return evID{}, false
	}
	h := c.ix.event(id)
	if !w.wants(h.Kv.Key, h.Type) {
		c.add(KindFilter, "%s: the watch of [%q, %q) filterPut=%v filterDelete=%v does not want it", at, w.Key, w.End, w.FilterPut, w.FilterDelete)
		return evID{}, false
	}
	if want := expected(h); e.Type != want.Type || e.Kv != want.Kv {
		c.add(KindContent, "%s: got %v %+v, history has %v %+v", at, e.Type, e.Kv, want.Type, want.Kv)
	}
	c.checkPrev(at, id, e)
	if c.delivered[id] {
		c.add(KindUnique, "%s: delivered again", at)
		return id, true
	}
	if c.startKnown && id.rev < c.first {
		c.add(KindResumable, "%s: before the watch's start revision %d", at, c.first)
	}
	if id.rev <= c.bookmark {
		c.add(KindBookmarkable, "%s: after a progress notification at %d", at, c.bookmark)
	}
	if c.anyEvent && before(id, c.last) {
		c.add(KindOrdered, "%s: after %s", at, describe(*c.ix.event(c.last)))
	}
	if !c.anyEvent {
		c.anyEvent, c.firstEvent = true, id
	}
	c.last = id
	c.delivered[id] = true
	c.maxSeen = max(c.maxSeen, id.rev)
	return id, true
}

func (c *checker) checkPrev(at string, id evID, e Event) {
	if !c.w.PrevKV {
		if e.PrevKv != nil {
			c.add(KindPrevKV, "%s: PrevKv %s without WithPrevKV", at, kvString(e.PrevKv))
		}
		return
	}
	want := c.ix.prev[id]
	switch {
	case want == nil && e.PrevKv != nil:
		c.add(KindPrevKV, "%s: PrevKv %s, but the key did not exist before", at, kvString(e.PrevKv))
	case want != nil && e.PrevKv == nil:
		if id.rev > c.w.PrevCompactedThrough {
			c.add(KindPrevKV, "%s: no PrevKv, want %s", at, kvString(want))
		}
	case want != nil && *want != *e.PrevKv:
		c.add(KindPrevKV, "%s: PrevKv %s, want %s", at, kvString(e.PrevKv), kvString(want))
	}
}

// matching returns how many changes of revision rev the watch wants.
func (c *checker) matching(rev int64) int {
	n := 0
	for _, e := range c.ix.history[c.ix.byRev[rev]].Events {
		if c.w.wants(e.Kv.Key, e.Type) {
			n++
		}
	}
	return n
}

// wanted returns the changes in revisions [from, to] that the watch wants, in order.
func (c *checker) wanted(from, to int64) []evID {
	var out []evID
	h := c.ix.history
	i, _ := slices.BinarySearchFunc(h, from, func(r Revision, rev int64) int { return cmp.Compare(r.Rev, rev) })
	for ; i < len(h) && h[i].Rev <= to; i++ {
		for j, e := range h[i].Events {
			if c.w.wants(e.Kv.Key, e.Type) {
				out = append(out, evID{h[i].Rev, j})
			}
		}
	}
	return out
}

// missing returns the wanted changes in revisions [from, to] not delivered so far.
func (c *checker) missing(from, to int64) []evID {
	return slices.DeleteFunc(c.wanted(from, to), func(id evID) bool { return c.delivered[id] })
}

// finish checks what the whole stream must satisfy: a compacted start, and no gaps up to the
// last revision the watch reached.
func (c *checker) finish() {
	if c.w.StartCompacted {
		if !c.compacted {
			c.add(KindResumable, "start revision %d was compacted, but the watch was not canceled as compacted", c.w.StartRev)
		}
		if c.anyEvent {
			c.add(KindResumable, "start revision %d was compacted, but the watch delivered events, first %s", c.w.StartRev, describe(*c.ix.event(c.firstEvent)))
		}
		return
	}
	first := c.first
	if !c.startKnown {
		if !c.anyEvent {
			return
		}
		first = c.firstEvent.rev
	}
	reached := max(c.maxSeen, c.bookmark)
	// Group missing changes into runs, one violation per run: before the first delivered
	// event the stream started late (resumable), after it the stream has a hole (reliable).
	var run []evID
	var runKind Kind
	flush := func() {
		if len(run) == 0 {
			return
		}
		f, l := c.ix.event(run[0]), c.ix.event(run[len(run)-1])
		c.add(runKind, "%d matching events missing, from %s to %s (watch start %d, reached %d)",
			len(run), describe(*f), describe(*l), first, reached)
		run = nil
	}
	for _, id := range c.wanted(first, reached) {
		if c.delivered[id] {
			flush()
			continue
		}
		kind := KindReliable
		if c.anyEvent && before(id, c.firstEvent) {
			kind = KindResumable
		}
		if kind != runKind {
			flush()
		}
		runKind = kind
		run = append(run, id)
	}
	flush()
}

// before reports whether change a comes before change b in the history.
func before(a, b evID) bool { return a.rev < b.rev || (a.rev == b.rev && a.idx < b.idx) }

// CheckHistory returns every inconsistency within a history: revisions not increasing or
// empty, changes filed under another revision or repeating a key within a revision, versions
// and create revisions that do not follow from the key's previous change, and recorded PrevKvs
// that differ from it. A key's first change in the history is judged by its recorded PrevKv
// alone, so a history may start at any revision.
func CheckHistory(history []Revision) []Violation {
	var vs []Violation
	add := func(format string, args ...any) {
		vs = append(vs, Violation{Kind: KindHistory, Detail: fmt.Sprintf(format, args...)})
	}
	latest := map[string]*Event{}
	for i, r := range history {
		if i > 0 && r.Rev <= history[i-1].Rev {
			add("revision %d after %d", r.Rev, history[i-1].Rev)
		}
		if len(r.Events) == 0 {
			add("revision %d has no changes", r.Rev)
		}
		keys := map[string]bool{}
		for j := range r.Events {
			e := &r.Events[j]
			at := fmt.Sprintf("revision %d change %d (%s)", r.Rev, j, describe(*e))
			if e.Kv.ModRevision != r.Rev {
				add("%s: filed under revision %d", at, r.Rev)
			}
			if keys[e.Kv.Key] {
				add("%s: key changed twice in one revision", at)
			}
			keys[e.Kv.Key] = true
			last, known := latest[e.Kv.Key]
			var prev *KeyValue // the key's previous version, when known
			switch {
			case known && last.Type == Put:
				prev = &last.Kv
			case !known:
				prev = e.PrevKv
				known = prev != nil
			}
			if known && e.PrevKv != nil && (prev == nil || *prev != *e.PrevKv) {
				add("%s: recorded PrevKv %s, previous version %s", at, kvString(e.PrevKv), kvString(prev))
			}
			switch {
			case e.Type == Delete && known && prev == nil:
				add("%s: deletes a key that does not exist", at)
			case e.Type == Put && prev != nil:
				if e.Kv.CreateRevision != prev.CreateRevision || e.Kv.Version != prev.Version+1 {
					add("%s: create revision %d version %d after create revision %d version %d",
						at, e.Kv.CreateRevision, e.Kv.Version, prev.CreateRevision, prev.Version)
				}
			case e.Type == Put && (known || e.Kv.Version == 1 || e.Kv.CreateRevision == r.Rev):
				// A creation: the key did not exist, or the change says it is the first version.
				if e.Kv.CreateRevision != r.Rev || e.Kv.Version != 1 {
					add("%s: creation with create revision %d version %d", at, e.Kv.CreateRevision, e.Kv.Version)
				}
			}
			latest[e.Kv.Key] = e
		}
	}
	return vs
}

// RecordedHistory builds the store's history from a recorder's responses: a watch on every key
// from before the first write, so from revision 2 on. Revisions never change without an event,
// so such a recorder sees every change: the history must be a valid one (CheckHistory), have no
// gap from revision 2, and reach final, or it is no ground truth and the error says why.
func RecordedHistory(responses []Response, final int64) ([]Revision, error) {
	var h []Revision
	for _, r := range responses {
		if r.Canceled {
			return nil, fmt.Errorf("recorder canceled (compact revision %d): no ground truth", r.CompactRevision)
		}
		h = AppendEvents(h, r.Events)
	}
	if vs := CheckHistory(h); len(vs) > 0 {
		return nil, fmt.Errorf("recorded history: %d violations:%s", len(vs), List(vs))
	}
	next := int64(2)
	for _, r := range h {
		if r.Rev != next {
			return nil, fmt.Errorf("recorder (every key, from before the first write) skipped revisions %d..%d", next, r.Rev-1)
		}
		next = r.Rev + 1
	}
	if next <= final {
		return nil, fmt.Errorf("recorded history ends at revision %d, before the final revision %d", next-1, final)
	}
	return h, nil
}

// List formats violations one per line, indented, the first 20 of them.
func List(vs []Violation) string {
	var b strings.Builder
	for i, v := range vs {
		if i == 20 {
			fmt.Fprintf(&b, "\n\t... and %d more", len(vs)-i)
			break
		}
		b.WriteString("\n\t" + v.String())
	}
	return b.String()
}
