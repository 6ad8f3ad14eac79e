package ember

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ember-kv/ember/internal/interval"
	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/planted"
)

// WatchChan receives the responses of one watch.
type WatchChan <-chan WatchResponse

// EventType says what an event did.
type EventType int32

const (
	EventTypePut    EventType = 0
	EventTypeDelete EventType = 1
)

func (t EventType) String() string {
	if t == EventTypeDelete {
		return "DELETE"
	}
	return "PUT"
}

// Event is one change of one key.
type Event struct {
	Type EventType
	// Kv is the key after the change. For a delete it holds only the key and, as ModRevision,
	// the revision of the delete.
	Kv *KeyValue
	// PrevKv is the key before the change, with WithPrevKV (nil if it did not exist or its
	// version has been compacted).
	PrevKv *KeyValue
}

// IsCreate reports whether the event created the key.
func (e *Event) IsCreate() bool {
	return e.Type == EventTypePut && e.Kv.CreateRevision == e.Kv.ModRevision
}

// IsModify reports whether the event changed an existing key.
func (e *Event) IsModify() bool {
	return e.Type == EventTypePut && e.Kv.CreateRevision != e.Kv.ModRevision
}

// WatchResponse carries the events of one or more whole revisions, in revision order, or a
// notice (created, progress, canceled).
type WatchResponse struct {
	Header ResponseHeader
	Events []*Event
	// CompactRevision is set when the watch's next revision has been compacted; the watch is
	// canceled and its channel closes. Re-read the keys and watch again from the read's revision.
	CompactRevision int64
	Canceled        bool
	Created         bool
	CancelReason    string

	cancelErr error // the exported sentinel behind a cancel, for Err
}

// Err returns ErrCompacted for a compacted watch, or the reason a watch was canceled.
func (wr *WatchResponse) Err() error {
	switch {
	case wr.cancelErr != nil:
		return wr.cancelErr
	case wr.CompactRevision != 0:
		return ErrCompacted
	case wr.Canceled && wr.CancelReason != "":
		return errors.New(wr.CancelReason)
	case wr.Canceled:
		return ErrFutureRev
	}
	return nil
}

// IsProgressNotify reports whether the response only says that every event up to
// Header.Revision has been delivered.
func (wr *WatchResponse) IsProgressNotify() bool {
	return len(wr.Events) == 0 && !wr.Canceled && !wr.Created && wr.CompactRevision == 0 && wr.Header.Revision != 0
}

// Watch streams the changes of key (or a range, with WithPrefix, WithRange or WithFromKey)
// starting at WithRev (inclusive; 0 = after the current revision). Every event is delivered
// once, in revision order, with all events of a revision in one response. A consumer that does
// not keep up never slows writers down: it falls behind and catches up from history. The
// channel closes when ctx ends, the store closes, or the watch is canceled (compaction).
func (s *Store) Watch(ctx context.Context, key string, opts ...OpOption) WatchChan {
	op := OpGet(key, opts...)
	if s.ns != "" {
		// The empty key names the prefix itself here: a watch has no way to refuse it.
		op.key, op.end = append([]byte(s.ns), op.key...), s.nsEnd(op.end)
	}
	out := make(chan WatchResponse)
	if s.stopped() {
		close(out)
		return out
	}
	requireLeader := requiresLeader(ctx)
	switch {
	case op.rev < 0:
		s.refuseWatch(ctx, out, WatchResponse{Header: s.header(0), Created: true, Canceled: true,
			CompactRevision: s.fsm.view().st.CompactRev(), CancelReason: ErrCompacted.Error(), cancelErr: ErrCompacted})
	case requireLeader && !s.knowsLeader():
		s.refuseWatch(ctx, out, noLeaderResponse(s.header(0)))
	default:
		s.watch.add(ctx, op, watchExtras{strip: len(s.ns), requireLeader: requireLeader}, out)
	}
	return out
}

// refuseWatch sends a watch's only response, then closes its channel.
func (s *Store) refuseWatch(ctx context.Context, out chan WatchResponse, resp WatchResponse) {
	if !s.spawn(func() {
		defer close(out)
		select {
		case out <- resp:
		case <-ctx.Done():
		case <-s.ctx.Done():
		}
	}) {
		close(out)
	}
}

