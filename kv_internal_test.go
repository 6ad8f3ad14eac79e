package ember

import (
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// onDiskState returns a state on a new backend in t's temp dir whose values longer than 4 bytes
// are kept only in the file once committed.
func onDiskState(t *testing.T) *mvcc.State {
	t.Helper()
	b, err := mvcc.OpenBackend(filepath.Join(t.TempDir(), "state.db"), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return mvcc.NewOnDisk(b)
}

func applyOps(t *testing.T, st *mvcc.State, ops ...wire.Op) {
	t.Helper()
	if res, _ := st.ApplyTxn(&wire.Txn{Success: ops}); res == nil {
		t.Fatalf("apply %+v failed", ops)
	}
}

// A get of one key takes a path of its own (getKeyFrom); it answers as the range path does for
// a range of just that key, for every option that applies to one key, at every revision, with
// values inline, pending a commit and only in the file, and for keys deleted or never put.
func TestGetFrom_KeyMatchesRange(t *testing.T) {
	st := onDiskState(t)
	put := func(k, v string, lease int64) wire.Op {
		return wire.Op{Kind: wire.OpPut, Key: []byte(k), Value: []byte(v), Lease: lease}
	}
	applyOps(t, st, put("a", "a-stored-1", 0), put("i", "in", 0))
	applyOps(t, st, put("a", "a-stored-2", 0), put("d", "d-stored", 0))
	applyOps(t, st, put("e", "", 0))
	if err := st.Commit(1); err != nil {
		t.Fatal(err)
	}
	applyOps(t, st, wire.Op{Kind: wire.OpDelete, Key: []byte("d")})
	applyOps(t, st, put("p", "p-pending", 0), put("a", "a-pending", 0))
	view := st.Clone()

	options := map[string]func(*wire.Op){
		"plain":          func(*wire.Op) {},
		"keys only":      func(op *wire.Op) { op.KeysOnly = true },
		"count only":     func(op *wire.Op) { op.CountOnly = true },
		"limit":          func(op *wire.Op) { op.Limit = 1 },
		"min mod 3":      func(op *wire.Op) { op.MinModRev = 3 },
		"max mod 2":      func(op *wire.Op) { op.MaxModRev = 2 },
		"min create 3":   func(op *wire.Op) { op.MinCreateRev = 3 },
		"max create 2":   func(op *wire.Op) { op.MaxCreateRev = 2 },
		"by version":     func(op *wire.Op) { op.SortTarget = wire.SortByVersion },
		"by mod, desc":   func(op *wire.Op) { op.SortTarget, op.SortOrder = wire.SortByMod, wire.SortDescend },
		"by key, desc":   func(op *wire.Op) { op.SortOrder = wire.SortDescend },
		"serializable":   func(op *wire.Op) { op.Serializable = true },
		"keys and count": func(op *wire.Op) { op.KeysOnly, op.CountOnly = true, true },
	}
	for _, key := range []string{"a", "i", "d", "e", "p", "never"} {
		for rev := int64(0); rev <= view.Rev()+1; rev++ {
			for name, opt := range options {
				op := wire.Op{Kind: wire.OpRange, Key: []byte(key), Revision: rev}
				opt(&op)
				rng := op
				rng.End = []byte(key + "\x00")
				got, gotCode := getFrom(view, &op)
				want, wantCode := getFrom(view, &rng)
				if gotCode != wantCode || !reflect.DeepEqual(got, want) {
					t.Errorf("%s at %d, %s: key path %s (code %d), range path %s (code %d)",
						key, rev, name, render(got), gotCode, render(want), wantCode)
				}
			}
		}
	}
}

// A view cloned before a compaction removed a version from the file misses its value: the get
// fails with CodeCompacted (Store.get then reads a newer view, which answers ErrCompacted
// itself), on the key path as on the range path.
func TestGetFrom_CompactedUnderView(t *testing.T) {
	st := onDiskState(t)
	for _, v := range []string{"a-stored-1", "a-stored-2"} {
		applyOps(t, st, wire.Op{Kind: wire.OpPut, Key: []byte("a"), Value: []byte(v)})
	}
	if err := st.Commit(1); err != nil {
		t.Fatal(err)
	}
	view := st.Clone()
	if code := st.Compact(3); code != wire.CodeOK {
		t.Fatalf("compact: %d", code)
	}
	for st.CompactStep(10) {
	}
	if err := st.Commit(2); err != nil {
		t.Fatal(err)
	}
	for _, end := range []string{"", "b"} {
		op := wire.Op{Kind: wire.OpRange, Key: []byte("a"), End: []byte(end), Revision: 2}
		if r, code := getFrom(view, &op); code != wire.CodeCompacted {
			t.Errorf("end %q: %s, code %d, want CodeCompacted", end, render(r), code)
		}
		op.Revision = 3
		if r, code := getFrom(view, &op); code != wire.CodeOK || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "a-stored-2" {
			t.Errorf("end %q at 3: %s, code %d", end, render(r), code)
		}
	}
}

func render(r *GetResponse) string {
	if r == nil {
		return "nil"
	}
	s := fmt.Sprintf("count %d more %v [", r.Count, r.More)
	for _, kv := range r.Kvs {
		s += fmt.Sprintf(" %+v", *kv)
	}
	return s + " ]"
}
