package ember

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// ---- helpers shared by the root package's white-box tests (mvcc, txn, snapshot, rpc) ----

// emberTestStore opens an in-memory single-member store that is closed when the test ends.
func emberTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open("")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.WaitReady(emberTestCtx(t)); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	return s
}

// emberTestCtx bounds a test's requests so that a hang fails the test instead of the run.
func emberTestCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// stPut puts key=val on st at a new revision, as a single-op write, and returns the revision.
func stPut(t testing.TB, st *mvcc.State, key, val string, lease int64) int64 {
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
func stDelete(t testing.TB, st *mvcc.State, key, end string) int64 {
	t.Helper()
	op := &wire.Op{Kind: wire.OpDelete, Key: []byte(key)}
	if end != "" {
		op.End = []byte(end)
	}
	w := st.beginWrite()
	res := w.deleteRange(op)
	if evs := w.end(); int64(len(evs)) != res.Deleted {
		t.Fatalf("delete %q: %d events for %d deleted keys", key, len(evs), res.Deleted)
	}
	return res.Deleted
}

// stRange runs op against st the way a read-only request does: validation, then rangeKeys at the
// state's current revision. Codes are turned into the exported errors.
func stRange(st *mvcc.State, op wire.Op) (*wire.RangeResult, error) {
	if code := validateTxn(&wire.Txn{Success: []wire.Op{op}}, defaultMaxTxnOps); code != wire.CodeOK {
		return nil, codeError(code)
	}
	res, code := st.rangeKeys(&op, st.Rev())
	if code != wire.CodeOK {
		return nil, codeError(code)
	}
	return res, nil
}

// stGetAt reads a single key at rev (0 = latest) and fails the test on error.
func stGetAt(t testing.TB, st *mvcc.State, key string, rev int64) *wire.RangeResult {
	t.Helper()
	res, err := stRange(st, wire.Op{Kind: wire.OpRange, Key: []byte(key), Revision: rev})
	if err != nil {
		t.Fatalf("get %q at %d: %v", key, rev, err)
	}
	return res
}

func kvKeys(kvs []*KeyValue) []string {
	out := []string{}
	for _, kv := range kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// kvString renders a pair for failure messages and for comparing whole results.
func kvString(kv *KeyValue) string {
	if kv == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%q=%q c%d m%d v%d l%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
}

// sameKV compares every field; nil and empty values are the same (both mean "no value").
func sameKV(a, b *KeyValue) bool {
	if a == nil || b == nil {
		return a == b
	}
	return bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value) && a.CreateRevision == b.CreateRevision &&
		a.ModRevision == b.ModRevision && a.Version == b.Version && a.Lease == b.Lease
}

// ---- revision rules ----

// revStep is one write in TestMVCC_RevisionRules and what the store must look like after it.
type revStep struct {
	name     string
	del      bool   // delete instead of put
	key, end string // end only for deletes
	val      string
	wRev     int64 // store revision after the step
	wDeleted int64
	// The key's state after the step; wVersion 0 means absent.
	wVersion, wCreate, wMod int64
}

var revSteps = []revStep{
	{name: "first write gets revision 2", key: "a", val: "v", wRev: 2, wVersion: 1, wCreate: 2, wMod: 2},
	{name: "identical put still bumps revision and version", key: "a", val: "v", wRev: 3, wVersion: 2, wCreate: 2, wMod: 3},
	{name: "changed put", key: "a", val: "w", wRev: 4, wVersion: 3, wCreate: 2, wMod: 4},
	{name: "delete of a missing key keeps revision", del: true, key: "b", wRev: 4},
	{name: "delete of an empty range keeps revision", del: true, key: "x", end: "z", wRev: 4},
	{name: "the key survives deletes that missed it", key: "a", val: "w", wRev: 5, wVersion: 4, wCreate: 2, wMod: 5},
	{name: "delete bumps revision and removes the key", del: true, key: "a", wRev: 6, wDeleted: 1},
	{name: "second delete keeps revision", del: true, key: "a", wRev: 6},
	{name: "recreate resets version and create revision", key: "a", val: "v", wRev: 7, wVersion: 1, wCreate: 7, wMod: 7},
	{name: "other key", key: "b", val: "v", wRev: 8, wVersion: 1, wCreate: 8, wMod: 8},
	{name: "range delete of two keys is one revision", del: true, key: "a", end: "c", wRev: 9, wDeleted: 2},
}

// TestMVCC_RevisionRules walks etcd's revision rules (§0) on the state machine and on a store:
// both must produce the same revisions, versions and create revisions.
func TestMVCC_RevisionRules(t *testing.T) {
	t.Run("state", func(t *testing.T) {
		st := mvcc.New()
		if st.Rev() != 1 {
			t.Fatalf("empty state at revision %d, want 1", st.Rev())
		}
		for _, tc := range revSteps {
			var deleted int64
			if tc.del {
				deleted = stDelete(t, st, tc.key, tc.end)
			} else {
				stPut(t, st, tc.key, tc.val, 0)
			}
			if st.Rev() != tc.wRev || deleted != tc.wDeleted {
				t.Fatalf("%s: rev %d deleted %d, want rev %d deleted %d", tc.name, st.Rev(), deleted, tc.wRev, tc.wDeleted)
			}
			checkRevStepKV(t, tc, stGetAt(t, st, tc.key, 0).Kvs)
		}
	})
	t.Run("store", func(t *testing.T) {
		s := emberTestStore(t)
		ctx := emberTestCtx(t)
		g, err := s.Get(ctx, "a")
		if err != nil || g.Header.Revision != 1 {
			t.Fatalf("empty store: %+v, %v; want revision 1", g, err)
		}
		for _, tc := range revSteps {
			var rev, deleted int64
			if tc.del {
				var opts []OpOption
				if tc.end != "" {
					opts = append(opts, WithRange(tc.end))
				}
				d, err := s.Delete(ctx, tc.key, opts...)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				rev, deleted = d.Header.Revision, d.Deleted
			} else {
				p, err := s.Put(ctx, tc.key, tc.val)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				rev = p.Header.Revision
			}
			if rev != tc.wRev || deleted != tc.wDeleted {
				t.Fatalf("%s: rev %d deleted %d, want rev %d deleted %d", tc.name, rev, deleted, tc.wRev, tc.wDeleted)
			}
			g, err := s.Get(ctx, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if g.Header.Revision != tc.wRev {
				t.Fatalf("%s: read header revision %d, want %d", tc.name, g.Header.Revision, tc.wRev)
			}
			var kvs []*wire.KV
			for _, kv := range g.Kvs {
				kvs = append(kvs, &wire.KV{Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version})
			}
			checkRevStepKV(t, tc, kvs)
		}
	})
}

func checkRevStepKV(t testing.TB, tc revStep, kvs []*wire.KV) {
	t.Helper()
	if tc.wVersion == 0 {
		if len(kvs) != 0 {
			t.Fatalf("%s: %q still present: %+v", tc.name, tc.key, *kvs[0])
		}
		return
	}
	if len(kvs) != 1 {
		t.Fatalf("%s: %q: %d results, want 1", tc.name, tc.key, len(kvs))
	}
	kv := kvs[0]
	if kv.Version != tc.wVersion || kv.CreateRevision != tc.wCreate || kv.ModRevision != tc.wMod {
		t.Fatalf("%s: %q version %d create %d mod %d, want %d %d %d", tc.name, tc.key,
			kv.Version, kv.CreateRevision, kv.ModRevision, tc.wVersion, tc.wCreate, tc.wMod)
	}
}

// TestMVCC_WriteEvents checks that every effective change yields one event in change order, and
// that no-ops yield none (the watch hub relies on it to decide whether a revision happened).
func TestMVCC_WriteEvents(t *testing.T) {
	st := mvcc.New()
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
				if ev.Rec.Tombstone {
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
func keyLife(t testing.TB, compactAt int64) *mvcc.State {
	t.Helper()
	st := mvcc.New()
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

// TestMVCC_Get_History reads "k" at every revision of its life (put, put, delete, put), before and
// after compactions, including at the tombstone revision and at the compaction boundaries.
func TestMVCC_Get_History(t *testing.T) {
	tests := []struct {
		name      string
		compactAt int64
		rev       int64
		wValue    string // "" = absent
		wVersion  int64
		wCreate   int64
		wMod      int64
		wErr      error
	}{
		{name: "before first write", rev: 1},
		{name: "first put", rev: 2, wValue: "v1", wVersion: 1, wCreate: 2, wMod: 2},
		{name: "second put", rev: 3, wValue: "v2", wVersion: 2, wCreate: 2, wMod: 3},
		{name: "at the tombstone", rev: 4},
		{name: "recreated", rev: 5, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},
		{name: "latest", rev: 0, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},
		{name: "negative is latest", rev: -1, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},
		{name: "future", rev: 6, wErr: ErrFutureRev},

		{name: "compact 3: below", compactAt: 3, rev: 2, wErr: ErrCompacted},
		{name: "compact 3: at", compactAt: 3, rev: 3, wValue: "v2", wVersion: 2, wCreate: 2, wMod: 3},
		{name: "compact 3: tombstone", compactAt: 3, rev: 4},
		{name: "compact 3: after", compactAt: 3, rev: 5, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},
		{name: "compact 3: future", compactAt: 3, rev: 6, wErr: ErrFutureRev},

		{name: "compact at tombstone: below", compactAt: 4, rev: 3, wErr: ErrCompacted},
		{name: "compact at tombstone: at", compactAt: 4, rev: 4},
		{name: "compact at tombstone: after", compactAt: 4, rev: 5, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},

		{name: "compact current: below", compactAt: 5, rev: 4, wErr: ErrCompacted},
		{name: "compact current: at", compactAt: 5, rev: 5, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},
		{name: "compact current: latest", compactAt: 5, rev: 0, wValue: "v3", wVersion: 1, wCreate: 5, wMod: 5},
		{name: "compact current: future", compactAt: 5, rev: 6, wErr: ErrFutureRev},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := keyLife(t, tc.compactAt)
			res, err := stRange(st, wire.Op{Kind: wire.OpRange, Key: []byte("k"), Revision: tc.rev})
			if !errors.Is(err, tc.wErr) || (err != nil && tc.wErr == nil) {
				t.Fatalf("err %v, want %v", err, tc.wErr)
			}
			if tc.wErr != nil {
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

// ---- range options ----

// rangeFixture is written to a state and a store alike; the comment is the revision it gets.
// Final state (rev 16): s/a v5 c3 m3 v1; s/b v4 c2 m5 v2; s/c v6 c4 m8 v3; s/d v2 c6 m6 v1;
// q\xff, q\xff\xff, r, \xff\xff, \xff\xff\x01 (x); t/1 (x, leased, c14); t/2 created 15, deleted 16.
var rangeFixture = []struct {
	key, val string
	del      bool
	leased   bool
}{
	{key: "s/b", val: "v3"},              // 2
	{key: "s/a", val: "v5"},              // 3
	{key: "s/c", val: "v1"},              // 4
	{key: "s/b", val: "v4"},              // 5
	{key: "s/d", val: "v2"},              // 6
	{key: "s/c", val: "v0"},              // 7
	{key: "s/c", val: "v6"},              // 8
	{key: "q\xff", val: "x"},             // 9
	{key: "q\xff\xff", val: "x"},         // 10
	{key: "r", val: "x"},                 // 11
	{key: "\xff\xff", val: "x"},          // 12
	{key: "\xff\xff\x01", val: "x"},      // 13
	{key: "t/1", val: "x", leased: true}, // 14
	{key: "t/2", val: "x"},               // 15
	{key: "t/2", del: true},              // 16
}

var allFixtureKeys = []string{"q\xff", "q\xff\xff", "r", "s/a", "s/b", "s/c", "s/d", "t/1", "\xff\xff", "\xff\xff\x01"}

type rangeCase struct {
	name   string
	key    string
	opts   []OpOption
	wKeys  []string
	wCount int64
	wMore  bool
	wErr   error
	wKV    *KeyValue // when set, the first result must equal it field by field
}

func rangeCases(lease LeaseID) []rangeCase {
	s := func(keys ...string) []string {
		for i := range keys {
			keys[i] = "s/" + keys[i]
		}
		return keys
	}
	pfx := func(opts ...OpOption) []OpOption { return append([]OpOption{WithPrefix()}, opts...) }
	sorted := func(tg SortTarget, o SortOrder) []OpOption { return pfx(WithSort(tg, o)) }
	return []rangeCase{
		// Range forms.
		{name: "single key", key: "s/b", wKeys: s("b"), wCount: 1,
			wKV: &KeyValue{Key: []byte("s/b"), Value: []byte("v4"), CreateRevision: 2, ModRevision: 5, Version: 2}},
		{name: "single missing key", key: "s/zz", wKeys: []string{}},
		{name: "empty key", key: "", wErr: ErrEmptyKey},
		{name: "key range", key: "s/b", opts: []OpOption{WithRange("s/d")}, wKeys: s("b", "c"), wCount: 2},
		{name: "range end equal to key is empty", key: "s/b", opts: []OpOption{WithRange("s/b")}, wKeys: []string{}},
		{name: "range end below key is empty", key: "s/c", opts: []OpOption{WithRange("s/a")}, wKeys: []string{}},
		{name: "prefix", key: "s/", opts: pfx(), wKeys: s("a", "b", "c", "d"), wCount: 4},
		{name: "prefix ending in 0xff", key: "q\xff", opts: pfx(), wKeys: []string{"q\xff", "q\xff\xff"}, wCount: 2},
		{name: "all-0xff prefix is from-key", key: "\xff\xff", opts: pfx(), wKeys: []string{"\xff\xff", "\xff\xff\x01"}, wCount: 2},
		{name: "empty prefix is every key", key: "", opts: pfx(), wKeys: allFixtureKeys, wCount: 10},
		{name: "from key", key: "s/c", opts: []OpOption{WithFromKey()}, wKeys: []string{"s/c", "s/d", "t/1", "\xff\xff", "\xff\xff\x01"}, wCount: 5},
		{name: "from empty key is every key", key: "", opts: []OpOption{WithFromKey()}, wKeys: allFixtureKeys, wCount: 10},

		// Limit, More, Count.
		{name: "limit below count", key: "s/", opts: pfx(WithLimit(2)), wKeys: s("a", "b"), wCount: 4, wMore: true},
		{name: "limit equal to count", key: "s/", opts: pfx(WithLimit(4)), wKeys: s("a", "b", "c", "d"), wCount: 4},
		{name: "limit above count", key: "s/", opts: pfx(WithLimit(10)), wKeys: s("a", "b", "c", "d"), wCount: 4},
		{name: "limit on from-key", key: "s/c", opts: []OpOption{WithFromKey(), WithLimit(1)}, wKeys: s("c"), wCount: 5, wMore: true},
		{name: "count ignores filters; more counts filtered keys", key: "s/", opts: pfx(WithLimit(1), WithMinModRev(6)),
			wKeys: s("c"), wCount: 4, wMore: true},
		{name: "limit equal to filtered keys", key: "s/", opts: pfx(WithLimit(2), WithMinModRev(6)), wKeys: s("c", "d"), wCount: 4},

		// Every sort target and order. A target with SortNone sorts ascending.
		{name: "key none", key: "s/", opts: sorted(SortByKey, SortNone), wKeys: s("a", "b", "c", "d"), wCount: 4},
		{name: "key ascend", key: "s/", opts: sorted(SortByKey, SortAscend), wKeys: s("a", "b", "c", "d"), wCount: 4},
		{name: "key descend", key: "s/", opts: sorted(SortByKey, SortDescend), wKeys: s("d", "c", "b", "a"), wCount: 4},
		// Versions tie (s/a and s/d are both 1): ties keep key order, so every member answers alike.
		{name: "version none", key: "s/", opts: sorted(SortByVersion, SortNone), wKeys: s("a", "d", "b", "c"), wCount: 4},
		{name: "version ascend", key: "s/", opts: sorted(SortByVersion, SortAscend), wKeys: s("a", "d", "b", "c"), wCount: 4},
		{name: "version descend", key: "s/", opts: sorted(SortByVersion, SortDescend), wKeys: s("c", "b", "a", "d"), wCount: 4},
		{name: "create none", key: "s/", opts: sorted(SortByCreateRevision, SortNone), wKeys: s("b", "a", "c", "d"), wCount: 4},
		{name: "create ascend", key: "s/", opts: sorted(SortByCreateRevision, SortAscend), wKeys: s("b", "a", "c", "d"), wCount: 4},
		{name: "create descend", key: "s/", opts: sorted(SortByCreateRevision, SortDescend), wKeys: s("d", "c", "a", "b"), wCount: 4},
		{name: "mod none", key: "s/", opts: sorted(SortByModRevision, SortNone), wKeys: s("a", "b", "d", "c"), wCount: 4},
		{name: "mod ascend", key: "s/", opts: sorted(SortByModRevision, SortAscend), wKeys: s("a", "b", "d", "c"), wCount: 4},
		{name: "mod descend", key: "s/", opts: sorted(SortByModRevision, SortDescend), wKeys: s("c", "d", "b", "a"), wCount: 4},
		{name: "value none", key: "s/", opts: sorted(SortByValue, SortNone), wKeys: s("d", "b", "a", "c"), wCount: 4},
		{name: "value ascend", key: "s/", opts: sorted(SortByValue, SortAscend), wKeys: s("d", "b", "a", "c"), wCount: 4},
		{name: "value descend", key: "s/", opts: sorted(SortByValue, SortDescend), wKeys: s("c", "a", "b", "d"), wCount: 4},
		{name: "key descend limit 2", key: "s/", opts: pfx(WithSort(SortByKey, SortDescend), WithLimit(2)), wKeys: s("d", "c"), wCount: 4, wMore: true},
		{name: "value ascend limit 3", key: "s/", opts: pfx(WithSort(SortByValue, SortAscend), WithLimit(3)), wKeys: s("d", "b", "a"), wCount: 4, wMore: true},
		{name: "key ascend limit 2 (rewritten to the default order)", key: "s/", opts: pfx(WithSort(SortByKey, SortAscend), WithLimit(2)), wKeys: s("a", "b"), wCount: 4, wMore: true},
		{name: "WithFirstKey", key: "s/", opts: WithFirstKey(), wKeys: s("a"), wCount: 4, wMore: true},
		{name: "WithLastKey", key: "s/", opts: WithLastKey(), wKeys: s("d"), wCount: 4, wMore: true},
		{name: "WithFirstRev", key: "s/", opts: WithFirstRev(), wKeys: s("a"), wCount: 4, wMore: true},
		{name: "WithLastRev", key: "s/", opts: WithLastRev(), wKeys: s("c"), wCount: 4, wMore: true},
		{name: "WithFirstCreate", key: "s/", opts: WithFirstCreate(), wKeys: s("b"), wCount: 4, wMore: true},
		{name: "WithLastCreate", key: "s/", opts: WithLastCreate(), wKeys: s("d"), wCount: 4, wMore: true},

		// Keys only and count only.
		{name: "plain read has value and lease", key: "t/1", wKeys: []string{"t/1"}, wCount: 1,
			wKV: &KeyValue{Key: []byte("t/1"), Value: []byte("x"), CreateRevision: 14, ModRevision: 14, Version: 1, Lease: int64(lease)}},
		{name: "keys only drops value and lease", key: "t/1", opts: []OpOption{WithKeysOnly()}, wKeys: []string{"t/1"}, wCount: 1,
			wKV: &KeyValue{Key: []byte("t/1"), CreateRevision: 14, ModRevision: 14, Version: 1}},
		{name: "keys only sorted by value still sorts by value", key: "s/", opts: pfx(WithKeysOnly(), WithSort(SortByValue, SortAscend)),
			wKeys: s("d", "b", "a", "c"), wCount: 4, wKV: &KeyValue{Key: []byte("s/d"), CreateRevision: 6, ModRevision: 6, Version: 1}},
		{name: "count only", key: "s/", opts: pfx(WithCountOnly()), wKeys: []string{}, wCount: 4},
		{name: "count only ignores limit", key: "s/", opts: pfx(WithCountOnly(), WithLimit(1)), wKeys: []string{}, wCount: 4},
		{name: "count only of everything", key: "", opts: pfx(WithCountOnly()), wKeys: []string{}, wCount: 10},

		// Revision filters.
		{name: "min mod", key: "s/", opts: pfx(WithMinModRev(6)), wKeys: s("c", "d"), wCount: 4},
		{name: "max mod", key: "s/", opts: pfx(WithMaxModRev(5)), wKeys: s("a", "b"), wCount: 4},
		{name: "min and max mod", key: "s/", opts: pfx(WithMinModRev(5), WithMaxModRev(6)), wKeys: s("b", "d"), wCount: 4},
		{name: "min create", key: "s/", opts: pfx(WithMinCreateRev(4)), wKeys: s("c", "d"), wCount: 4},
		{name: "max create", key: "s/", opts: pfx(WithMaxCreateRev(3)), wKeys: s("a", "b"), wCount: 4},
		{name: "min and max create", key: "s/", opts: pfx(WithMinCreateRev(3), WithMaxCreateRev(4)), wKeys: s("a", "c"), wCount: 4},
		{name: "filter matching nothing", key: "s/", opts: pfx(WithMinModRev(100)), wKeys: []string{}, wCount: 4},
		{name: "filter then sort descending", key: "s/", opts: pfx(WithMaxCreateRev(4), WithSort(SortByKey, SortDescend)), wKeys: s("c", "b", "a"), wCount: 4},

		// Historical reads: keys deleted at the revision are skipped, keys deleted later included.
		{name: "empty store revision", key: "s/", opts: pfx(WithRev(1)), wKeys: []string{}},
		{name: "history: before t/2", key: "t/", opts: pfx(WithRev(14)), wKeys: []string{"t/1"}, wCount: 1},
		{name: "history: t/2 deleted later is included", key: "t/", opts: pfx(WithRev(15)), wKeys: []string{"t/1", "t/2"}, wCount: 2},
		{name: "history: t/2 deleted at this revision is skipped", key: "t/", opts: pfx(WithRev(16)), wKeys: []string{"t/1"}, wCount: 1},
		{name: "history: single key before its creation", key: "t/1", opts: []OpOption{WithRev(13)}, wKeys: []string{}},
		{name: "history: single key at its tombstone", key: "t/2", opts: []OpOption{WithRev(16)}, wKeys: []string{}},
		{name: "history: single key deleted later", key: "t/2", opts: []OpOption{WithRev(15)}, wKeys: []string{"t/2"}, wCount: 1,
			wKV: &KeyValue{Key: []byte("t/2"), Value: []byte("x"), CreateRevision: 15, ModRevision: 15, Version: 1}},
		{name: "history: old version", key: "s/b", opts: []OpOption{WithRev(4)}, wKeys: s("b"), wCount: 1,
			wKV: &KeyValue{Key: []byte("s/b"), Value: []byte("v3"), CreateRevision: 2, ModRevision: 2, Version: 1}},
		{name: "history: prefix", key: "s/", opts: pfx(WithRev(4)), wKeys: s("a", "b", "c"), wCount: 3},
		{name: "history: prefix at 2", key: "s/", opts: pfx(WithRev(2)), wKeys: s("b"), wCount: 1},
		{name: "history: limit", key: "s/", opts: pfx(WithRev(4), WithLimit(2)), wKeys: s("a", "b"), wCount: 3, wMore: true},
		{name: "history: from key", key: "s/c", opts: []OpOption{WithFromKey(), WithRev(6)}, wKeys: s("c", "d"), wCount: 2},
		{name: "history: range", key: "s/b", opts: []OpOption{WithRange("s/d"), WithRev(5)}, wKeys: s("b", "c"), wCount: 2},
		{name: "history: sort by value", key: "s/", opts: pfx(WithRev(5), WithSort(SortByValue, SortAscend)), wKeys: s("c", "b", "a"), wCount: 3},
		{name: "history: filter", key: "s/", opts: pfx(WithRev(7), WithMinModRev(5)), wKeys: s("b", "c", "d"), wCount: 4},
		{name: "history: every key", key: "", opts: pfx(WithRev(12)), wKeys: []string{"q\xff", "q\xff\xff", "r", "s/a", "s/b", "s/c", "s/d", "\xff\xff"}, wCount: 8},
		{name: "history: keys only", key: "s/c", opts: []OpOption{WithRev(7), WithKeysOnly()}, wKeys: s("c"), wCount: 1,
			wKV: &KeyValue{Key: []byte("s/c"), CreateRevision: 4, ModRevision: 7, Version: 2}},
		{name: "current revision given explicitly", key: "s/", opts: pfx(WithRev(16)), wKeys: s("a", "b", "c", "d"), wCount: 4},
		{name: "negative revision is latest", key: "s/", opts: pfx(WithRev(-3)), wKeys: s("a", "b", "c", "d"), wCount: 4},
		{name: "future revision", key: "s/", opts: pfx(WithRev(17)), wErr: ErrFutureRev},
	}
}

// TestMVCC_Range_Options runs every range form and option against the state machine (through the
// public Op builders, so client-side rewrites are covered) and against a store holding the same
// history.
func TestMVCC_Range_Options(t *testing.T) {
	s := emberTestStore(t)
	ctx := emberTestCtx(t)
	g, err := s.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	st := mvcc.New()
	if code := st.GrantLease(int64(g.ID), 3600); code != wire.CodeOK {
		t.Fatalf("grantLease: %d", code)
	}
	for _, w := range rangeFixture {
		var lease int64
		var opts []OpOption
		if w.leased {
			lease = int64(g.ID)
			opts = append(opts, WithLease(g.ID))
		}
		var rev int64
		if w.del {
			stDelete(t, st, w.key, "")
			d, err := s.Delete(ctx, w.key)
			if err != nil {
				t.Fatal(err)
			}
			rev = d.Header.Revision
		} else {
			stPut(t, st, w.key, w.val, lease)
			p, err := s.Put(ctx, w.key, w.val, opts...)
			if err != nil {
				t.Fatal(err)
			}
			rev = p.Header.Revision
		}
		if rev != st.Rev() {
			t.Fatalf("fixture %q: store at %d, state at %d", w.key, rev, st.Rev())
		}
	}
	if st.Rev() != 16 {
		t.Fatalf("fixture ends at revision %d, the cases assume 16", st.Rev())
	}

	for _, tc := range rangeCases(g.ID) {
		t.Run(tc.name, func(t *testing.T) {
			op := OpGet(tc.key, tc.opts...)
			var stateResp *GetResponse
			res, err := stRange(st, op.toWire())
			if err == nil {
				stateResp = getFromWire(ResponseHeader{Revision: st.Rev()}, res)
			}
			checkRangeCase(t, "state", tc, stateResp, err)

			storeResp, err := s.Get(ctx, tc.key, tc.opts...)
			checkRangeCase(t, "store", tc, storeResp, err)
			if err == nil && storeResp.Header.Revision != 16 {
				// etcd: the header carries the current revision, even for a historical read.
				t.Errorf("store: header revision %d, want 16", storeResp.Header.Revision)
			}
		})
	}
}

func checkRangeCase(t testing.TB, where string, tc rangeCase, resp *GetResponse, err error) {
	t.Helper()
	if tc.wErr != nil || err != nil {
		if !errors.Is(err, tc.wErr) || tc.wErr == nil {
			t.Errorf("%s: err %v, want %v", where, err, tc.wErr)
		}
		return
	}
	if got := kvKeys(resp.Kvs); !slices.Equal(got, tc.wKeys) {
		t.Errorf("%s: keys %q, want %q", where, got, tc.wKeys)
	}
	if resp.Count != tc.wCount || resp.More != tc.wMore {
		t.Errorf("%s: count %d more %v, want count %d more %v", where, resp.Count, resp.More, tc.wCount, tc.wMore)
	}
	if tc.wKV != nil && (len(resp.Kvs) == 0 || !sameKV(resp.Kvs[0], tc.wKV)) {
		var got *KeyValue
		if len(resp.Kvs) > 0 {
			got = resp.Kvs[0]
		}
		t.Errorf("%s: first kv %s, want %s", where, kvString(got), kvString(tc.wKV))
	}
}

// TestMVCC_SortOptionRewrite checks the client-side rewrites that decide the limit pushdown:
// SortByKey+SortAscend is the default order and must reach the state machine as SortNone.
func TestMVCC_SortOptionRewrite(t *testing.T) {
	tests := []struct {
		name    string
		opts    []OpOption
		wTarget uint8
		wOrder  uint8
	}{
		{name: "no sort", wTarget: wire.SortByKey, wOrder: wire.SortNone},
		{name: "key ascend is rewritten to none", opts: []OpOption{WithSort(SortByKey, SortAscend)}, wTarget: wire.SortByKey, wOrder: wire.SortNone},
		{name: "key descend kept", opts: []OpOption{WithSort(SortByKey, SortDescend)}, wTarget: wire.SortByKey, wOrder: wire.SortDescend},
		{name: "target with none kept as is", opts: []OpOption{WithSort(SortByModRevision, SortNone)}, wTarget: wire.SortByMod, wOrder: wire.SortNone},
		{name: "value ascend kept", opts: []OpOption{WithSort(SortByValue, SortAscend)}, wTarget: wire.SortByValue, wOrder: wire.SortAscend},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := OpGet("k", tc.opts...).toWire()
			if w.SortTarget != tc.wTarget || w.SortOrder != tc.wOrder {
				t.Fatalf("target %d order %d, want %d %d", w.SortTarget, w.SortOrder, tc.wTarget, tc.wOrder)
			}
		})
	}
}

// ---- compaction ----

// recordName is "key@mod", with "t" appended for a tombstone.
func recordName(r *mvcc.Record) string {
	n := fmt.Sprintf("%s@%d", r.Key, r.Mod)
	if r.Tombstone {
		n += "t"
	}
	return n
}

func historyNames(st *mvcc.State) []string {
	var out []string
	st.history.Scan(func(r *mvcc.Record) bool {
		out = append(out, recordName(r))
		return true
	})
	return out
}

// checkTreesAgree fails unless history and revs hold the same records, size is the sum of their
// sizes, and latest holds exactly each key's newest record unless that is a tombstone.
func checkTreesAgree(t testing.TB, st *mvcc.State) {
	t.Helper()
	inHistory := map[*mvcc.Record]bool{}
	var size int64
	newest := map[string]*mvcc.Record{}
	st.history.Scan(func(r *mvcc.Record) bool {
		inHistory[r] = true
		size += r.Size()
		newest[r.Key] = r
		return true
	})
	n := 0
	st.revs.Scan(func(r *mvcc.Record) bool {
		n++
		if !inHistory[r] {
			t.Fatalf("revs holds %s, history does not", recordName(r))
		}
		return true
	})
	if n != len(inHistory) {
		t.Fatalf("revs holds %d records, history %d", n, len(inHistory))
	}
	if size != st.Size() {
		t.Fatalf("size %d, records add up to %d", st.Size(), size)
	}
	live := 0
	for _, r := range newest {
		if r.Tombstone {
			continue
		}
		live++
		if l, ok := st.latest.Get(&mvcc.Record{Key: r.Key}); !ok || l != r {
			t.Fatalf("latest for %q is not its newest record %s", r.Key, recordName(r))
		}
	}
	if live != st.Keys() {
		t.Fatalf("latest holds %d keys, history has %d live", st.Keys(), live)
	}
}

// stateStep is one step of a scripted history.
type stateStep func(t testing.TB, st *mvcc.State)

func sPut(key string) stateStep {
	return func(t testing.TB, st *mvcc.State) { stPut(t, st, key, "v", 0) }
}

func sDel(key, end string) stateStep {
	return func(t testing.TB, st *mvcc.State) {
		if stDelete(t, st, key, end) == 0 {
			t.Fatalf("script deletes nothing at %q", key)
		}
	}
}

func sTxn(ops ...wire.Op) stateStep {
	return func(t testing.TB, st *mvcc.State) {
		txn := &wire.Txn{Success: ops}
		if code := validateTxn(txn, 0); code != wire.CodeOK {
			t.Fatalf("script txn invalid: %d", code)
		}
		if res, _ := st.ApplyTxn(txn); res.Code != wire.CodeOK {
			t.Fatalf("script txn: code %d", res.Code)
		}
	}
}

// compactFully applies a compaction at rev and runs its removal to the end.
func compactFully(st *mvcc.State, rev int64) wire.Code {
	code := st.Compact(rev)
	for st.CompactStep(compactStepRecords) {
	}
	return code
}

func sCompact(rev int64) stateStep {
	return func(t testing.TB, st *mvcc.State) {
		if code := compactFully(st, rev); code != wire.CodeOK {
			t.Fatalf("compact(%d): code %d", rev, code)
		}
	}
}

// TestMVCC_Compact_RemovesHistory checks exactly which records compactions drop: superseded
// versions at once, tombstones older than the compaction point, and a tombstone at exactly the
// compaction revision only at the next compaction (so a watch from that revision sees it).
func TestMVCC_Compact_RemovesHistory(t *testing.T) {
	// put a@2, put a@3, delete a@4, put b@5, put b@6
	lifeA := []stateStep{sPut("a"), sPut("a"), sDel("a", ""), sPut("b"), sPut("b")}
	// put a@2, delete a@3, put a@4
	lifeB := []stateStep{sPut("a"), sDel("a", ""), sPut("a")}
	tests := []struct {
		name     string
		steps    []stateStep
		wHistory []string
	}{
		{name: "nothing superseded yet", steps: append(slices.Clip(lifeA), sCompact(2)),
			wHistory: []string{"a@2", "a@3", "a@4t", "b@5", "b@6"}},
		{name: "superseded put dropped", steps: append(slices.Clip(lifeA), sCompact(3)),
			wHistory: []string{"a@3", "a@4t", "b@5", "b@6"}},
		{name: "tombstone at the compaction revision stays", steps: append(slices.Clip(lifeA), sCompact(4)),
			wHistory: []string{"a@4t", "b@5", "b@6"}},
		{name: "next compaction drops it", steps: append(slices.Clip(lifeA), sCompact(4), sCompact(5)),
			wHistory: []string{"b@5", "b@6"}},
		{name: "compaction past a tombstone drops the key", steps: append(slices.Clip(lifeA), sCompact(5)),
			wHistory: []string{"b@5", "b@6"}},
		{name: "compact at current keeps only the newest", steps: append(slices.Clip(lifeA), sCompact(6)),
			wHistory: []string{"b@6"}},
		{name: "stepwise equals at once", steps: append(slices.Clip(lifeA), sCompact(2), sCompact(3), sCompact(4), sCompact(5), sCompact(6)),
			wHistory: []string{"b@6"}},
		{name: "tombstone before a recreation", steps: append(slices.Clip(lifeB), sCompact(3)),
			wHistory: []string{"a@3t", "a@4"}},
		{name: "recreation supersedes the tombstone", steps: append(slices.Clip(lifeB), sCompact(4)),
			wHistory: []string{"a@4"}},
		{name: "tombstone then recreation then compaction", steps: append(slices.Clip(lifeB), sCompact(3), sCompact(4)),
			wHistory: []string{"a@4"}},
		{name: "tombstones of one revision stay together",
			steps:    []stateStep{sTxn(wirePut("a", "1"), wirePut("b", "1")), sDel("a", "c"), sCompact(3)},
			wHistory: []string{"a@3t", "b@3t"}},
		{name: "and leave together",
			steps:    []stateStep{sTxn(wirePut("a", "1"), wirePut("b", "1")), sDel("a", "c"), sCompact(3), sPut("c"), sCompact(4)},
			wHistory: []string{"c@4"}},
		{name: "later writes survive",
			steps:    []stateStep{sPut("a"), sPut("a"), sCompact(3), sPut("a"), sDel("a", ""), sPut("a")},
			wHistory: []string{"a@3", "a@4", "a@5t", "a@6"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := mvcc.New()
			for _, step := range tc.steps {
				step(t, st)
			}
			if got := historyNames(st); !slices.Equal(got, tc.wHistory) {
				t.Fatalf("history %v, want %v", got, tc.wHistory)
			}
			checkTreesAgree(t, st)
		})
	}
}

// TestMVCC_Compact_Codes checks the compaction bounds (§3): at or below the previous compaction is
// ErrCompacted, above the current revision is ErrFutureRev, and a refused compaction changes nothing.
func TestMVCC_Compact_Codes(t *testing.T) {
	tests := []struct {
		name   string
		prior  []int64
		at     int64
		wCode  wire.Code
		wAfter int64 // compactRev afterwards
	}{
		{name: "first compaction", at: 3, wCode: wire.CodeOK, wAfter: 3},
		{name: "at current revision", at: 5, wCode: wire.CodeOK, wAfter: 5},
		{name: "above current revision", at: 6, wCode: wire.CodeFutureRev},
		{name: "repeat", prior: []int64{3}, at: 3, wCode: wire.CodeCompacted, wAfter: 3},
		{name: "below previous", prior: []int64{3}, at: 2, wCode: wire.CodeCompacted, wAfter: 3},
		{name: "after previous", prior: []int64{3}, at: 4, wCode: wire.CodeOK, wAfter: 4},
		{name: "future after previous", prior: []int64{3}, at: 9, wCode: wire.CodeFutureRev, wAfter: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := keyLife(t, 0) // revision 5
			for _, p := range tc.prior {
				sCompact(p)(t, st)
			}
			before := historyNames(st)
			code := st.Compact(tc.at)
			if code != tc.wCode || st.CompactRev() != tc.wAfter {
				t.Fatalf("code %d compactRev %d, want %d %d", code, st.CompactRev(), tc.wCode, tc.wAfter)
			}
			if code != wire.CodeOK && !slices.Equal(historyNames(st), before) {
				t.Fatalf("refused compaction changed history: %v -> %v", before, historyNames(st))
			}
		})
	}
}

// TestMVCC_Compact_Store checks the same bounds through Store.Compact and reads around them.
func TestMVCC_Compact_Store(t *testing.T) {
	s := emberTestStore(t)
	ctx := emberTestCtx(t)
	for i := 0; i < 5; i++ { // revisions 2..6
		if _, err := s.Put(ctx, "k", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		compact int64 // compact at this revision, or
		getRev  int64 // read k at this revision
		wValue  string
		wErr    error
	}{
		{name: "compact in the middle", compact: 4},
		{name: "read at the compaction revision", getRev: 4, wValue: "2"},
		{name: "read just below it", getRev: 3, wErr: ErrCompacted},
		{name: "read at the first revision", getRev: 1, wErr: ErrCompacted},
		{name: "read at current", getRev: 6, wValue: "4"},
		{name: "read past current", getRev: 7, wErr: ErrFutureRev},
		{name: "repeat compaction", compact: 4, wErr: ErrCompacted},
		{name: "compaction below previous", compact: 2, wErr: ErrCompacted},
		{name: "compaction past current", compact: 7, wErr: ErrFutureRev},
		{name: "read still works after refused compactions", getRev: 4, wValue: "2"},
		{name: "compact at current", compact: 6},
		{name: "read below current now compacted", getRev: 5, wErr: ErrCompacted},
		{name: "latest still readable", getRev: 0, wValue: "4"},
	}
	for _, tc := range tests {
		var err error
		var val string
		if tc.compact != 0 {
			_, err = s.Compact(ctx, tc.compact)
		} else {
			var g *GetResponse
			if g, err = s.Get(ctx, "k", WithRev(tc.getRev)); err == nil && len(g.Kvs) == 1 {
				val = string(g.Kvs[0].Value)
			}
		}
		if !errors.Is(err, tc.wErr) || (err != nil && tc.wErr == nil) || val != tc.wValue {
			t.Fatalf("%s: value %q err %v, want %q %v", tc.name, val, err, tc.wValue, tc.wErr)
		}
	}
}

// randomHistory applies n effective writes (puts, single and range deletes, multi-op txns) over
// nKeys keys, so that st ends n revisions later.
func randomHistory(t testing.TB, st *mvcc.State, rng *rand.Rand, n, nKeys int) {
	t.Helper()
	key := func(i int) string { return fmt.Sprintf("k%02d", i) }
	target := st.Rev() + int64(n)
	for st.Rev() < target {
		switch p := rng.Intn(100); {
		case p < 55:
			stPut(t, st, key(rng.Intn(nKeys)), fmt.Sprint(rng.Intn(1000)), 0)
		case p < 75:
			stDelete(t, st, key(rng.Intn(nKeys)), "") // may delete nothing: no revision
		case p < 82:
			a, b := rng.Intn(nKeys), rng.Intn(nKeys)
			stDelete(t, st, key(min(a, b)), key(max(a, b)))
		default:
			// 2-4 puts on distinct keys and a delete of another key, in one revision.
			perm := rng.Perm(nKeys)
			var ops []wire.Op
			for _, i := range perm[:2+rng.Intn(3)] {
				ops = append(ops, wirePut(key(i), fmt.Sprint(rng.Intn(1000))))
			}
			ops = append(ops, wireDel(key(perm[5]), ""))
			sTxn(ops...)(t, st)
		}
	}
}

// readingsAt renders the reads a client can make of st at rev: each key alone, a full scan and a
// limited range scan. Two states with equal readings are indistinguishable at rev.
func readingsAt(t testing.TB, st *mvcc.State, rev int64, nKeys int) string {
	t.Helper()
	var b strings.Builder
	render := func(op wire.Op) {
		res, code := st.rangeKeys(&op, st.Rev())
		if code != wire.CodeOK {
			fmt.Fprintf(&b, "code %d;", code)
			return
		}
		fmt.Fprintf(&b, "n%d m%v:", res.Count, res.More)
		for _, kv := range res.Kvs {
			fmt.Fprintf(&b, "%s=%s c%d m%d v%d,", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version)
		}
		b.WriteString(";")
	}
	for i := 0; i < nKeys; i++ {
		render(wire.Op{Kind: wire.OpRange, Key: []byte(fmt.Sprintf("k%02d", i)), Revision: rev})
	}
	render(wire.Op{Kind: wire.OpRange, Key: []byte{0}, End: []byte{0}, Revision: rev})
	render(wire.Op{Kind: wire.OpRange, Key: []byte("k05"), End: []byte("k12"), Revision: rev, Limit: 3})
	return b.String()
}

// TestMVCC_Compact_PreservesReads builds a random history, records every read at every revision,
// and checks that after each of several increasing compactions every read at or after the
// compaction revision is unchanged, reads below it fail with ErrCompacted, and the trees only
// shrink. Writes continue between compactions.
func TestMVCC_Compact_PreservesReads(t *testing.T) {
	const nKeys = 20
	for _, seed := range []int64{1, 2} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			st := mvcc.New()
			readings := map[int64]string{}
			snap := func() {
				for r := int64(1); r <= st.Rev(); r++ {
					if _, ok := readings[r]; !ok {
						readings[r] = readingsAt(t, st, r, nKeys)
					}
				}
			}
			verify := func(c int64) {
				t.Helper()
				for r := c; r <= st.Rev(); r++ {
					if got := readingsAt(t, st, r, nKeys); got != readings[r] {
						t.Fatalf("after compact(%d): reads at %d changed:\n got %s\nwant %s", c, r, got, readings[r])
					}
				}
				for _, r := range []int64{1, c - 1} {
					if r < 1 || r >= c {
						continue
					}
					if _, code := st.checkRev(r, st.Rev()); code != wire.CodeCompacted {
						t.Fatalf("after compact(%d): read at %d gives code %d, want compacted", c, r, code)
					}
				}
			}
			compact := func(c int64) {
				t.Helper()
				hBefore, rBefore := st.history.Len(), st.revs.Len()
				if code := compactFully(st, c); code != wire.CodeOK {
					t.Fatalf("compact(%d): code %d", c, code)
				}
				if st.history.Len() > hBefore || st.revs.Len() > rBefore {
					t.Fatalf("compact(%d) grew the trees: history %d->%d revs %d->%d", c, hBefore, st.history.Len(), rBefore, st.revs.Len())
				}
				checkTreesAgree(t, st)
				// Nothing older than c is kept unless it is its key's newest version at c and a
				// put: superseded versions and old tombstones are gone.
				newestAtC := map[string]*mvcc.Record{}
				st.history.Scan(func(r *mvcc.Record) bool {
					if r.Mod <= c {
						newestAtC[r.Key] = r
					}
					return true
				})
				st.history.Scan(func(r *mvcc.Record) bool {
					if r.Mod < c && (r.Tombstone || newestAtC[r.Key] != r) {
						t.Fatalf("compact(%d) kept %s", c, recordName(r))
					}
					return true
				})
				verify(c)
			}

			randomHistory(t, st, rng, 300, nKeys)
			snap()
			total := st.history.Len()
			for _, c := range []int64{1, 7, 8, 60, 61, 150, 220, st.Rev() - 1} {
				compact(c)
			}
			if st.history.Len() >= total {
				t.Fatalf("compactions removed nothing: %d records", total)
			}
			randomHistory(t, st, rng, 100, nKeys)
			snap()
			compact(st.Rev() - 50)
			compact(st.Rev())
			// At the current revision only the live keys and this revision's tombstones remain.
			tombs := 0
			st.history.Scan(func(r *mvcc.Record) bool {
				if r.Tombstone {
					tombs++
					if r.Mod != st.Rev() {
						t.Fatalf("tombstone %s survived compact(%d)", recordName(r), st.Rev())
					}
				}
				return true
			})
			if st.history.Len() != st.Keys()+tombs {
				t.Fatalf("history %d records, want %d live + %d tombstones", st.history.Len(), st.Keys(), tombs)
			}
			// One more write and compaction: the remaining tombstones go too.
			stPut(t, st, "zz", "1", 0)
			snap()
			compact(st.Rev())
			if st.history.Len() != st.Keys() {
				t.Fatalf("history %d records, latest %d: tombstones kept", st.history.Len(), st.Keys())
			}
		})
	}
}

// ---- leases ----

func leaseKeysMap(st *mvcc.State, ids ...int64) map[int64][]string {
	out := map[int64][]string{}
	for _, id := range ids {
		out[id] = st.LeaseKeys(id)
	}
	return out
}

// TestMVCC_Leases walks lease attachment rules (§1 Put, §5 Revoke) step by step: a put without a
// lease detaches, a put with another lease moves the key, a delete detaches, and a revoke deletes
// every attached key at one revision in key order.
func TestMVCC_Leases(t *testing.T) {
	st := mvcc.New()
	for _, id := range []int64{1, 2, 3} {
		if code := st.GrantLease(id, 60); code != wire.CodeOK {
			t.Fatalf("grant %d: code %d", id, code)
		}
	}
	put := func(key string, lease int64) func() { return func() { stPut(t, st, key, "v", lease) } }
	tests := []struct {
		name   string
		do     func()
		wKeys  map[int64][]string
		wLease map[string]int64 // a key's lease afterwards
	}{
		{name: "attach", do: func() {
			for _, k := range []string{"z", "b", "a", "m"} {
				put(k, 1)()
			}
			put("d", 2)()
		}, wKeys: map[int64][]string{1: {"a", "b", "m", "z"}, 2: {"d"}, 3: nil}, wLease: map[string]int64{"a": 1, "d": 2}},
		{name: "put without lease detaches", do: put("b", 0),
			wKeys: map[int64][]string{1: {"a", "m", "z"}, 2: {"d"}}, wLease: map[string]int64{"b": 0}},
		{name: "put with another lease moves", do: put("m", 2),
			wKeys: map[int64][]string{1: {"a", "z"}, 2: {"d", "m"}}, wLease: map[string]int64{"m": 2}},
		{name: "put with the same lease keeps", do: put("a", 1),
			wKeys: map[int64][]string{1: {"a", "z"}}, wLease: map[string]int64{"a": 1}},
		{name: "ignore lease keeps the attachment", do: func() {
			w := st.beginWrite()
			w.put(&wire.Op{Kind: wire.OpPut, Key: []byte("z"), Value: []byte("new"), IgnoreLease: true})
			w.end()
		}, wKeys: map[int64][]string{1: {"a", "z"}}, wLease: map[string]int64{"z": 1}},
		{name: "delete detaches", do: func() { put("e", 1)(); stDelete(t, st, "e", "") },
			wKeys: map[int64][]string{1: {"a", "z"}}},
		{name: "recreate after delete without lease", do: put("e", 0),
			wKeys: map[int64][]string{1: {"a", "z"}}, wLease: map[string]int64{"e": 0}},
	}
	for _, tc := range tests {
		tc.do()
		for id, want := range tc.wKeys {
			if got := st.LeaseKeys(id); !slices.Equal(got, want) {
				t.Fatalf("%s: lease %d keys %v, want %v", tc.name, id, got, want)
			}
		}
		for k, want := range tc.wLease {
			if got := stGetAt(t, st, k, 0).Kvs[0].Lease; got != want {
				t.Fatalf("%s: %q lease %d, want %d", tc.name, k, got, want)
			}
		}
	}

	// Revoke lease 1: a and z go at one revision, in key order.
	before := st.Rev()
	code, evs := st.RevokeLease(1)
	if code != wire.CodeOK || st.Rev() != before+1 {
		t.Fatalf("revoke: code %d rev %d, want OK at %d", code, st.Rev(), before+1)
	}
	var got []string
	for i, ev := range evs {
		if !ev.Rec.Tombstone || ev.Rec.Mod != st.Rev() || ev.Rec.Sub != int64(i) || ev.Prev == nil || ev.Prev.Lease != 1 {
			t.Fatalf("revoke event %d: %+v (prev %+v)", i, *ev.Rec, ev.Prev)
		}
		got = append(got, ev.Rec.Key)
	}
	if !slices.Equal(got, []string{"a", "z"}) {
		t.Fatalf("revoke deleted %v, want [a z]", got)
	}
	for _, k := range []string{"a", "z"} {
		if n := len(stGetAt(t, st, k, 0).Kvs); n != 0 {
			t.Fatalf("%q survived the revoke", k)
		}
	}
	if _, ok := st.leases.Get(&mvcc.Lease{ID: 1}); ok || len(st.LeaseKeys(1)) != 0 {
		t.Fatal("lease 1 or its attachments survived the revoke")
	}
	if ks := leaseKeysMap(st, 2); !slices.Equal(ks[2], []string{"d", "m"}) {
		t.Fatalf("lease 2 keys %v after revoking 1", ks[2])
	}

	// Revoking a lease with no keys removes it without a revision; unknown leases are refused.
	rev := st.Rev()
	if code, evs := st.RevokeLease(3); code != wire.CodeOK || len(evs) != 0 || st.Rev() != rev {
		t.Fatalf("revoke empty lease: code %d, %d events, rev %d (was %d)", code, len(evs), st.Rev(), rev)
	}
	lt := []struct {
		name  string
		code  wire.Code
		wCode wire.Code
	}{
		{name: "revoke twice", code: codeOf(st.RevokeLease(1)), wCode: wire.CodeLeaseNotFound},
		{name: "revoke unknown", code: codeOf(st.RevokeLease(99)), wCode: wire.CodeLeaseNotFound},
		{name: "grant existing", code: st.GrantLease(2, 10), wCode: wire.CodeLeaseExists},
		{name: "grant TTL too large", code: st.GrantLease(7, mvcc.MaxLeaseTTL+1), wCode: wire.CodeTTLTooLarge},
		{name: "grant max TTL", code: st.GrantLease(8, mvcc.MaxLeaseTTL), wCode: wire.CodeOK},
		{name: "grant id 0", code: st.GrantLease(0, 10), wCode: wire.CodeLeaseNotFound},
	}
	for _, tc := range lt {
		if tc.code != tc.wCode {
			t.Errorf("%s: code %d, want %d", tc.name, tc.code, tc.wCode)
		}
	}
	checkTreesAgree(t, st)
}

func codeOf(c wire.Code, _ []mvcc.Event) wire.Code { return c }