type requireLeaderKey struct{}

// WithRequireLeader returns a context that makes a watch opened with it end when its member has
// no leader, as clientv3.WithRequireLeader: a watch opened while the member knows no leader,
// or whose member has known none for maxNoLeaderChecks election timeouts in a row (cut off from
// the leader's side of a partition), gets a last response with Canceled set and Err() ==
// ErrNoLeader, then its channel closes. Without it a cut-off member's watch stays open, silent,
// and resumes when the member rejoins. Other requests are not affected: reads and writes that
// need a leader fail with ErrNoLeader or ErrTimeout anyway.
func WithRequireLeader(ctx context.Context) context.Context {
	return context.WithValue(ctx, requireLeaderKey{}, true)
}

func requiresLeader(ctx context.Context) bool {
	v, _ := ctx.Value(requireLeaderKey{}).(bool)
	return v
}

// maxNoLeaderChecks is how many election timeouts in a row a member must know no leader before
// its WithRequireLeader watches end, as etcd's maxNoLeaderCnt: reopening a watch costs more
// than refusing a new one, so an election in progress does not end them.
const maxNoLeaderChecks = 3

func (s *Store) knowsLeader() bool {
	id, _ := s.Leader()
	return id != ""
}

// noLeaderResponse is the last response of a watch ended for want of a leader. Like the one
// clientv3 makes, it reports no revision (h is a header at revision 0): the events received
// tell where to resume from.
func noLeaderResponse(h ResponseHeader) WatchResponse {
	return WatchResponse{Header: h, Canceled: true, CancelReason: ErrNoLeader.Error(), cancelErr: ErrNoLeader}
}

// RequestProgress makes every watcher of this store that is up to date send a progress
// notification: a response with no events whose header revision says every event up to it has
// been delivered. Watchers still catching up send nothing, as etcd.
func (s *Store) RequestProgress(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.stopped() {
		return ErrStopped
	}
	s.watch.requestProgress()
	return nil
}

// revEvents are the events of one revision.
type revEvents struct {
	rev    int64
	events []mvcc.Event
}

const (
	// catchUpRevisions caps the revisions one history read scans, matching or not, so that a
	// watcher catching up looks at its context between reads.
	catchUpRevisions = 1000
	// defaultProgressInterval is how often a WithProgressNotify watcher with nothing to say sends
	// a progress notification, as etcd.
	defaultProgressInterval = 10 * time.Minute
	// eventOverhead approximates the bytes an event costs besides its keys and values.
	eventOverhead = 64
)

// hubLimits bound the memory the hub holds for watchers that are behind. Bytes are the keys and
// values of the events (previous versions included) plus eventOverhead per event. The apply path
// never waits on them: past a bound, the hub stops queueing and the watchers concerned catch up
// from the MVCC history instead, which holds every revision since the last compaction anyway.
type hubLimits struct {
	// pendingEvents and pendingBytes bound the revisions waiting for the dispatcher. When a batch
	// would exceed them, the pending revisions are dropped and nothing more is queued until the
	// dispatcher has moved every watcher that needs them to catching up (a gap): memory stays
	// bounded however far the dispatcher falls behind.
	pendingEvents int
	pendingBytes  int64
	// queueEvents and queueBytes bound the events waiting for one synced watcher's consumer; past
	// them the watcher falls back to catching up from history.
	queueEvents int
	queueBytes  int64
	// respEvents and respBytes bound one response, merged from the queue or read from history:
	// whole revisions are added while they fit. A single revision larger than that still goes
	// in one response, since a revision's events are never split.
	respEvents int
	respBytes  int64
}

var defaultHubLimits = hubLimits{
	pendingEvents: 1 << 16,
	pendingBytes:  64 << 20,
	queueEvents:   4096,
	queueBytes:    4 << 20,
	respEvents:    1024,
	respBytes:     1 << 20,
}

