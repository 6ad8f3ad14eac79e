package etcdapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ember-kv/ember"
)

// invalidWatchID is etcd's watch ID for responses that belong to no watch: failed creates and
// stream-wide progress notifications.
const invalidWatchID = -1

// etcd's cancel reasons for creates its watch store refuses.
var (
	errEmptyWatcherRange  = errors.New("mvcc: watcher range is empty")
	errWatcherDuplicateID = errors.New("mvcc: duplicate watch ID provided on the WatchStream")
)

// Watch serves one etcd watch stream: any number of watches, each backed by an ember watch and
// forwarded by its own goroutine. A client that closes its sending side keeps receiving events,
// as with etcd.
//
// A stream whose metadata requires a leader (clientv3.WithRequireLeader) is refused while the
// member knows none (checkLeader, in front of every method), and its watches are opened with
// ember.WithRequireLeader: when one of them ends for want of a leader, the whole stream ends with
// etcd's "no leader" error, as etcd's ends.
func (g *gateway) Watch(stream pb.Watch_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	if requiresLeader(stream.Context()) {
		ctx = ember.WithRequireLeader(ctx)
	}
	ws := &watchStream{g: g, stream: stream, ctx: ctx, failed: make(chan error, 1), watches: map[int64]*streamWatch{}}
	defer ws.wg.Wait()
	defer cancel()
	// Receiving in its own goroutine lets a failed send or a stopped store end the stream while
	// the client sends nothing.
	reqs, recvErr := receive(ctx, stream.Recv)
	for {
		select {
		case req := <-reqs:
			if err := ws.handle(req); err != nil {
				return err
			}
		case err := <-recvErr:
			if !errors.Is(err, io.EOF) {
				return err
			}
			recvErr = nil // half-closed: keep sending until the client goes away
		case err := <-ws.failed:
			return err
		case <-ctx.Done():
			return toGRPC(ctx.Err())
		}
	}
}

// watchStream is the state of one Watch RPC. Requests are handled on the RPC's goroutine, events
// by one goroutine per watch; sendMu serializes sends, mu guards the watch table.
type watchStream struct {
	g      *gateway
	stream pb.Watch_WatchServer
	ctx    context.Context
	failed chan error // the first error that ends the stream
	wg     sync.WaitGroup
	sendMu sync.Mutex

	mu      sync.Mutex
	watches map[int64]*streamWatch
	nextID  int64
}

// streamWatch is one watch of a stream.
type streamWatch struct {
	id             int64
	progressNotify bool
	fragment       bool
	cancel         context.CancelFunc
	done           chan struct{} // closed when the forwarding goroutine has ended
	// progressFrom is the revision a progress notification the client asked for (WatchProgressRequest)
	// must reach to be forwarded; 0 when none is pending.
	progressFrom atomic.Int64
}

func (ws *watchStream) fail(err error) {
	select {
	case ws.failed <- err:
	default:
	}
}

func (ws *watchStream) send(wr *pb.WatchResponse) error {
	ws.sendMu.Lock()
	defer ws.sendMu.Unlock()
	return ws.stream.Send(wr)
}

func (ws *watchStream) handle(req *pb.WatchRequest) error {
	switch {
	case req.GetCreateRequest() != nil:
		return ws.create(req.GetCreateRequest())
	case req.GetCancelRequest() != nil:
		return ws.cancelWatch(req.GetCancelRequest().WatchId)
	case req.GetProgressRequest() != nil:
		return ws.requestProgress()
	}
	return nil // as etcd, an unknown request does not end the stream
}

// refuse answers a create that fails with etcd's created-and-canceled response.
func (ws *watchStream) refuse(h ember.ResponseHeader, reason string) error {
	return ws.send(&pb.WatchResponse{Header: ws.g.header(ws.ctx, h), WatchId: invalidWatchID,
		Created: true, Canceled: true, CancelReason: reason})
}

