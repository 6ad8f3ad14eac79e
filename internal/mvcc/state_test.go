package mvcc

import (
	"fmt"
	"slices"
	"testing"
	"unsafe"

	"github.com/ember-kv/ember/internal/mvcc/mvcctest"
	"github.com/ember-kv/ember/internal/wire"
)

// ---- helpers shared by the package's tests ----

// wirePut and wireDel are shared with the root package's tests.
var wirePut, wireDel = mvcctest.Put, mvcctest.Del

// stPut puts key=val on st at a new revision, as a single-op write, and returns the revision.
func stPut(t testing.TB, st *State, key, val string, lease int64) int64 {
	t.Helper()
	w := st.beginWrite()
	w.put(&wire.Op{Kind: wire.OpPut, Key: []byte(key), Value: []byte(val), Lease: lease})
	if evs := w.end(); len(evs) != 1 {
		t.Fatalf("put %q: %d events, want 1", key, len(evs))
	}
	return st.Rev()
}

// stDelete deletes key (or [key, end); end "\x00" = from key) on st and returns how many keys
// were deleted.
func stDelete(t testing.TB, st *State, key, end string) int64 {
	t.Helper()
	op := wireDel(key, end)
	w := st.beginWrite()
	res := w.deleteRange(&op)
	if evs := w.end(); int64(len(evs)) != res.Deleted {
		t.Fatalf("delete %q: %d events for %d deleted keys", key, len(evs), res.Deleted)
	}
	return res.Deleted
}

// stGetAt reads a single key at rev (0 = latest) and fails the test on error.
// rangeKeys answers a range op on st as a read-only txn would.
func rangeKeys(st *State, op *wire.Op) (*wire.RangeResult, wire.Code) {
	w := &writeTxn{st: st, rev: st.rev + 1}
	res, code := w.rangeKeys(op)
	if w.missed != nil {
		return nil, wire.CodeCompacted
	}
	return res, code
}

func stGetAt(t testing.TB, st *State, key string, rev int64) *wire.RangeResult {
	t.Helper()
	res, code := rangeKeys(st, &wire.Op{Kind: wire.OpRange, Key: []byte(key), Revision: rev})
	if code != wire.CodeOK {
		t.Fatalf("get %q at %d: code %d", key, rev, code)
	}
	return res
}

// TestState_WriteEvents checks that every effective change yields one event in change order, and
// that no-ops yield none (the watch hub relies on it to decide whether a revision happened).
func TestState_WriteEvents(t *testing.T) {
	st := New()
	stPut(t, st, "a", "1", 0)
	stPut(t, st, "b", "1", 0)
	tests := []struct {
		name    string
		ops     []wire.Op
		wEvents []string // key@mod/sub, "t" for a tombstone
		wRev    int64
	}{
		{name: "identical put is an event", ops: []wire.Op{wirePut("a", "1")}, wEvents: []string{"a@4/0"}, wRev: 4},
		{name: "delete of nothing is no event", ops: []wire.Op{wireDel("zz", "")}, wRev: 4},
		{name: "changes of one write share the revision, subs in order",
			ops:     []wire.Op{wirePut("c", "1"), wireDel("a", "c"), wirePut("d", "1")},
			wEvents: []string{"c@5/0", "a@5/1t", "b@5/2t", "d@5/3"}, wRev: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := st.beginWrite()
			for i := range tc.ops {
				if tc.ops[i].Kind == wire.OpPut {
					w.put(&tc.ops[i])
				} else {
					w.deleteRange(&tc.ops[i])
				}
			}
			var got []string
			for _, ev := range w.end() {
				name := fmt.Sprintf("%s@%d/%d", ev.Rec.Key, ev.Rec.Mod, ev.Rec.Sub)
				if ev.Rec.Tombstone() {
					name += "t"
				}
				got = append(got, name)
			}
			if !slices.Equal(got, tc.wEvents) || st.Rev() != tc.wRev {
				t.Fatalf("events %v rev %d, want %v rev %d", got, st.Rev(), tc.wEvents, tc.wRev)
			}
		})
	}
}

// ---- reads at every revision of a key's life ----

// keyLife builds key "k": put v1 @2, put v2 @3, delete @4, put v3 @5; then compacts at compactAt
// (if > 0).
func keyLife(t testing.TB, compactAt int64) *State {
	t.Helper()
	st := New()
	stPut(t, st, "k", "v1", 0)
	stPut(t, st, "k", "v2", 0)
	stDelete(t, st, "k", "")
	stPut(t, st, "k", "v3", 0)
	if compactAt > 0 {
		if code := compactFully(st, compactAt); code != wire.CodeOK {
			t.Fatalf("compact(%d): code %d", compactAt, code)
		}
	}
	return st
}