// watchHub routes the events of every applied revision to the watchers of one store.
//
// The apply path only appends each batch of revisions to a pending list (notify); a dispatcher
// goroutine hands them to watchers, so a key watched a thousand times costs the apply path
// nothing more than an unwatched one.
//
// A watcher is synced when the dispatcher gives it every matching event of each revision it
// dispatches from the watcher's next revision on: it appends them to the watcher's queue without
// blocking. A watcher that starts in the past, or whose consumer fell so far behind that its
// queue is full, is unsynced: its own goroutine reads the missing revisions from MVCC read views
// (which hold every revision applied so far), then registers as synced under the hub's lock if
// its next revision is past rev. Revisions the dispatcher has not reached yet and that are below
// next are skipped for it, so no revision is skipped or repeated.
//
// That rests on one invariant, kept under mu: every revision above rev is pending, not applied
// yet, or covered by a pending gap. A gap replaces revisions that were never queued (the pending bounds were exceeded)
// or that a raft snapshot brought (restored); the dispatcher handles it by moving every synced
// watcher that needs them to catching up, then raising rev past them. rev never goes back.
type watchHub struct {
	host             hubHost
	progressInterval time.Duration // WithWatchProgressNotifyInterval
	electionTimeout  time.Duration // how often a WithRequireLeader watcher checks for a leader
	limits           hubLimits
	// afterTake, when set (tests), runs after the dispatcher took the pending revisions and
	// before it hands them out, with mu held.
	afterTake func()

	kick chan struct{} // wakes the dispatcher; holds at most one

	// mu guards the fields below up to pendMu, and is held while the dispatcher fans a batch out.
	// Lock order: mu, then pendMu or watcher.mu (pendMu and watcher.mu are never held together).
	mu     sync.Mutex
	rev    int64 // every revision up to it was dispatched or left to catching up
	byKey  map[string]map[*watcher]struct{}
	ranges interval.Tree[*watcher] // watchers of a range, found by stabbing with a changed key
	all    map[*watcher]struct{}

	// pendMu guards the fields below. The apply path takes it alone and never holds it long.
	pendMu        sync.Mutex
	pending       []revEvents
	pendingEvents int
	pendingBytes  int64
	gap           bool   // revisions up to applied were dropped or restored: nothing is queued until the dispatcher handles it
	gaps          uint64 // gaps so far
	applied       int64  // revision of the last applied batch
	// prevKVWatchers counts the watchers that want previous values: while there are any, the
	// apply path reads the ones its events lack (notify).
	prevKVWatchers int
}

type watcher struct {
	hub *watchHub
	kr  mvcc.KeyRange
	out chan<- WatchResponse
	ctx context.Context

	filterPut, filterDelete, prevKV, progressNotify bool
	watchExtras

	wake chan struct{} // nudges the watcher's goroutine; holds at most one

	// While the dispatcher fans a batch out, batch collects this watcher's events of the current
	// revision and fan one response per revision collected so far; only the dispatcher touches
	// them, under watchHub.mu.
	batch      []*Event
	batchBytes int64
	fan        []queued
	fanEvents  int
	fanBytes   int64

	mu sync.Mutex // guards the fields below; lock order: after watchHub.mu
	// next is the first revision not yet handed over: every matching event below it was sent or
	// queued. Synced watchers may lag behind hub.rev when nothing matched.
	next           int64
	synced         bool
	queue          []queued
	queuedEvents   int
	queuedBytes    int64
	progressWanted bool
	sentSinceTick  bool
}

// queued is one response waiting in a watcher's queue: a notice, or the events of one revision.
type queued struct {
	resp  WatchResponse
	bytes int64
}

// hubHost is what the watch hub needs of the member it serves: a Store is one, and a test gives
// the hub a host of its own (watch_hub_test.go), so that the hub is tested without raft.
type hubHost interface {
	header(rev int64) ResponseHeader // a response header at revision rev
	view() *readView                 // a read view at least as new as the last applied batch
	spawn(fn func()) bool            // runs fn in a goroutine the member's close waits for; false once closing
	lifetime() context.Context       // done when the member closes
	knowsLeader() bool               // whether the member knows a leader (WithRequireLeader)
}

func newWatchHub(host hubHost, progressInterval, electionTimeout time.Duration) *watchHub {
	return &watchHub{host: host, progressInterval: progressInterval, electionTimeout: electionTimeout, limits: defaultHubLimits, rev: 1, applied: 1, kick: make(chan struct{}, 1),
		byKey: map[string]map[*watcher]struct{}{}, all: map[*watcher]struct{}{}}
}

