package etcdapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ember-kv/ember"
)

// nextWatch receives one response from wch, failing the test on timeout or a closed channel.
func nextWatch(t testing.TB, wch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	select {
	case r, ok := <-wch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return r
	case <-time.After(testTimeout):
		t.Fatal("no watch response")
	}
	return clientv3.WatchResponse{}
}

// eventStrings renders events as TYPE key=value[ prev=value].
func eventStrings(evs []*clientv3.Event) []string {
	var out []string
	for _, e := range evs {
		s := fmt.Sprintf("%s %s=%s", e.Type, e.Kv.Key, e.Kv.Value)
		if e.PrevKv != nil {
			s += " prev=" + string(e.PrevKv.Value)
		}
		out = append(out, s)
	}
	return out
}

// collectEvents receives until n events have arrived.
func collectEvents(t testing.TB, wch clientv3.WatchChan, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		r := nextWatch(t, wch)
		if err := r.Err(); err != nil {
			t.Fatalf("watch error: %v", err)
		}
		got = append(got, eventStrings(r.Events)...)
	}
	return got
}

func TestWatch_History(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		first := mustPut(t, cli, "w/a", "1").Header.Revision
		mustPut(t, cli, "w/a", "2")
		if _, err := cli.Delete(testCtx(t), "w/a"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		tests := []struct {
			name string
			opts []clientv3.OpOption
			w    []string
		}{
			{"prev kv", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(first), clientv3.WithPrevKV()},
				[]string{"PUT w/a=1", "PUT w/a=2 prev=1", "DELETE w/a= prev=2", "PUT w/b=3"}},
			{"no put", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(first), clientv3.WithFilterPut()},
				[]string{"DELETE w/a="}},
			{"no delete", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(first), clientv3.WithFilterDelete()},
				[]string{"PUT w/a=1", "PUT w/a=2", "PUT w/b=3"}},
		}
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		chans := make([]clientv3.WatchChan, len(tests))
		for i, tc := range tests {
			chans[i] = cli.Watch(ctx, "w/", tc.opts...)
		}
		mustPut(t, cli, "w/b", "3")
		if _, err := cli.Delete(testCtx(t), "w/b"); err != nil { // ends the no-put watch's history
			t.Fatalf("Delete: %v", err)
		}
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if got := collectEvents(t, chans[i], len(tc.w)); !slices.Equal(got, tc.w) {
					t.Errorf("events = %q, want %q", got, tc.w)
				}
			})
		}
	})
}

func TestWatch_Cancel(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		ctx, cancel := context.WithCancel(testCtx(t))
		wch := cli.Watch(ctx, "c", clientv3.WithCreatedNotify())
		if r := nextWatch(t, wch); !r.Created {
			t.Fatalf("first response %+v, want created", r)
		}
		cancel()
		for r := range wch {
			if len(r.Events) > 0 {
				t.Errorf("event after cancel: %v", eventStrings(r.Events))
			}
		}
		// The stream still serves other watches after one is canceled.
		wch2 := cli.Watch(testCtx(t), "c", clientv3.WithCreatedNotify())
		nextWatch(t, wch2)
		mustPut(t, cli, "c", "v")
		if got := collectEvents(t, wch2, 1); got[0] != "PUT c=v" {
			t.Errorf("event = %q", got)
		}
	})
}

func TestWatch_Compacted(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		old := mustPut(t, cli, "k", "1").Header.Revision
		rev := mustPut(t, cli, "k", "2").Header.Revision
		if _, err := cli.Compact(testCtx(t), rev); err != nil {
			t.Fatalf("Compact: %v", err)
		}
		wch := cli.Watch(testCtx(t), "k", clientv3.WithRev(old))
		r := nextWatch(t, wch)
		if r.CompactRevision != rev || !r.Canceled || !errors.Is(r.Err(), rpctypes.ErrCompacted) {
			t.Errorf("response: compact revision %d, canceled %v, err %v; want %d, true, %v",
				r.CompactRevision, r.Canceled, r.Err(), rev, rpctypes.ErrCompacted)
		}
		if _, ok := <-wch; ok {
			t.Error("channel still open after the compaction cancel")
		}
	})
}

func TestWatch_RequestProgress(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		ctx := testCtx(t)
		wch := cli.Watch(ctx, "quiet", clientv3.WithCreatedNotify())
		nextWatch(t, wch)
		rev := mustPut(t, cli, "other", "v").Header.Revision
		if err := cli.RequestProgress(ctx); err != nil {
			t.Fatalf("RequestProgress: %v", err)
		}
		r := nextWatch(t, wch)
		if !r.IsProgressNotify() || r.Header.Revision < rev {
			t.Errorf("response %+v, want a progress notification at %d or later", r, rev)
		}
	})
}