func (ws *watchStream) create(creq *pb.WatchCreateRequest) error {
	h, err := ws.g.localRev(ws.ctx)
	if err != nil {
		return err
	}
	if reason := ws.g.watchRefusal(ws.ctx, creq); reason != "" {
		return ws.refuse(h, reason)
	}
	key, end := creq.Key, creq.RangeEnd
	if len(key) == 0 {
		key = []byte{0} // the smallest key, as etcd
	}
	fromKey := len(end) == 1 && end[0] == 0
	switch {
	case creq.StartRevision < 0:
		return ws.refuse(h, rpctypes.ErrCompacted.Error())
	case len(end) > 0 && !fromKey && bytes.Compare(key, end) >= 0:
		return ws.refuse(h, errEmptyWatcherRange.Error())
	}

	ws.mu.Lock()
	id := creq.WatchId
	if id == 0 { // etcd's AutoWatchID: the lowest ID not in use from the last one given
		for ws.watches[ws.nextID] != nil {
			ws.nextID++
		}
		id = ws.nextID
		ws.nextID++
	} else if ws.watches[id] != nil {
		ws.mu.Unlock()
		return ws.refuse(h, errWatcherDuplicateID.Error())
	}
	wctx, cancel := context.WithCancel(ws.ctx)
	sw := &streamWatch{id: id, progressNotify: creq.ProgressNotify, fragment: creq.Fragment,
		cancel: cancel, done: make(chan struct{})}
	ws.watches[id] = sw
	ws.mu.Unlock()

	// Start right after the revision the created response reports, so that no event between
	// the two is lost or reported twice.
	start := creq.StartRevision
	if start == 0 {
		start = h.Revision + 1
	}
	opts := []ember.OpOption{ember.WithRev(start)}
	if len(end) > 0 {
		opts = append(opts, ember.WithRange(string(end)))
	}
	if creq.PrevKv {
		opts = append(opts, ember.WithPrevKV())
	}
	if creq.ProgressNotify {
		opts = append(opts, ember.WithProgressNotify())
	}
	for _, f := range creq.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			opts = append(opts, ember.WithFilterPut())
		case pb.WatchCreateRequest_NODELETE:
			opts = append(opts, ember.WithFilterDelete())
		}
	}
	ch := ws.g.st.Watch(wctx, string(key), opts...)
	// Events wait in the ember watch until the forwarder starts, after the created response.
	if err := ws.send(&pb.WatchResponse{Header: ws.g.header(ws.ctx, h), WatchId: id, Created: true}); err != nil {
		cancel()
		return err
	}
	ws.wg.Add(1)
	go ws.forward(wctx, sw, ch)
	return nil
}

func (ws *watchStream) remove(sw *streamWatch) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.watches[sw.id] == sw {
		delete(ws.watches, sw.id)
	}
}

// cancelWatch ends a watch; its canceled response follows every event it forwarded. As etcd,
// canceling an unknown watch is answered with nothing.
func (ws *watchStream) cancelWatch(id int64) error {
	ws.mu.Lock()
	sw := ws.watches[id]
	delete(ws.watches, id)
	ws.mu.Unlock()
	if sw == nil {
		return nil
	}
	sw.cancel()
	<-sw.done
	h, err := ws.g.localRev(ws.ctx)
	if err != nil {
		return err
	}
	return ws.send(&pb.WatchResponse{Header: ws.g.header(ws.ctx, h), WatchId: id, Canceled: true})
}

// requestProgress asks every watch of the stream for a progress notification at or after the
// current revision. Each watch answers with its own ID once it has delivered every event up to
// the revision it reports (a watch still catching up answers when it has caught up), so a
// notification never reports a revision below an event the watch already sent. A stream
// without watches gets etcd's stream-wide notification at once.
func (ws *watchStream) requestProgress() error {
	h, err := ws.g.localRev(ws.ctx)
	if err != nil {
		return err
	}
	ws.mu.Lock()
	n := len(ws.watches)
	for _, sw := range ws.watches {
		sw.progressFrom.Store(max(h.Revision, 1))
	}
	ws.mu.Unlock()
	if n == 0 {
		return ws.send(&pb.WatchResponse{Header: ws.g.header(ws.ctx, h), WatchId: invalidWatchID})
	}
	return toGRPC(ws.g.st.RequestProgress(ws.ctx))
}