func (h *watchHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.all)
}

func (h *watchHub) appliedRev() int64 {
	h.pendMu.Lock()
	defer h.pendMu.Unlock()
	return h.applied
}

// hubMemory is what the hub holds for watchers that are behind.
type hubMemory struct {
	pendingRevs, pendingEvents int
	pendingBytes               int64
	queuedEvents               int   // over every watcher
	queuedBytes                int64 // over every watcher
	maxQueuedBytes             int64 // of the fullest watcher
	gaps                       uint64
}

func (h *watchHub) memory() hubMemory {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pendMu.Lock()
	m := hubMemory{pendingRevs: len(h.pending), pendingEvents: h.pendingEvents, pendingBytes: h.pendingBytes, gaps: h.gaps}
	h.pendMu.Unlock()
	for w := range h.all {
		w.mu.Lock()
		m.queuedEvents += w.queuedEvents
		m.queuedBytes += w.queuedBytes
		m.maxQueuedBytes = max(m.maxQueuedBytes, w.queuedBytes)
		w.mu.Unlock()
	}
	return m
}

// watchExtras are the settings of a watch that do not come from its op.
type watchExtras struct {
	strip         int  // bytes of namespace prefix to strip from delivered keys
	requireLeader bool // end the watch when the member has had no leader for a while
}

func (h *watchHub) add(ctx context.Context, op Op, x watchExtras, out chan WatchResponse) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(h.host.lifetime(), cancel)
	w := &watcher{
		hub: h, kr: mvcc.NewKeyRange(op.key, op.end), out: out, ctx: ctx,
		filterPut: op.filterPut, filterDelete: op.filterDelete, prevKV: op.prevKV,
		progressNotify: op.progressNotify, watchExtras: x, wake: make(chan struct{}, 1),
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// "Now" is the last applied revision, which the dispatcher may not have reached yet.
	applied := h.admit(w.prevKV)
	if op.createdNotify {
		w.queue = append(w.queue, queued{resp: WatchResponse{Header: h.host.header(applied), Created: true}})
	}
	switch {
	case op.rev == 0:
		w.next, w.synced = applied+1, true
	case op.rev > applied:
		w.next, w.synced = op.rev, true // a future start: the dispatcher skips what is below it
	default:
		w.next = op.rev
	}
	started := h.host.spawn(func() {
		defer stop()
		defer cancel()
		w.run()
	})
	if !started {
		h.leave(w.prevKV)
		stop()
		cancel()
		close(out)
		return
	}
	h.all[w] = struct{}{}
	if w.synced {
		h.register(w)
	}
}

// admit counts a new watcher among those that want previous values if prevKV, and returns the
// last applied revision: every event of a later revision carries its previous value (notify),
// and the watcher reads the earlier ones from history, with theirs.
func (h *watchHub) admit(prevKV bool) int64 {
	h.pendMu.Lock()
	defer h.pendMu.Unlock()
	if prevKV {
		h.prevKVWatchers++
	}
	return h.applied
}

// leave undoes admit for a watcher that ended.
func (h *watchHub) leave(prevKV bool) {
	if prevKV {
		h.pendMu.Lock()
		h.prevKVWatchers--
		h.pendMu.Unlock()
	}
}

// register puts w where the dispatcher finds it. Callers hold h.mu.
func (h *watchHub) register(w *watcher) {
	if !w.kr.Single {
		h.ranges.Insert(w.kr.Key, w.kr.IntervalEnd(), w)
		return
	}
	set := h.byKey[w.kr.Key]
	if set == nil {
		set = map[*watcher]struct{}{}
		h.byKey[w.kr.Key] = set
	}
	set[w] = struct{}{}
}

// unregister removes w from the dispatcher's sets. Callers hold h.mu.
func (h *watchHub) unregister(w *watcher) {
	if !w.kr.Single {
		h.ranges.Delete(w.kr.Key, w.kr.IntervalEnd(), w)
		return
	}
	if set := h.byKey[w.kr.Key]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(h.byKey, w.kr.Key)
		}
	}
}

// eventSize is what an event of r costs in the hub's bounds, with prev when it carries it.
func eventSize(r, prev *mvcc.Record) int64 {
	n := int64(len(r.Key)+r.ValueLen()) + eventOverhead
	if prev != nil {
		n += int64(len(prev.Key) + prev.ValueLen())
	}
	return n
}

