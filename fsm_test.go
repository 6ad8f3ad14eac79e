package ember

import (
	"context"
	"errors"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

func openMem(t testing.TB, opts ...Option) *Store {
	t.Helper()
	s, err := Open("", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func putCommand(id wire.RequestID, key, val string) []byte {
	cmd := &wire.Command{ID: id, Kind: wire.KindTxn, Txn: &wire.Txn{
		Success: []wire.Op{{Kind: wire.OpPut, Key: []byte(key), Value: []byte(val)}}}}
	return cmd.Marshal(nil)
}

// A command that reaches the log twice (a retry after an unknown outcome) applies once, and the
// retry gets the first result.
func TestFSM_DuplicateRequestAppliesOnce(t *testing.T) {
	f := newTestFSM(t, newWatchHub(nil, 0, 0), newLessor(nil, nil, 0), defaultDedupResultBytes)
	id := wire.RequestID{Client: 7, Seq: 1}
	data := putCommand(id, "k", "v")
	out := f.ApplyBatch([]*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: data},
		{Index: 2, Type: raft.LogCommand, Data: putCommand(wire.RequestID{Client: 7, Seq: 2}, "other", "x")},
		{Index: 3, Type: raft.LogCommand, Data: data},
	})
	first, retry := out[0].(*wire.Result), out[2].(*wire.Result)
	if !reflect.DeepEqual(first, retry) || first.Revision != 2 {
		t.Fatalf("retry result %+v, first %+v: want the same result at revision 2", retry, first)
	}
	if rev := f.app.State().Rev(); rev != 3 {
		t.Fatalf("revision %d after put, other put, duplicate: want 3", rev)
	}
	if r := latestRecord(f.app.State(), "k"); r.Version != 1 {
		t.Fatalf("version %d: the duplicate was applied", r.Version)
	}
}

// latestRecord is key's newest version in st, or nil if the key does not exist.
func latestRecord(st *mvcc.State, key string) *mvcc.Record {
	var found *mvcc.Record
	st.Scan(mvcc.NewKeyRange([]byte(key), nil), st.Rev(), func(r *mvcc.Record) bool {
		found = r
		return false
	})
	return found
}

// Request IDs are forgotten after the window, deterministically by log index.
func TestFSM_DedupWindowExpires(t *testing.T) {
	f := newTestFSM(t, newWatchHub(nil, 0, 0), newLessor(nil, nil, 0), defaultDedupResultBytes)
	old := wire.RequestID{Client: 1, Seq: 1}
	f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: putCommand(old, "a", "1")}})
	f.ApplyBatch([]*raft.Log{{Index: mvcc.DedupWindow + 2, Type: raft.LogCommand,
		Data: putCommand(wire.RequestID{Client: 1, Seq: 2}, "b", "1")}})
	if _, ok := f.app.State().Remembered(old); ok {
		t.Fatal("request ID older than the window is still remembered")
	}
	if n := f.app.State().RememberedCount(); n != 1 {
		t.Fatalf("dedup holds %d entries, want 1", n)
	}
	if err := f.app.Check(); err != nil {
		t.Fatal(err)
	}
}

// The write path retries a command with its original request ID; the state machine answers the
// retry from its dedup table.
func TestStore_Submit_RetryIsIdempotent(t *testing.T) {
	s := openMem(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := &wire.Command{ID: s.nextID(), Kind: wire.KindTxn, Txn: &wire.Txn{
		Success: []wire.Op{{Kind: wire.OpPut, Key: []byte("k"), Value: []byte("v")}}}}
	data := cmd.Marshal(nil)
	r1, err := s.submit(ctx, cmd, data, true)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.submit(ctx, cmd, data, true)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Revision != r2.Revision {
		t.Fatalf("retry answered at revision %d, first at %d", r2.Revision, r1.Revision)
	}
	g, err := s.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if g.Kvs[0].Version != 1 || g.Header.Revision != r1.Revision {
		t.Fatalf("after a retried put: version %d, revision %d; want 1, %d", g.Kvs[0].Version, g.Header.Revision, r1.Revision)
	}
}

// A read view is a consistent, immutable copy: writes applied after it was taken do not show.
func TestFSM_ReadViewIsImmutable(t *testing.T) {
	f := newTestFSM(t, newWatchHub(nil, 0, 0), newLessor(nil, nil, 0), defaultDedupResultBytes)
	f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: putCommand(wire.RequestID{}, "k", "1")}})
	v := f.view()
	f.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogCommand, Data: putCommand(wire.RequestID{}, "k", "2")}})
	if val, _ := v.st.Value(latestRecord(v.st, "k")); val != "1" || v.st.Rev() != 2 {
		t.Fatalf("old view sees %q at rev %d, want 1 at 2", val, v.st.Rev())
	}
	if nv := f.view(); nv == v || nv.applied != 2 {
		t.Fatalf("new view not taken after apply (applied %d)", nv.applied)
	}
}

