package ember

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// ---- helpers shared by the root package's white-box tests (kv, txn, snapshot, rpc) ----

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
	op := wirePut(key, val)
	op.Lease = lease
	if res, evs := st.ApplyTxn(&wire.Txn{Success: []wire.Op{op}}); res.Code != wire.CodeOK || len(evs) != 1 {
		t.Fatalf("put %q: code %d, %d events, want OK and 1", key, res.Code, len(evs))
	}
	return st.Rev()
}

// stDelete deletes key (or [key, end); end "\x00" = from key) on st and returns how many keys
// were deleted.
func stDelete(t testing.TB, st *mvcc.State, key, end string) int64 {
	t.Helper()
	res, evs := st.ApplyTxn(&wire.Txn{Success: []wire.Op{wireDel(key, end)}})
	if res.Code != wire.CodeOK {
		t.Fatalf("delete %q: code %d", key, res.Code)
	}
	deleted := res.Txn.Responses[0].Delete.Deleted
	if int64(len(evs)) != deleted {
		t.Fatalf("delete %q: %d events for %d deleted keys", key, len(evs), deleted)
	}
	return deleted
}

// stRange runs op against st the way a read-only request does: validation, then a read-only
// txn at the state's current revision. Codes are turned into the exported errors.
func stRange(st *mvcc.State, op wire.Op) (*wire.RangeResult, error) {
	txn := &wire.Txn{Success: []wire.Op{op}}
	if code := mvcc.ValidateTxn(txn, defaultMaxTxnOps); code != wire.CodeOK {
		return nil, codeError(code)
	}
	res, code := st.ReadTxn(txn)
	if code != wire.CodeOK {
		return nil, codeError(code)
	}
	return res.Txn.Responses[0].Range, nil
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

// ---- compaction bounds ----

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