// notify queues the events of newly applied revisions for the dispatcher. It runs on the apply
// path with fsm.mu held, and only appends, or drops what is pending when the bounds are reached.
// st is the state that applied them: if a watcher wants previous values, the ones the events
// lack are read from it, before anything (a compaction step) can remove them.
func (h *watchHub) notify(revs []revEvents, cur int64, st *mvcc.State) {
	h.pendMu.Lock()
	if h.prevKVWatchers > 0 {
		for _, re := range revs {
			st.ReadPrevValues(re.events)
		}
	}
	h.applied = cur
	if !h.gap {
		events, bytes := 0, int64(0)
		for _, re := range revs {
			events += len(re.events)
			for i := range re.events {
				bytes += eventSize(re.events[i].Rec, re.events[i].Prev)
			}
		}
		if h.pendingEvents+events > h.limits.pendingEvents || h.pendingBytes+bytes > h.limits.pendingBytes {
			h.dropPending() // the dispatcher is too far behind: watchers read these from history
		} else {
			h.pending = append(h.pending, revs...)
			h.pendingEvents += events
			h.pendingBytes += bytes
		}
	}
	h.pendMu.Unlock()
	h.kickDispatcher()
}

// dropPending forgets the pending revisions and stops queueing until the dispatcher has handled
// the gap. Callers hold h.pendMu.
func (h *watchHub) dropPending() {
	if !h.gap {
		h.gaps++
	}
	h.pending, h.pendingEvents, h.pendingBytes, h.gap = nil, 0, 0, true
}

func (h *watchHub) kickDispatcher() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// restored takes note that the state was replaced by a raft snapshot, on the apply path: the
// revisions it brought were never queued, so it leaves a gap for the dispatcher, which moves
// the synced watchers to catching up from the new state. A watcher continues from history if
// the snapshot still holds its next revision, and is canceled with ErrCompacted otherwise; it
// never skips silently.
func (h *watchHub) restored(st *mvcc.State) {
	h.pendMu.Lock()
	h.dropPending() // older than the snapshot; catching up reads them from it
	h.applied = st.Rev()
	h.pendMu.Unlock()
	h.kickDispatcher()
}

// dispatch runs until the store closes, handing pending revisions to synced watchers.
func (h *watchHub) dispatch() {
	for {
		select {
		case <-h.kick:
		case <-h.host.lifetime().Done():
			return
		}
		for h.dispatchOnce() {
		}
	}
}

// dispatchOnce hands out what is pending, a gap included, and reports whether there was
// anything. Taking the pending revisions and moving rev past them happen under one hold of mu,
// so a watcher registering in between cannot see rev below revisions already taken.
func (h *watchHub) dispatchOnce() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pendMu.Lock()
	revs, gap, applied := h.pending, h.gap, h.applied
	h.pending, h.pendingEvents, h.pendingBytes, h.gap = nil, 0, 0, false
	h.pendMu.Unlock()
	if len(revs) == 0 && !gap {
		return false
	}
	if h.afterTake != nil {
		h.afterTake()
	}
	if len(revs) > 0 {
		h.fanOut(revs)
	}
	if gap {
		h.skipTo(applied)
	}
	return true
}

// skipTo raises rev to upTo without dispatching the revisions in between: every synced watcher
// that needs one of them becomes unsynced and reads them from history. Callers hold h.mu.
func (h *watchHub) skipTo(upTo int64) {
	for w := range h.all {
		w.mu.Lock()
		if w.synced && w.next <= upTo {
			// A synced watcher has everything up to the dispatched revision even if nothing
			// matched (its next is kept lazily); record that, or an idle watcher could be
			// canceled as compacted for revisions it never needed.
			w.next = max(w.next, h.rev+1)
			w.synced = false
			h.unregister(w)
			w.nudge()
		}
		w.mu.Unlock()
	}
	h.rev = max(h.rev, upTo)
}