// An undecodable entry fails alone and leaves the state untouched.
func TestFSM_UndecodableEntry(t *testing.T) {
	f := newTestFSM(t, newWatchHub(nil, 0, 0), newLessor(nil, nil, 0), defaultDedupResultBytes)
	out := f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: []byte{0xff, 0x01}}})
	if r := out[0].(*wire.Result); r.Code != wire.CodeMalformed || f.app.State().Rev() != 1 {
		t.Fatalf("result %+v, rev %d", r, f.app.State().Rev())
	}
	if f.applied.Load() != 1 {
		t.Fatal("applied index did not advance past the bad entry")
	}
}

func nopLogger() hclog.Logger { return hclog.NewNullLogger() }

// A retry whose first attempt is older than the dedup window is refused, never applied: if the
// first attempt was applied, the state machine no longer remembers it.
func TestFSM_RetryBeyondDedupWindowIsRefused(t *testing.T) {
	retry := func(floor uint64, seq uint64) []byte {
		cmd := &wire.Command{ID: wire.RequestID{Client: 3, Seq: seq}, RetryFloor: floor, Kind: wire.KindTxn,
			Txn: &wire.Txn{Success: []wire.Op{{Kind: wire.OpPut, Key: []byte("k"), Value: []byte("v")}}}}
		return cmd.Marshal(nil)
	}
	tests := []struct {
		name     string
		floor    uint64
		index    uint64
		wCode    wire.Code
		wApplied bool
	}{
		{"first attempt", 0, mvcc.DedupWindow * 3, wire.CodeOK, true},
		{"retry inside the window", 10, 10 + mvcc.DedupWindow - 1, wire.CodeOK, true},
		{"retry at the window's end", 10, 10 + mvcc.DedupWindow, wire.CodeTimeout, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFSM(t, newWatchHub(nil, 0, 0), newLessor(nil, nil, 0), defaultDedupResultBytes)
			out := f.ApplyBatch([]*raft.Log{{Index: tc.index, Type: raft.LogCommand, Data: retry(tc.floor, uint64(i+1))}})
			res := out[0].(*wire.Result)
			if res.Code != tc.wCode || (f.app.State().Rev() == 2) != tc.wApplied {
				t.Fatalf("code %d, revision %d; want code %d, applied %v", res.Code, f.app.State().Rev(), tc.wCode, tc.wApplied)
			}
		})
	}
}

// An entry that fails its checksum stops the member before it is applied: the entries before it
// in the batch are applied and published, it and the ones after are not.
func TestFSM_DamagedEntryStopsBeforeApplying(t *testing.T) {
	f := newTestFSM(t, newWatchHub(nil, 0, 0), newLessor(nil, nil, 0), defaultDedupResultBytes)
	var stopped error
	f.corrupt = func(err error) {
		stopped = err
		runtime.Goexit() // as the store's fail-stop does, on raft's apply goroutine
	}
	damaged := putCommand(wire.RequestID{Client: 7, Seq: 2}, "b", "value")
	damaged[len(damaged)-8] ^= 0x20
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.ApplyBatch([]*raft.Log{
			{Index: 1, Type: raft.LogCommand, Data: putCommand(wire.RequestID{Client: 7, Seq: 1}, "a", "v")},
			{Index: 2, Type: raft.LogCommand, Data: damaged},
			{Index: 3, Type: raft.LogCommand, Data: putCommand(wire.RequestID{Client: 7, Seq: 3}, "c", "v")},
		})
		t.Error("ApplyBatch returned after a damaged entry")
	}()
	<-done
	if !errors.Is(stopped, ErrCorrupt) || !errors.Is(stopped, wire.ErrChecksum) {
		t.Fatalf("stopped with %v, want ErrCorrupt wrapping wire.ErrChecksum", stopped)
	}
	if got := f.applied.Load(); got != 1 {
		t.Fatalf("applied index %d, want 1", got)
	}
	v := f.view()
	if v.applied != 1 || v.st.Rev() != 2 {
		t.Fatalf("view at applied %d, revision %d: want the entry before the damaged one published", v.applied, v.st.Rev())
	}
	for _, k := range []string{"b", "c"} {
		if latestRecord(f.app.State(), k) != nil {
			t.Fatalf("key %q applied after the damaged entry", k)
		}
	}
}