// progressDue reports whether a progress notification at rev goes to the client: always for a
// progress_notify watch, otherwise only when the client asked for one and rev reaches the
// revision it asked at. ember's progress requests are store-wide, so the watch also sees
// notifications other streams asked for; those are dropped.
func (ws *watchStream) progressDue(sw *streamWatch, rev int64) bool {
	from := sw.progressFrom.Load()
	if from != 0 && rev >= from && sw.progressFrom.CompareAndSwap(from, 0) {
		return true
	}
	if from != 0 && rev < from {
		// The store had not dispatched the requested revision yet; ask again.
		ws.g.st.RequestProgress(ws.ctx)
	}
	return sw.progressNotify
}

// forward sends one watch's responses until it ends: canceled by the client or the stream, or
// canceled by the store (compaction, or no leader for a require-leader stream).
func (ws *watchStream) forward(ctx context.Context, sw *streamWatch, ch ember.WatchChan) {
	defer ws.wg.Done()
	defer close(sw.done)
	defer sw.cancel()
	for resp := range ch {
		wr := &pb.WatchResponse{Header: ws.g.header(ws.ctx, resp.Header), WatchId: sw.id}
		switch {
		case errors.Is(resp.Err(), ember.ErrNoLeader):
			ws.remove(sw)
			ws.fail(rpctypes.ErrGRPCNoLeader)
			return
		case resp.Canceled || resp.CompactRevision != 0:
			// etcd reports compaction by compact_revision alone, other cancels by their reason.
			wr.Canceled, wr.CompactRevision = true, resp.CompactRevision
			if resp.CompactRevision == 0 {
				wr.CancelReason = resp.CancelReason
			}
			ws.remove(sw)
			if err := ws.send(wr); err != nil {
				ws.fail(err)
			}
			return
		case len(resp.Events) == 0:
			if !ws.progressDue(sw, resp.Header.Revision) {
				continue
			}
		default:
			wr.Events = events(resp.Events)
		}
		if err := ws.sendWatch(sw, wr); err != nil {
			ws.fail(err)
			return
		}
	}
	if ctx.Err() == nil {
		// The ember watch ended by itself without a cancel response: the store is closing.
		ws.fail(rpctypes.ErrGRPCStopped)
	}
}

// sendWatch sends a watch response, split into fragments if the watch asked for them and the
// response exceeds the request limit. Fragments go out back to back: clientv3 reassembles them
// only if nothing else comes in between.
func (ws *watchStream) sendWatch(sw *streamWatch, wr *pb.WatchResponse) error {
	limit := ws.g.cfg.maxRequestBytes
	if !sw.fragment || len(wr.Events) < 2 || wr.Size() < limit {
		return ws.send(wr)
	}
	ws.sendMu.Lock()
	defer ws.sendMu.Unlock()
	all := wr.Events
	base := *wr
	base.Events = nil
	baseSize := base.Size()
	for len(all) > 0 {
		n, size := 0, baseSize
		for n < len(all) {
			evSize := 1 + protowire.SizeBytes(all[n].Size()) // field tag, length, event
			if n > 0 && size+evSize >= limit {
				break
			}
			size += evSize
			n++
		}
		frag := base
		frag.Events, all = all[:n], all[n:]
		frag.Fragment = len(all) > 0
		if err := ws.stream.Send(&frag); err != nil {
			return err
		}
	}
	return nil
}

func events(evs []*ember.Event) []*mvccpb.Event {
	out := make([]*mvccpb.Event, len(evs))
	for i, e := range evs {
		ev := &mvccpb.Event{Type: mvccpb.PUT, Kv: kv(e.Kv), PrevKv: kv(e.PrevKv)}
		if e.Type == ember.EventTypeDelete {
			ev.Type = mvccpb.DELETE
		}
		out[i] = ev
	}
	return out
}

// requiresLeader reports whether a stream's metadata carries clientv3.WithRequireLeader.
func requiresLeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	v := md.Get(rpctypes.MetadataRequireLeaderKey)
	return len(v) > 0 && v[0] == rpctypes.MetadataHasLeader
}