// fanOut gives one batch of revisions to the synced watchers. It never blocks on a consumer: a
// watcher whose queue is full is demoted to unsynced and catches up from history. Callers hold
// h.mu.
func (h *watchHub) fanOut(revs []revEvents) {
	first := h.rev + 1
	h.rev = max(h.rev, revs[len(revs)-1].rev)
	if len(h.all) == 0 {
		return
	}
	// Each change becomes at most two Events (with and without PrevKv), shared by every watcher
	// that receives it: a put watched a thousand times costs two allocations, not a thousand.
	var touched, inRev []*watcher
	for _, re := range revs {
		if planted.Enabled(planted.SkipWatchEvent) && re.rev%7 == 0 {
			continue
		}
		inRev = inRev[:0]
		for i := range re.events {
			ev := &re.events[i]
			var plain, withPrev *Event
			deliver := func(w *watcher) {
				if re.rev < w.next || !w.wants(ev.Rec) {
					return // below the watcher's start or catch-up point, or filtered
				}
				var e *Event
				var prev *mvcc.Record
				if w.prevKV {
					if withPrev == nil {
						prev := ev.Prev
						if !ev.PrevRead {
							prev = nil // a damaged backend lost it (State.ReadPrevValues)
						}
						withPrev = eventOf(ev.Rec, ev.Value, prev, ev.PrevValue, true)
					}
					e = withPrev
					if withPrev.PrevKv != nil {
						prev = ev.Prev
					}
				} else {
					if plain == nil {
						plain = eventOf(ev.Rec, ev.Value, nil, "", false)
					}
					e = plain
				}
				if len(w.batch) == 0 {
					inRev = append(inRev, w)
				}
				w.batch = append(w.batch, e)
				w.batchBytes += eventSize(ev.Rec, prev)
			}
			for w := range h.byKey[ev.Rec.Key] {
				deliver(w)
			}
			h.ranges.Stab(ev.Rec.Key, func(w *watcher) bool {
				deliver(w)
				return true
			})
		}
		for _, w := range inRev {
			if len(w.fan) == 0 {
				touched = append(touched, w)
			}
			w.fan = append(w.fan, queued{resp: WatchResponse{Events: w.batch}, bytes: w.batchBytes})
			w.fanEvents += len(w.batch)
			w.fanBytes += w.batchBytes
			w.batch, w.batchBytes = nil, 0
		}
	}
	header := h.host.header(h.rev)
	lim := h.limits
	for _, w := range touched {
		w.mu.Lock()
		if w.queuedEvents+w.fanEvents > lim.queueEvents || w.queuedBytes+w.fanBytes > lim.queueBytes {
			// The consumer is too far behind: stop queueing and let it catch up from history,
			// starting with this batch.
			w.synced = false
			w.next = max(w.next, first)
			h.unregister(w)
		} else {
			for _, q := range w.fan {
				q.resp.Header = header
				w.queue = append(w.queue, q)
			}
			w.queuedEvents += w.fanEvents
			w.queuedBytes += w.fanBytes
			w.next = h.rev + 1
		}
		w.mu.Unlock()
		clear(w.fan)
		w.fan, w.fanEvents, w.fanBytes = w.fan[:0], 0, 0
		w.nudge()
	}
}

// wants reports whether w's filters let a change of r through.
func (w *watcher) wants(r *mvcc.Record) bool {
	return !(w.filterPut && !r.Tombstone()) && !(w.filterDelete && r.Tombstone())
}

// eventOf is the event of the change r with its value, and prev's pair if withPrev.
func eventOf(r *mvcc.Record, value string, prev *mvcc.Record, prevValue string, withPrev bool) *Event {
	e := &Event{}
	if r.Tombstone() {
		e.Type = EventTypeDelete
		// Like etcd's, a delete event's pair holds only the key and the deleting revision, with
		// a nil Value (the other fields of a tombstone are zero).
		e.Kv = &KeyValue{Key: []byte(r.Key), ModRevision: r.Mod}
	} else {
		e.Kv = recordKeyValue(r, value)
	}
	if withPrev && prev != nil && !prev.Tombstone() {
		e.PrevKv = recordKeyValue(prev, prevValue)
	}
	return e
}

func recordKeyValue(r *mvcc.Record, value string) *KeyValue {
	return &KeyValue{Key: []byte(r.Key), Value: []byte(value), CreateRevision: r.Create,
		ModRevision: r.Mod, Version: r.Version, Lease: r.Lease}
}