// TestState_Get_History reads "k" at every revision of its life (put, put, delete, put), before
// and after compactions, including at the tombstone revision and at the compaction boundaries.
// Refused reads are checked by code; the errors they become are the root package's concern
// (TestErrorCode_RoundTrip, TestMVCC_Compact_Store).
func TestState_Get_History(t *testing.T) {
	tests := []struct {
		name      string
		compactAt int64
		rev       int64
		wValue    string // "" = absent
		wVersion  int64
		wCreate   int64
		wMod      int64
		wCode     wire.Code
	}{
		{name: "before first write", rev: 1},
		{name: "first put", rev: 2, wValue: "v1", wVersion: 1, wCreate: 2, wMod: 2},
		{name: "second put", rev: 3, wValue: "v2", wVersion: 2, wCreate: 2, wMod: 3},
		{name: "at the tombstone", rev: 4},
		{name: "recreated", rev: 5, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},
		{name: "latest", rev: 0, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},
		{name: "negative is latest", rev: -1, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},
		{name: "future", rev: 6, wCode: wire.CodeFutureRev},

		{name: "compact 3: below", compactAt: 3, rev: 2, wCode: wire.CodeCompacted},
		{name: "compact 3: at", compactAt: 3, rev: 3, wValue: "v2", wVersion: 2, wCreate: 2, wMod: 3},
		{name: "compact 3: tombstone", compactAt: 3, rev: 4},
		{name: "compact 3: after", compactAt: 3, rev: 5, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},
		{name: "compact 3: future", compactAt: 3, rev: 6, wCode: wire.CodeFutureRev},

		{name: "compact at tombstone: below", compactAt: 4, rev: 3, wCode: wire.CodeCompacted},
		{name: "compact at tombstone: at", compactAt: 4, rev: 4},
		{name: "compact at tombstone: after", compactAt: 4, rev: 5, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},

		{name: "compact current: below", compactAt: 5, rev: 4, wCode: wire.CodeCompacted},
		{name: "compact current: at", compactAt: 5, rev: 5, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},
		{name: "compact current: latest", compactAt: 5, rev: 0, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},
		{name: "compact current: future", compactAt: 5, rev: 6, wCode: wire.CodeFutureRev},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := keyLife(t, tc.compactAt)
			res, code := rangeKeys(st, &wire.Op{Kind: wire.OpRange, Key: []byte("k"), Revision: tc.rev})
			if code != tc.wCode {
				t.Fatalf("code %d, want %d", code, tc.wCode)
			}
			if tc.wCode != wire.CodeOK {
				return
			}
			if tc.wValue == "" {
				if len(res.Kvs) != 0 || res.Count != 0 {
					t.Fatalf("got %d kvs count %d, want none", len(res.Kvs), res.Count)
				}
				return
			}
			if len(res.Kvs) != 1 || res.Count != 1 {
				t.Fatalf("got %d kvs count %d, want 1", len(res.Kvs), res.Count)
			}
			kv := res.Kvs[0]
			if string(kv.Value) != tc.wValue || kv.Version != tc.wVersion || kv.CreateRevision != tc.wCreate || kv.ModRevision != tc.wMod {
				t.Fatalf("got %q v%d c%d m%d, want %q v%d c%d m%d", kv.Value, kv.Version, kv.CreateRevision, kv.ModRevision,
					tc.wValue, tc.wVersion, tc.wCreate, tc.wMod)
			}
		})
	}
}

// TestRecord_Value checks the packed value of a record: a value held in memory, an empty one,
// one only in the backend, and a tombstone (version 0). A record must stay within the 80-byte
// size class: the index holds one per key.
func TestRecord_Value(t *testing.T) {
	if n := unsafe.Sizeof(Record{}); n > 80 {
		t.Fatalf("Record is %d bytes, want at most 80", n)
	}
	tests := []struct {
		name       string
		rec        func() *Record
		wInline    string
		wLen       int
		wStored    bool
		wTombstone bool
	}{
		{name: "in memory", rec: func() *Record {
			r := &Record{Version: 1}
			r.setValue(string([]byte("value")))
			return r
		}, wInline: "value", wLen: 5},
		{name: "empty", rec: func() *Record {
			r := &Record{Version: 1}
			r.setValue("")
			return r
		}},
		{name: "stored", rec: func() *Record {
			r := &Record{Version: 2}
			r.setStored(1024)
			return r
		}, wLen: 1024, wStored: true},
		{name: "tombstone", rec: func() *Record { return &Record{} }, wTombstone: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rec()
			if got := r.inlineValue(); got != tc.wInline {
				t.Errorf("inlineValue %q, want %q", got, tc.wInline)
			}
			if r.ValueLen() != tc.wLen || r.stored() != tc.wStored || r.Tombstone() != tc.wTombstone {
				t.Errorf("len %d stored %v tombstone %v, want %d %v %v", r.ValueLen(), r.stored(), r.Tombstone(), tc.wLen, tc.wStored, tc.wTombstone)
			}
			if want := int64(len(r.Key) + tc.wLen + recordOverhead); r.Size() != want {
				t.Errorf("Size %d, want %d", r.Size(), want)
			}
		})
	}
}