func TestWatch_ProgressNotify(t *testing.T) {
	st := openStore(t, ember.WithWatchProgressNotifyInterval(100*time.Millisecond))
	cli := inProcClient(t, st)
	wch := cli.Watch(testCtx(t), "quiet", clientv3.WithProgressNotify())
	rev := mustPut(t, cli, "other", "v").Header.Revision
	for {
		r := nextWatch(t, wch)
		if !r.IsProgressNotify() {
			t.Fatalf("response %+v, want progress notifications only", r)
		}
		if r.Header.Revision >= rev {
			return
		}
	}
}

// rawWatch opens a watch stream without clientv3's bookkeeping, to see etcd's wire behaviour.
func rawWatch(t testing.TB, cli *clientv3.Client) pb.Watch_WatchClient {
	t.Helper()
	ws, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(testCtx(t))
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	return ws
}

func rawCreate(t testing.TB, ws pb.Watch_WatchClient, c *pb.WatchCreateRequest) *pb.WatchResponse {
	t.Helper()
	if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: c}}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	return rawRecv(t, ws)
}

func rawRecv(t testing.TB, ws pb.Watch_WatchClient) *pb.WatchResponse {
	t.Helper()
	r, err := ws.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return r
}

func TestWatch_Stream_IDs(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		ws := rawWatch(t, cli)
		creates := []struct {
			name      string
			req       *pb.WatchCreateRequest
			wID       int64
			wCanceled bool
			wReason   string
		}{
			{"client chosen", &pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7}, 7, false, ""},
			{"first assigned", &pb.WatchCreateRequest{Key: []byte("a")}, 0, false, ""},
			{"second assigned", &pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("c")}, 1, false, ""},
			{"duplicate", &pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7}, -1, true, errWatcherDuplicateID.Error()},
			{"empty range", &pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")}, -1, true, errEmptyWatcherRange.Error()},
			{"negative start", &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: -1}, -1, true, rpctypes.ErrCompacted.Error()},
		}
		for _, tc := range creates {
			r := rawCreate(t, ws, tc.req)
			if !r.Created || r.WatchId != tc.wID || r.Canceled != tc.wCanceled || r.CancelReason != tc.wReason {
				t.Errorf("%s: created %v id %d canceled %v reason %q; want true %d %v %q",
					tc.name, r.Created, r.WatchId, r.Canceled, r.CancelReason, tc.wID, tc.wCanceled, tc.wReason)
			}
		}
		if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{
			CancelRequest: &pb.WatchCancelRequest{WatchId: 7}}}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if r := rawRecv(t, ws); !r.Canceled || r.WatchId != 7 {
			t.Errorf("cancel answered %v, want canceled watch 7", r)
		}
		mustPut(t, cli, "a", "v")
		mustPut(t, cli, "bb", "v")
		got := map[int64]string{}
		for len(got) < 2 {
			r := rawRecv(t, ws)
			for _, e := range r.Events {
				got[r.WatchId] += string(e.Kv.Key)
			}
		}
		if w := map[int64]string{0: "a", 1: "bb"}; fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("events by watch = %v, want %v", got, w)
		}
	})
}

func TestWatch_Fragment(t *testing.T) {
	st := openStore(t)
	cli := serveTCP(t, st, WithMaxRequestBytes(1024))
	ws := rawWatch(t, cli)
	rawCreate(t, ws, &pb.WatchCreateRequest{Key: []byte("f/"), RangeEnd: []byte("f0"), Fragment: true})
	wch := cli.Watch(testCtx(t), "f/", clientv3.WithPrefix(), clientv3.WithFragment(), clientv3.WithCreatedNotify())
	nextWatch(t, wch)
	var ops []clientv3.Op
	for i := range 5 {
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("f/%d", i), strings.Repeat("x", 400)))
	}
	if _, err := cli.Txn(testCtx(t)).Then(ops...).Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	var frags []int
	for {
		r := rawRecv(t, ws)
		frags = append(frags, len(r.Events))
		if r.Size() > 1024 && len(r.Events) > 1 {
			t.Errorf("fragment of %d bytes with %d events exceeds the limit", r.Size(), len(r.Events))
		}
		if !r.Fragment {
			break
		}
	}
	if len(frags) < 2 {
		t.Errorf("fragments %v, want the revision split", frags)
	}
	if r := nextWatch(t, wch); len(r.Events) != 5 || r.Events[0].Type != mvccpb.PUT {
		t.Errorf("clientv3 reassembled %d events, want 5", len(r.Events))
	}
}