func (w *watcher) nudge() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// requestProgress asks every watcher for a progress notification.
func (h *watchHub) requestProgress() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.all {
		w.mu.Lock()
		w.progressWanted = true
		w.mu.Unlock()
		w.nudge()
	}
}

// run delivers a watcher's responses until its context ends.
func (w *watcher) run() {
	h := w.hub
	defer func() {
		h.mu.Lock()
		delete(h.all, w)
		h.unregister(w)
		h.mu.Unlock()
		h.leave(w.prevKV)
		close(w.out)
	}()
	var tick, leaderTick <-chan time.Time
	if w.progressNotify {
		t := time.NewTicker(h.progressInterval)
		defer t.Stop()
		tick = t.C
	}
	noLeader := 0 // election timeouts in a row without a leader
	if w.requireLeader {
		t := time.NewTicker(h.electionTimeout)
		defer t.Stop()
		leaderTick = t.C
	}
	for {
		if resp, ok := w.dequeue(); ok {
			if !w.send(resp) {
				return
			}
			continue
		}
		w.mu.Lock()
		synced := w.synced
		w.mu.Unlock()
		if !synced {
			if !w.catchUp() {
				return
			}
			continue
		}
		if w.takeProgress(false) && !w.sendProgress() {
			return
		}
		select {
		case <-w.wake:
		case <-tick:
			if w.takeProgress(true) && !w.sendProgress() {
				return
			}
		case <-leaderTick:
			noLeader++
			if h.host.knowsLeader() {
				noLeader = 0
			}
			if noLeader >= maxNoLeaderChecks {
				w.send(noLeaderResponse(h.host.header(0)))
				return
			}
		case <-w.ctx.Done():
			return
		}
	}
}

// dequeue takes the next response, merging queued event responses (whole revisions each, in
// order) into one, within the response bounds, so that a consumer that fell behind catches up
// with fewer receives.
func (w *watcher) dequeue() (WatchResponse, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return WatchResponse{}, false
	}
	lim := w.hub.limits
	resp, bytes := w.queue[0].resp, w.queue[0].bytes
	n := 1
	if len(resp.Events) > 0 {
		for n < len(w.queue) && len(w.queue[n].resp.Events) > 0 &&
			len(resp.Events)+len(w.queue[n].resp.Events) <= lim.respEvents && bytes+w.queue[n].bytes <= lim.respBytes {
			if n == 1 {
				resp.Events = append([]*Event(nil), resp.Events...)
			}
			resp.Events = append(resp.Events, w.queue[n].resp.Events...)
			resp.Header = w.queue[n].resp.Header
			bytes += w.queue[n].bytes
			n++
		}
	}
	for i := 0; i < n; i++ {
		w.queuedEvents -= len(w.queue[i].resp.Events)
		w.queuedBytes -= w.queue[i].bytes
		w.queue[i] = queued{}
	}
	w.queue = w.queue[n:]
	return resp, true
}

func (w *watcher) send(resp WatchResponse) bool {
	if w.strip > 0 && len(resp.Events) > 0 {
		resp.Events = stripEvents(resp.Events, w.strip)
	}
	select {
	case w.out <- resp:
		w.mu.Lock()
		w.sentSinceTick = true
		w.mu.Unlock()
		return true
	case <-w.ctx.Done():
		return false
	}
}

// takeProgress reports whether a progress notification is due: requested, or (tick) nothing
// was sent during the last interval.
func (w *watcher) takeProgress(tick bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	due := w.progressWanted || (tick && !w.sentSinceTick)
	w.progressWanted = false
	if tick {
		w.sentSinceTick = false
	}
	return due
}

// sendProgress tells the consumer that every event up to the dispatched revision was delivered.
// It runs only when the watcher is synced and its queue is empty; holding the hub's lock while
// reading the revision keeps the dispatcher from slipping a new event under it.
func (w *watcher) sendProgress() bool {
	h := w.hub
	h.mu.Lock()
	w.mu.Lock()
	ok := w.synced && len(w.queue) == 0 && w.next-1 <= h.rev // not for a future start not reached
	rev := h.rev
	w.mu.Unlock()
	h.mu.Unlock()
	if !ok {
		return true
	}
	return w.send(WatchResponse{Header: h.host.header(rev)})
}

// catchUp sends the revisions the watcher missed, read from history, then registers it as
// synced. It returns false when the watcher ended.
//
// It reads up to the revision of the view it starts with, one bounded response at a time, each
// from the newest view: a consumer that stalls holds one response, not a view that would keep
// compacted history alive.
func (w *watcher) catchUp() bool {
	h := w.hub
	w.mu.Lock()
	next := w.next
	w.mu.Unlock()
	target := int64(0)
	for {
		v := h.host.view()
		if next < v.st.CompactRev() {
			w.send(WatchResponse{Header: h.host.header(v.st.Rev()), CompactRevision: v.st.CompactRev(), Canceled: true,
				CancelReason: ErrCompacted.Error(), cancelErr: ErrCompacted})
			return false
		}
		if target == 0 {
			target = v.st.Rev()
		}
		if next > target {
			break
		}
		evs, last, ok := w.readHistory(v.st, next, target)
		if !ok {
			// A value compacted after v was cloned: next is below the compaction
			// revision of a newer view, which the next round finds. Without a newer view
			// the file lost the value (or the member is closing).
			if h.host.lifetime().Err() != nil {
				return false // closing: the file is closed, not damaged
			}
			if h.host.view() == v {
				w.send(WatchResponse{Header: h.host.header(v.st.Rev()), Canceled: true,
					CancelReason: ErrCorrupt.Error(), cancelErr: ErrCorrupt})
				return false
			}
			continue
		}
		if len(evs) > 0 && !w.send(WatchResponse{Header: h.host.header(v.st.Rev()), Events: evs}) {
			return false
		}
		next = last + 1
		if w.ctx.Err() != nil {
			return false
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.next = max(next, w.next)
	// Synced only if the dispatcher has not yet passed next: it then delivers every revision
	// from next on (and skips the ones below, which this catch-up sent). Otherwise revisions
	// were dispatched, or left to catching up by a gap, while history was read: catch up again
	// from a newer view.
	if w.next > h.rev {
		w.synced = true
		h.register(w)
	}
	return w.ctx.Err() == nil
}

// readHistory returns the matching events of the revisions from next through upTo that fit in
// one response (at least one revision, however large; whole revisions only), scanning at most
// catchUpRevisions revisions, and the last revision it covered. It returns false if a value or
// a version was compacted after st was cloned (mvcc.State.Value, mvcc.State.Changes).
func (w *watcher) readHistory(st *mvcc.State, next, upTo int64) ([]*Event, int64, bool) {
	lim := w.hub.limits
	var evs []*Event
	missed := false
	var bytes int64
	last := upTo
	revsSeen := 0
	cur, curStart := int64(0), 0 // the revision being read, and where its events begin in evs
	complete := st.Changes(next, func(r *mvcc.Record) bool {
		if r.Mod > upTo {
			return false
		}
		if r.Mod != cur {
			if revsSeen == catchUpRevisions || len(evs) >= lim.respEvents || bytes >= lim.respBytes {
				last = r.Mod - 1
				return false
			}
			revsSeen++
			cur, curStart = r.Mod, len(evs)
		}
		if !w.kr.Contains(r.Key) || !w.wants(r) {
			return true
		}
		var prev *mvcc.Record
		var value, prevValue string
		ok := true
		if w.prevKV && r.Mod > st.CompactRev() {
			// At the compaction revision the previous version is compacted (etcd: "nothing
			// will be returned"), even while a pending removal still holds it.
			prev, ok = st.PrevVersion(r)
		}
		if ok {
			value, ok = st.Value(r)
		}
		if ok && prev != nil && !prev.Tombstone() {
			prevValue, ok = st.Value(prev)
		}
		if !ok {
			missed = true
			return false
		}
		e := eventOf(r, value, prev, prevValue, w.prevKV)
		if e.PrevKv == nil {
			prev = nil
		}
		evs = append(evs, e)
		bytes += eventSize(r, prev)
		if curStart > 0 && (len(evs) > lim.respEvents || bytes > lim.respBytes) {
			// cur does not fit after the revisions before it: it starts the next response.
			evs, last = evs[:curStart], cur-1
			return false
		}
		return true
	})
	return evs, last, complete && !missed
}
