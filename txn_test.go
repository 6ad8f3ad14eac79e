package ember

import (
	"errors"
	"fmt"
	"testing"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/mvcc/mvcctest"
	"github.com/ember-kv/ember/internal/wire"
)

// ---- wire builders shared by the white-box tests ----

// wirePut and wireDel are shared with internal/mvcc's tests.
var wirePut, wireDel = mvcctest.Put, mvcctest.Del

func wireGet(key string) wire.Op { return wire.Op{Kind: wire.OpRange, Key: []byte(key)} }

func wireTxnOp(cmps []wire.Compare, then, els []wire.Op) wire.Op {
	return wire.Op{Kind: wire.OpTxn, Txn: &wire.Txn{Compares: cmps, Success: then, Failure: els}}
}

// wireCmp is "version(key) > 0", a compare that needs only a key.
func wireCmp(key string) wire.Compare {
	return wire.Compare{Target: wire.TargetVersion, Result: wire.CompareGreater, Key: []byte(key)}
}

func wirePuts(n int, prefix string) []wire.Op {
	ops := make([]wire.Op, n)
	for i := range ops {
		ops[i] = wirePut(fmt.Sprintf("%s%d", prefix, i), "v")
	}
	return ops
}

func wireCmps(n int) []wire.Compare {
	cs := make([]wire.Compare, n)
	for i := range cs {
		cs[i] = wireCmp(fmt.Sprint("c", i))
	}
	return cs
}

func wireOps(o ...wire.Op) []wire.Op { return o }

// ---- validation ----

// TestValidateTxn covers the stateless rules of §2: keys present, etcd's op budget shared with
// nested transactions (checkTxnRequest), and the duplicate-key rule (checkIntervals).
func TestValidateTxn(t *testing.T) {
	ignoreValue := wirePut("k", "v")
	ignoreValue.IgnoreValue = true
	ignoreValueEmpty := wirePut("k", "")
	ignoreValueEmpty.IgnoreValue = true
	ignoreLease := wirePut("k", "")
	ignoreLease.IgnoreLease, ignoreLease.Lease = true, 5
	ignoreLeaseNone := wirePut("k", "")
	ignoreLeaseNone.IgnoreLease = true

	tests := []struct {
		name   string
		txn    *wire.Txn
		maxOps int // 0 = unlimited
		wCode  wire.Code
	}{
		{name: "empty txn", txn: &wire.Txn{}, wCode: wire.CodeOK},
		{name: "nil txn", txn: nil, wCode: wire.CodeMalformed},
		{name: "nested nil txn", txn: &wire.Txn{Success: wireOps(wire.Op{Kind: wire.OpTxn})}, wCode: wire.CodeMalformed},

		// Empty keys.
		{name: "empty key in compare", txn: &wire.Txn{Compares: []wire.Compare{wireCmp("")}}, wCode: wire.CodeEmptyKey},
		{name: "empty key in put", txn: &wire.Txn{Success: wireOps(wirePut("", "v"))}, wCode: wire.CodeEmptyKey},
		{name: "empty key in delete", txn: &wire.Txn{Failure: wireOps(wireDel("", ""))}, wCode: wire.CodeEmptyKey},
		{name: "empty key in range", txn: &wire.Txn{Success: wireOps(wireGet(""))}, wCode: wire.CodeEmptyKey},
		{name: "empty key in nested compare", txn: &wire.Txn{Success: wireOps(wireTxnOp([]wire.Compare{wireCmp("")}, nil, nil))}, wCode: wire.CodeEmptyKey},
		{name: "empty key in nested else", txn: &wire.Txn{Success: wireOps(wireTxnOp(nil, nil, wireOps(wireDel("", ""))))}, wCode: wire.CodeEmptyKey},

		// Op counts: max(len(compares), len(success), len(failure)) <= maxOps.
		{name: "compares at the limit", txn: &wire.Txn{Compares: wireCmps(4)}, maxOps: 4, wCode: wire.CodeOK},
		{name: "compares over the limit", txn: &wire.Txn{Compares: wireCmps(5)}, maxOps: 4, wCode: wire.CodeTooManyOps},
		{name: "success over the limit", txn: &wire.Txn{Success: wirePuts(5, "p")}, maxOps: 4, wCode: wire.CodeTooManyOps},
		{name: "failure over the limit", txn: &wire.Txn{Failure: wirePuts(5, "p")}, maxOps: 4, wCode: wire.CodeTooManyOps},
		{name: "branches counted separately", txn: &wire.Txn{Compares: wireCmps(4), Success: wirePuts(4, "p"), Failure: wirePuts(4, "p")}, maxOps: 4, wCode: wire.CodeOK},
		{name: "unlimited", txn: &wire.Txn{Success: wirePuts(500, "p")}, maxOps: 0, wCode: wire.CodeOK},
		// Parent uses 2 of 4: a nested txn may use 2.
		{name: "nested within the remaining budget",
			txn:    &wire.Txn{Success: wireOps(wirePut("a", "v"), wireTxnOp(nil, wirePuts(2, "n"), nil))},
			maxOps: 4, wCode: wire.CodeOK},
		{name: "nested over the remaining budget",
			txn:    &wire.Txn{Success: wireOps(wirePut("a", "v"), wireTxnOp(nil, wirePuts(3, "n"), nil))},
			maxOps: 4, wCode: wire.CodeTooManyOps},
		// The parent's cost is the max over its compares and both branches, not the branch the
		// nested txn is in.
		{name: "parent cost is its largest list",
			txn:    &wire.Txn{Compares: wireCmps(3), Success: wireOps(wireTxnOp(nil, wirePuts(1, "n"), nil))},
			maxOps: 4, wCode: wire.CodeOK},
		{name: "parent cost is its largest list, over",
			txn:    &wire.Txn{Compares: wireCmps(3), Success: wireOps(wireTxnOp(nil, wirePuts(2, "n"), nil))},
			maxOps: 4, wCode: wire.CodeTooManyOps},
		{name: "nested in failure, over",
			txn:    &wire.Txn{Success: wirePuts(3, "s"), Failure: wireOps(wireTxnOp(nil, nil, wirePuts(2, "n")))},
			maxOps: 4, wCode: wire.CodeTooManyOps},
		{name: "nested compares use the budget",
			txn:    &wire.Txn{Success: wirePuts(2, "s"), Failure: wireOps(wireTxnOp(wireCmps(3), nil, nil))},
			maxOps: 4, wCode: wire.CodeTooManyOps},
		{name: "nested compares within the budget",
			txn:    &wire.Txn{Success: wirePuts(2, "s"), Failure: wireOps(wireTxnOp(wireCmps(2), nil, nil))},
			maxOps: 4, wCode: wire.CodeOK},
		{name: "empty nested txn with no budget left",
			txn:    &wire.Txn{Success: wireOps(wireTxnOp(nil, nil, nil))},
			maxOps: 1, wCode: wire.CodeOK},
		{name: "nested op with no budget left",
			txn:    &wire.Txn{Success: wireOps(wireTxnOp(nil, wireOps(wireGet("a")), nil))},
			maxOps: 1, wCode: wire.CodeTooManyOps},
		// 4 - 1 = 3 for the child; 3 - 2 = 1 for the grandchild.
		{name: "grandchild within its budget",
			txn:    &wire.Txn{Success: wireOps(wireTxnOp(nil, wireOps(wirePut("x", "v"), wireTxnOp(nil, wirePuts(1, "g"), nil)), nil))},
			maxOps: 4, wCode: wire.CodeOK},
		{name: "grandchild over its budget",
			txn:    &wire.Txn{Success: wireOps(wireTxnOp(nil, wireOps(wirePut("x", "v"), wireTxnOp(nil, wirePuts(2, "g"), nil)), nil))},
			maxOps: 4, wCode: wire.CodeTooManyOps},

		// Duplicate keys in one branch.
		{name: "two puts of one key", txn: &wire.Txn{Success: wireOps(wirePut("a", "1"), wirePut("a", "2"))}, wCode: wire.CodeDuplicateKey},
		{name: "two puts of one key in failure", txn: &wire.Txn{Failure: wireOps(wirePut("a", "1"), wirePut("a", "2"))}, wCode: wire.CodeDuplicateKey},
		{name: "one key in success and failure", txn: &wire.Txn{Success: wireOps(wirePut("a", "1")), Failure: wireOps(wirePut("a", "2"))}, wCode: wire.CodeOK},
		{name: "delete then put", txn: &wire.Txn{Success: wireOps(wireDel("a", ""), wirePut("a", "1"))}, wCode: wire.CodeDuplicateKey},
		{name: "put then delete", txn: &wire.Txn{Success: wireOps(wirePut("a", "1"), wireDel("a", ""))}, wCode: wire.CodeDuplicateKey},
		{name: "put inside a deleted range", txn: &wire.Txn{Success: wireOps(wireDel("a", "c"), wirePut("b", "1"))}, wCode: wire.CodeDuplicateKey},
		{name: "put at a deleted range's start", txn: &wire.Txn{Success: wireOps(wireDel("a", "c"), wirePut("a", "1"))}, wCode: wire.CodeDuplicateKey},
		{name: "put at a deleted range's end", txn: &wire.Txn{Success: wireOps(wireDel("a", "c"), wirePut("c", "1"))}, wCode: wire.CodeOK},
		{name: "put inside a from-key delete", txn: &wire.Txn{Success: wireOps(wirePut("zzz", "1"), wireDel("b", "\x00"))}, wCode: wire.CodeDuplicateKey},
		{name: "put below a from-key delete", txn: &wire.Txn{Success: wireOps(wirePut("a", "1"), wireDel("b", "\x00"))}, wCode: wire.CodeOK},
		{name: "put next to a single-key delete", txn: &wire.Txn{Success: wireOps(wireDel("a", ""), wirePut("a\x00", "1"))}, wCode: wire.CodeOK},
		{name: "delete in the other branch", txn: &wire.Txn{Success: wireOps(wirePut("a", "1")), Failure: wireOps(wireDel("a", ""))}, wCode: wire.CodeOK},
		{name: "overlapping deletes", txn: &wire.Txn{Success: wireOps(wireDel("a", "c"), wireDel("b", "d"), wireDel("b", ""))}, wCode: wire.CodeOK},
		{name: "ranges do not conflict", txn: &wire.Txn{Success: wireOps(wireGet("a"), wirePut("a", "1"), wireGet("a"))}, wCode: wire.CodeOK},

		// Duplicate keys through nested txns.
		{name: "outer delete, nested put",
			txn: &wire.Txn{Success: wireOps(wireDel("a", "c"), wireTxnOp(nil, wireOps(wirePut("b", "1")), nil))}, wCode: wire.CodeDuplicateKey},
		{name: "outer delete, nested put in else",
			txn: &wire.Txn{Success: wireOps(wireDel("a", ""), wireTxnOp(nil, nil, wireOps(wirePut("a", "1"))))}, wCode: wire.CodeDuplicateKey},
		{name: "nested delete, outer put",
			txn: &wire.Txn{Success: wireOps(wirePut("b", "1"), wireTxnOp(nil, wireOps(wireDel("a", "c")), nil))}, wCode: wire.CodeDuplicateKey},
		{name: "nested from-key delete, outer put",
			txn: &wire.Txn{Success: wireOps(wirePut("b", "1"), wireTxnOp(nil, nil, wireOps(wireDel("a", "\x00"))))}, wCode: wire.CodeDuplicateKey},
		{name: "outer put, nested put",
			txn: &wire.Txn{Success: wireOps(wirePut("a", "1"), wireTxnOp(nil, wireOps(wirePut("a", "2")), nil))}, wCode: wire.CodeDuplicateKey},
		{name: "two nested txns put one key",
			txn: &wire.Txn{Success: wireOps(wireTxnOp(nil, wireOps(wirePut("a", "1")), nil), wireTxnOp(nil, wireOps(wirePut("a", "2")), nil))}, wCode: wire.CodeDuplicateKey},
		{name: "then of one nested txn, else of another",
			txn: &wire.Txn{Success: wireOps(wireTxnOp(nil, wireOps(wirePut("a", "1")), nil), wireTxnOp(nil, nil, wireOps(wirePut("a", "2"))))}, wCode: wire.CodeDuplicateKey},
		{name: "same key in then and else of one nested txn",
			txn: &wire.Txn{Success: wireOps(wireTxnOp(nil, wireOps(wirePut("a", "1")), wireOps(wirePut("a", "2"))))}, wCode: wire.CodeOK},
		{name: "delete in then, put in else of one nested txn",
			txn: &wire.Txn{Success: wireOps(wireTxnOp(nil, wireOps(wireDel("a", "")), wireOps(wirePut("a", "2"))))}, wCode: wire.CodeOK},
		{name: "duplicate inside a nested branch",
			txn: &wire.Txn{Failure: wireOps(wireTxnOp(nil, wireOps(wirePut("a", "1"), wirePut("a", "2")), nil))}, wCode: wire.CodeDuplicateKey},
		// etcd's checkIntervals adds each nested txn's deletes to the set before it looks at the
		// next nested txn, so a later sibling may not put into a range an earlier one deletes.
		{name: "earlier nested delete, later nested put",
			txn: &wire.Txn{Success: wireOps(wireTxnOp(nil, wireOps(wireDel("a", "c")), nil), wireTxnOp(nil, wireOps(wirePut("b", "1")), nil))}, wCode: wire.CodeDuplicateKey},
		{name: "earlier nested delete in else, later nested put",
			txn: &wire.Txn{Success: wireOps(wireTxnOp(nil, nil, wireOps(wireDel("a", ""))), wireTxnOp(nil, nil, wireOps(wirePut("a", "1"))))}, wCode: wire.CodeDuplicateKey},
		{name: "delete two levels up",
			txn: &wire.Txn{Success: wireOps(wireDel("a", "\x00"), wireTxnOp(nil, wireOps(wireTxnOp(nil, wireOps(wirePut("q", "1")), nil)), nil))}, wCode: wire.CodeDuplicateKey},
		{name: "put two levels down, delete up",
			txn: &wire.Txn{Success: wireOps(wirePut("q", "1"), wireTxnOp(nil, wireOps(wireTxnOp(nil, nil, wireOps(wireDel("q", "")))), nil))}, wCode: wire.CodeDuplicateKey},
		{name: "nested overlapping deletes",
			txn: &wire.Txn{Success: wireOps(wireDel("a", "c"), wireTxnOp(nil, wireOps(wireDel("b", "d")), wireOps(wireDel("a", ""))))}, wCode: wire.CodeOK},

		// ignore_value / ignore_lease.
		{name: "ignore value with a value", txn: &wire.Txn{Success: wireOps(ignoreValue)}, wCode: wire.CodeValueProvided},
		{name: "ignore value without a value", txn: &wire.Txn{Success: wireOps(ignoreValueEmpty)}, wCode: wire.CodeOK},
		{name: "ignore lease with a lease", txn: &wire.Txn{Failure: wireOps(ignoreLease)}, wCode: wire.CodeLeaseProvided},
		{name: "ignore lease without a lease", txn: &wire.Txn{Success: wireOps(ignoreLeaseNone)}, wCode: wire.CodeOK},
		{name: "ignore value with a value, nested", txn: &wire.Txn{Success: wireOps(wireTxnOp(nil, nil, wireOps(ignoreValue)))}, wCode: wire.CodeValueProvided},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code := mvcc.ValidateTxn(tc.txn, tc.maxOps); code != tc.wCode {
				t.Fatalf("code %d, want %d", code, tc.wCode)
			}
		})
	}
}

// TestTxn_StoreValidation checks that the public API refuses invalid requests with the exported
// errors and writes nothing.
func TestTxn_StoreValidation(t *testing.T) {
	s := emberTestStore(t)
	ctx := emberTestCtx(t)
	many := make([]Op, defaultMaxTxnOps+1)
	for i := range many {
		many[i] = OpPut(fmt.Sprint("m", i), "v")
	}
	tests := []struct {
		name string
		op   Op
		wErr error
	}{
		{name: "empty key put", op: OpPut("", "v"), wErr: ErrEmptyKey},
		{name: "empty key delete", op: OpDelete(""), wErr: ErrEmptyKey},
		{name: "too many ops", op: OpTxn(nil, many, nil), wErr: ErrTooManyOps},
		{name: "exactly max ops", op: OpTxn(nil, many[:defaultMaxTxnOps], nil)},
		{name: "duplicate key", op: OpTxn(nil, []Op{OpPut("d", "1"), OpPut("d", "2")}, nil), wErr: ErrDuplicateKey},
		// etcd refuses this (checkIntervals); see TestValidateTxn.
		{name: "put into a range an earlier nested txn deletes", op: OpTxn(nil, []Op{
			OpTxn(nil, []Op{OpDelete("d", WithPrefix())}, nil),
			OpTxn(nil, []Op{OpPut("d1", "v")}, nil),
		}, nil), wErr: ErrDuplicateKey},
		{name: "value provided", op: OpPut("k", "v", WithIgnoreValue()), wErr: ErrValueProvided},
		{name: "lease provided", op: OpPut("k", "", WithIgnoreLease(), WithLease(7)), wErr: ErrLeaseProvided},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := storeRev(t, s)
			_, err := s.Do(ctx, tc.op)
			if !errors.Is(err, tc.wErr) || (err != nil && tc.wErr == nil) {
				t.Fatalf("err %v, want %v", err, tc.wErr)
			}
			if tc.wErr != nil && storeRev(t, s) != before {
				t.Fatalf("a refused request changed the revision")
			}
		})
	}
}

// storeRev is the store's current revision, read linearizably.
func storeRev(t testing.TB, s *Store) int64 {
	t.Helper()
	g, err := s.Get(emberTestCtx(t), "\x00rev-probe")
	if err != nil {
		t.Fatal(err)
	}
	return g.Header.Revision
}

// ---- compares ----

// TestTxn_CompareSemantics evaluates every compare target and relation on an existing key, a
// missing key and a deleted key (§2: missing = zero KeyValue, but Value on a missing key is
// always false), range compares (every key must hold), and conjunctions.
func TestTxn_CompareSemantics(t *testing.T) {
	s := emberTestStore(t)
	ctx := emberTestCtx(t)
	mustPut := func(key, val string, opts ...OpOption) int64 {
		p, err := s.Put(ctx, key, val, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return p.Header.Revision
	}
	l, err := s.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	mustPut("k", "v1") // 2
	mustPut("k", "v2") // 3: k = v2, version 2, create 2, mod 3, no lease
	mustPut("l", "x", WithLease(l.ID))
	mustPut("gone", "x")
	if _, err := s.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	mustPut("r/a", "same")
	mustPut("r/b", "same")
	mustPut("r/c", "same")
	mustPut("m/a", "same")
	mustPut("m/b", "diff")

	tests := []struct {
		name       string
		cmps       []Cmp
		wSucceeded bool
	}{
		{name: "value =", cmps: []Cmp{Compare(Value("k"), "=", "v2")}, wSucceeded: true},
		{name: "value = other", cmps: []Cmp{Compare(Value("k"), "=", "v1")}},
		{name: "value != other", cmps: []Cmp{Compare(Value("k"), "!=", "v1")}, wSucceeded: true},
		{name: "value != same", cmps: []Cmp{Compare(Value("k"), "!=", "v2")}},
		{name: "value > smaller", cmps: []Cmp{Compare(Value("k"), ">", "v1")}, wSucceeded: true},
		{name: "value > same", cmps: []Cmp{Compare(Value("k"), ">", "v2")}},
		{name: "value < larger", cmps: []Cmp{Compare(Value("k"), "<", "v3")}, wSucceeded: true},
		{name: "value < same", cmps: []Cmp{Compare(Value("k"), "<", "v2")}},
		{name: "value bytewise", cmps: []Cmp{Compare(Value("k"), "<", []byte("v2\x00"))}, wSucceeded: true},
		{name: "version =", cmps: []Cmp{Compare(Version("k"), "=", 2)}, wSucceeded: true},
		{name: "version !=", cmps: []Cmp{Compare(Version("k"), "!=", 2)}},
		{name: "version >", cmps: []Cmp{Compare(Version("k"), ">", 1)}, wSucceeded: true},
		{name: "version > same", cmps: []Cmp{Compare(Version("k"), ">", 2)}},
		{name: "version <", cmps: []Cmp{Compare(Version("k"), "<", int64(3))}, wSucceeded: true},
		{name: "version < same", cmps: []Cmp{Compare(Version("k"), "<", 2)}},
		{name: "create =", cmps: []Cmp{Compare(CreateRevision("k"), "=", 2)}, wSucceeded: true},
		{name: "create >", cmps: []Cmp{Compare(CreateRevision("k"), ">", 2)}},
		{name: "create <", cmps: []Cmp{Compare(CreateRevision("k"), "<", 3)}, wSucceeded: true},
		{name: "create !=", cmps: []Cmp{Compare(CreateRevision("k"), "!=", 3)}, wSucceeded: true},
		{name: "mod =", cmps: []Cmp{Compare(ModRevision("k"), "=", 3)}, wSucceeded: true},
		{name: "mod >", cmps: []Cmp{Compare(ModRevision("k"), ">", 2)}, wSucceeded: true},
		{name: "mod <", cmps: []Cmp{Compare(ModRevision("k"), "<", 3)}},
		{name: "mod !=", cmps: []Cmp{Compare(ModRevision("k"), "!=", 3)}},
		{name: "lease none =", cmps: []Cmp{Compare(LeaseValue("k"), "=", NoLease)}, wSucceeded: true},
		{name: "lease none !=", cmps: []Cmp{Compare(LeaseValue("k"), "!=", 0)}},
		{name: "lease =", cmps: []Cmp{Compare(LeaseValue("l"), "=", l.ID)}, wSucceeded: true},
		{name: "lease >", cmps: []Cmp{Compare(LeaseValue("l"), ">", 0)}, wSucceeded: true},
		{name: "lease <", cmps: []Cmp{Compare(LeaseValue("l"), "<", int64(l.ID))}},

		// A missing key is a zero KeyValue, except that its value cannot be compared.
		{name: "missing: value = empty", cmps: []Cmp{Compare(Value("nope"), "=", "")}},
		{name: "missing: value != x", cmps: []Cmp{Compare(Value("nope"), "!=", "x")}},
		{name: "missing: value > empty", cmps: []Cmp{Compare(Value("nope"), ">", "")}},
		{name: "missing: value < z", cmps: []Cmp{Compare(Value("nope"), "<", "z")}},
		{name: "missing: version = 0", cmps: []Cmp{Compare(Version("nope"), "=", 0)}, wSucceeded: true},
		{name: "missing: version > 0", cmps: []Cmp{Compare(Version("nope"), ">", 0)}},
		{name: "missing: version < 1", cmps: []Cmp{Compare(Version("nope"), "<", 1)}, wSucceeded: true},
		{name: "missing: version != 0", cmps: []Cmp{Compare(Version("nope"), "!=", 0)}},
		{name: "missing: create = 0", cmps: []Cmp{Compare(CreateRevision("nope"), "=", 0)}, wSucceeded: true},
		{name: "missing: create > 0", cmps: []Cmp{Compare(CreateRevision("nope"), ">", 0)}},
		{name: "missing: mod = 0", cmps: []Cmp{Compare(ModRevision("nope"), "=", 0)}, wSucceeded: true},
		{name: "missing: mod < 1", cmps: []Cmp{Compare(ModRevision("nope"), "<", 1)}, wSucceeded: true},
		{name: "missing: lease = 0", cmps: []Cmp{Compare(LeaseValue("nope"), "=", 0)}, wSucceeded: true},
		{name: "deleted: version = 0", cmps: []Cmp{Compare(Version("gone"), "=", 0)}, wSucceeded: true},
		{name: "deleted: create = 0", cmps: []Cmp{Compare(CreateRevision("gone"), "=", 0)}, wSucceeded: true},
		{name: "deleted: value = x", cmps: []Cmp{Compare(Value("gone"), "=", "x")}},
		{name: "deleted: value != y", cmps: []Cmp{Compare(Value("gone"), "!=", "y")}},

		// Range compares: every key in the range must satisfy the compare.
		{name: "range: all equal", cmps: []Cmp{Compare(Value("r/"), "=", "same").WithPrefix()}, wSucceeded: true},
		{name: "range: one differs", cmps: []Cmp{Compare(Value("m/"), "=", "same").WithPrefix()}},
		{name: "range: one differs, !=", cmps: []Cmp{Compare(Value("m/"), "!=", "same").WithPrefix()}},
		{name: "range: versions", cmps: []Cmp{Compare(Version("r/"), "=", 1).WithPrefix()}, wSucceeded: true},
		{name: "range: explicit end", cmps: []Cmp{Compare(Value("m/a"), "=", "same").WithRange("m/b")}, wSucceeded: true},
		{name: "range: explicit end including the odd one", cmps: []Cmp{Compare(Value("m/a"), "=", "same").WithRange("m/c")}},
		{name: "range: create below", cmps: []Cmp{Compare(CreateRevision("r/"), "<", 1000).WithPrefix()}, wSucceeded: true},
		{name: "range: mod above the first key's", cmps: []Cmp{Compare(ModRevision("r/"), ">", 8).WithPrefix()}},
		{name: "empty range: value", cmps: []Cmp{Compare(Value("none/"), "=", "").WithPrefix()}},
		{name: "empty range: version = 0", cmps: []Cmp{Compare(Version("none/"), "=", 0).WithPrefix()}, wSucceeded: true},

		// Conjunction.
		{name: "no compares", wSucceeded: true},
		{name: "all hold", cmps: []Cmp{Compare(Value("k"), "=", "v2"), Compare(Version("nope"), "=", 0)}, wSucceeded: true},
		{name: "one fails", cmps: []Cmp{Compare(Value("k"), "=", "v2"), Compare(Version("nope"), "=", 1)}},
		{name: "first fails", cmps: []Cmp{Compare(Value("k"), "=", "v1"), Compare(Version("nope"), "=", 0)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.Txn(ctx).If(tc.cmps...).Then(OpGet("k")).Else(OpGet("l"), OpGet("l")).Commit()
			if err != nil {
				t.Fatal(err)
			}
			wResponses := 2
			if tc.wSucceeded {
				wResponses = 1
			}
			if resp.Succeeded != tc.wSucceeded || len(resp.Responses) != wResponses {
				t.Fatalf("succeeded %v with %d responses, want %v with %d", resp.Succeeded, len(resp.Responses), tc.wSucceeded, wResponses)
			}
		})
	}
}

// ---- execution ----

// TestTxn_Execution covers how a transaction runs (§2): nested compares see the state before the
// transaction, reads see the transaction's own earlier writes, the whole transaction gets one
// revision, and a transaction that writes nothing keeps the revision.
func TestTxn_Execution(t *testing.T) {
	s := emberTestStore(t)
	ctx := emberTestCtx(t)
	for _, kv := range [][2]string{{"a", "0"}, {"y", "1"}} {
		if _, err := s.Put(ctx, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	get := func(key string) *KeyValue {
		g, err := s.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(g.Kvs) == 0 {
			return nil
		}
		return g.Kvs[0]
	}

	t.Run("nested compares see the pre-txn state", func(t *testing.T) {
		resp, err := s.Txn(ctx).Then(
			OpPut("a", "1"),
			OpTxn([]Cmp{Compare(Value("a"), "=", "0")}, []Op{OpPut("b", "then")}, []Op{OpPut("b", "else")}),
		).Commit()
		if err != nil {
			t.Fatal(err)
		}
		nested := resp.Responses[1].Txn()
		if nested == nil || !nested.Succeeded {
			t.Fatalf("nested txn: %+v, want succeeded", nested)
		}
		if b := get("b"); b == nil || string(b.Value) != "then" {
			t.Fatalf("b = %s, want then", kvString(b))
		}
		if a := get("a"); string(a.Value) != "1" || a.ModRevision != resp.Header.Revision {
			t.Fatalf("a = %s, want 1 at %d", kvString(a), resp.Header.Revision)
		}
	})

	t.Run("reads see earlier writes of the txn", func(t *testing.T) {
		pre := storeRev(t, s)
		resp, err := s.Txn(ctx).Then(
			OpGet("x"),
			OpPut("x", "new"),
			OpGet("x"),
			OpDelete("y"),
			OpGet("y"),
			OpGet("y", WithRev(pre)),
			OpGet("x", WithCountOnly()),
		).Commit()
		if err != nil {
			t.Fatal(err)
		}
		rev := resp.Header.Revision
		if rev != pre+1 {
			t.Fatalf("txn at %d, want %d", rev, pre+1)
		}
		r := resp.Responses
		if n := len(r[0].Get().Kvs); n != 0 {
			t.Fatalf("x before its put: %d kvs", n)
		}
		if kvs := r[2].Get().Kvs; len(kvs) != 1 || string(kvs[0].Value) != "new" || kvs[0].ModRevision != rev || kvs[0].Version != 1 {
			t.Fatalf("x after its put: %v", kvs)
		}
		if r[3].Del().Deleted != 1 || len(r[4].Get().Kvs) != 0 {
			t.Fatalf("y after its delete: deleted %d, read %d kvs", r[3].Del().Deleted, len(r[4].Get().Kvs))
		}
		if kvs := r[5].Get().Kvs; len(kvs) != 1 || string(kvs[0].Value) != "1" {
			t.Fatalf("y at the pre-txn revision: %v", kvs)
		}
		if c := r[6].Get().Count; c != 1 {
			t.Fatalf("count of x after its put: %d", c)
		}
	})

	t.Run("one revision for the whole txn", func(t *testing.T) {
		pre := storeRev(t, s)
		resp, err := s.Txn(ctx).If(Compare(Version("nope"), "=", 0)).Then(
			OpPut("o/1", "v"), OpPut("o/2", "v"), OpDelete("a"),
			OpTxn(nil, []Op{OpPut("o/3", "v"), OpDelete("b")}, nil),
		).Commit()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Revision != pre+1 || storeRev(t, s) != pre+1 {
			t.Fatalf("txn header %d, store %d; want both %d", resp.Header.Revision, storeRev(t, s), pre+1)
		}
		g, err := s.Get(ctx, "o/", WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range g.Kvs {
			if kv.ModRevision != pre+1 || kv.CreateRevision != pre+1 {
				t.Fatalf("%s, want created and modified at %d", kvString(kv), pre+1)
			}
		}
		if len(g.Kvs) != 3 || get("a") != nil || get("b") != nil {
			t.Fatalf("o/ has %d keys, a=%s b=%s", len(g.Kvs), kvString(get("a")), kvString(get("b")))
		}
	})

	t.Run("a txn that writes nothing keeps the revision", func(t *testing.T) {
		tests := []struct {
			name string
			txn  func() Txn
		}{
			{name: "chosen branch empty", txn: func() Txn {
				return s.Txn(ctx).If(Compare(Version("nope"), ">", 0)).Then(OpPut("w", "v"))
			}},
			{name: "chosen branch reads", txn: func() Txn {
				return s.Txn(ctx).If(Compare(Version("nope"), ">", 0)).Then(OpPut("w", "v")).Else(OpGet("o/1"))
			}},
			{name: "delete of nothing", txn: func() Txn { return s.Txn(ctx).Then(OpDelete("nope"), OpDelete("nope/", WithPrefix())) }},
			{name: "nested branch empty", txn: func() Txn {
				return s.Txn(ctx).Then(OpTxn([]Cmp{Compare(Version("nope"), ">", 0)}, []Op{OpPut("w", "v")}, nil))
			}},
		}
		for _, tc := range tests {
			pre := storeRev(t, s)
			resp, err := tc.txn().Commit()
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if resp.Header.Revision != pre || storeRev(t, s) != pre || get("w") != nil {
				t.Fatalf("%s: header %d store %d, want %d and no write", tc.name, resp.Header.Revision, storeRev(t, s), pre)
			}
		}
	})

	t.Run("ignore value and ignore lease keep the old ones", func(t *testing.T) {
		l, err := s.Grant(ctx, 3600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, "iv", "orig", WithLease(l.ID)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, "iv", "", WithIgnoreValue(), WithLease(l.ID)); err != nil {
			t.Fatal(err)
		}
		if kv := get("iv"); string(kv.Value) != "orig" || kv.Lease != int64(l.ID) || kv.Version != 2 {
			t.Fatalf("after ignore value: %s", kvString(kv))
		}
		if _, err := s.Put(ctx, "iv", "changed", WithIgnoreLease()); err != nil {
			t.Fatal(err)
		}
		if kv := get("iv"); string(kv.Value) != "changed" || kv.Lease != int64(l.ID) || kv.Version != 3 {
			t.Fatalf("after ignore lease: %s", kvString(kv))
		}
	})
}

// TestTxn_ErrorsWriteNothing checks that a txn whose chosen branch fails a state check (unknown
// lease, compacted or future read revision, ignore_* on a missing key) fails as a whole with no
// write, while the same problem in the branch not taken is harmless.
func TestTxn_ErrorsWriteNothing(t *testing.T) {
	s := emberTestStore(t)
	ctx := emberTestCtx(t)
	for i := 0; i < 3; i++ {
		if _, err := s.Put(ctx, "h", fmt.Sprint(i)); err != nil { // revisions 2..4
			t.Fatal(err)
		}
	}
	if _, err := s.Compact(ctx, 3); err != nil {
		t.Fatal(err)
	}
	const unknown = LeaseID(424242)
	yes := Compare(Version("h"), ">", 0)
	no := Compare(Version("h"), "=", 0)
	tests := []struct {
		name     string
		txn      func() Txn
		wErr     error
		wWritten bool // whether "w" exists afterwards
	}{
		{name: "unknown lease in chosen then", txn: func() Txn {
			return s.Txn(ctx).If(yes).Then(OpPut("w", "v"), OpPut("w2", "v", WithLease(unknown)))
		}, wErr: ErrLeaseNotFound},
		{name: "unknown lease in chosen else", txn: func() Txn {
			return s.Txn(ctx).If(no).Then(OpPut("x", "v")).Else(OpPut("w", "v"), OpPut("w2", "v", WithLease(unknown)))
		}, wErr: ErrLeaseNotFound},
		{name: "unknown lease in chosen nested branch", txn: func() Txn {
			return s.Txn(ctx).Then(OpPut("w", "v"), OpTxn([]Cmp{no}, nil, []Op{OpPut("w2", "v", WithLease(unknown))}))
		}, wErr: ErrLeaseNotFound},
		{name: "unknown lease in the branch not taken", txn: func() Txn {
			return s.Txn(ctx).If(yes).Then(OpPut("w", "v")).Else(OpPut("w2", "v", WithLease(unknown)))
		}, wWritten: true},
		{name: "compacted read after a write", txn: func() Txn {
			return s.Txn(ctx).Then(OpPut("w", "v"), OpGet("h", WithRev(2)))
		}, wErr: ErrCompacted},
		{name: "compacted read in a nested txn", txn: func() Txn {
			return s.Txn(ctx).Then(OpPut("w", "v"), OpTxn(nil, []Op{OpGet("h", WithRev(1))}, nil))
		}, wErr: ErrCompacted},
		{name: "future read after a write", txn: func() Txn {
			return s.Txn(ctx).Then(OpPut("w", "v"), OpGet("h", WithRev(1000)))
		}, wErr: ErrFutureRev},
		{name: "read at the compaction revision is fine", txn: func() Txn {
			return s.Txn(ctx).Then(OpPut("w", "v"), OpGet("h", WithRev(3)))
		}, wWritten: true},
		{name: "ignore value on a missing key", txn: func() Txn {
			return s.Txn(ctx).Then(OpPut("w", "v"), OpPut("missing", "", WithIgnoreValue()))
		}, wErr: ErrKeyNotFound},
		{name: "ignore lease on a missing key", txn: func() Txn {
			return s.Txn(ctx).Then(OpPut("w", "v"), OpPut("missing", "v", WithIgnoreLease()))
		}, wErr: ErrKeyNotFound},
		{name: "read-only txn at a compacted revision", txn: func() Txn {
			return s.Txn(ctx).Then(OpGet("h", WithRev(2)))
		}, wErr: ErrCompacted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Delete(ctx, "w"); err != nil {
				t.Fatal(err)
			}
			pre := storeRev(t, s)
			_, err := tc.txn().Commit()
			if !errors.Is(err, tc.wErr) || (err != nil && tc.wErr == nil) {
				t.Fatalf("err %v, want %v", err, tc.wErr)
			}
			g, gerr := s.Get(ctx, "w")
			if gerr != nil {
				t.Fatal(gerr)
			}
			if written := len(g.Kvs) == 1; written != tc.wWritten {
				t.Fatalf("w written: %v, want %v", written, tc.wWritten)
			}
			if !tc.wWritten && g.Header.Revision != pre {
				t.Fatalf("revision moved from %d to %d", pre, g.Header.Revision)
			}
		})
	}
	// The single-op forms answer the same way.
	if _, err := s.Put(ctx, "missing", "", WithIgnoreValue()); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Put ignore value on a missing key: %v, want ErrKeyNotFound", err)
	}
	if _, err := s.Put(ctx, "missing", "v", WithIgnoreLease()); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Put ignore lease on a missing key: %v, want ErrKeyNotFound", err)
	}
	if _, err := s.Put(ctx, "w", "v", WithLease(unknown)); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("Put with an unknown lease: %v, want ErrLeaseNotFound", err)
	}
}

// TestTxn_BuilderMisuse checks that misusing the builder (which panics in clientv3) is reported by
// Commit, and that legal orders still work.
func TestTxn_BuilderMisuse(t *testing.T) {
	s := emberTestStore(t)
	ctx := emberTestCtx(t)
	c := Compare(Version("k"), "=", 0)
	tests := []struct {
		name  string
		build func(Txn) Txn
		wErr  bool
	}{
		{name: "If after Then", build: func(x Txn) Txn { return x.Then(OpGet("k")).If(c) }, wErr: true},
		{name: "Then twice", build: func(x Txn) Txn { return x.If(c).Then(OpGet("k")).Then(OpGet("k")) }, wErr: true},
		{name: "If twice", build: func(x Txn) Txn { return x.If(c).If(c) }, wErr: true},
		{name: "Else twice", build: func(x Txn) Txn { return x.Else(OpGet("k")).Else(OpGet("k")) }, wErr: true},
		{name: "Then after Else", build: func(x Txn) Txn { return x.If(c).Else(OpGet("k")).Then(OpGet("k")) }, wErr: true},
		{name: "If after Else", build: func(x Txn) Txn { return x.Else(OpGet("k")).If(c) }, wErr: true},
		{name: "misuse does not write", build: func(x Txn) Txn { return x.Then(OpPut("k", "v")).Then(OpPut("k2", "v")) }, wErr: true},
		{name: "If Then Else", build: func(x Txn) Txn { return x.If(c).Then(OpGet("k")).Else(OpGet("k")) }},
		{name: "If Else", build: func(x Txn) Txn { return x.If(c).Else(OpGet("k")) }},
		{name: "Then alone", build: func(x Txn) Txn { return x.Then(OpGet("k")) }},
		{name: "nothing", build: func(x Txn) Txn { return x }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pre := storeRev(t, s)
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("panicked: %v", p)
					}
				}()
				_, err = tc.build(s.Txn(ctx)).Commit()
			}()
			if (err != nil) != tc.wErr {
				t.Fatalf("err %v, want error: %v", err, tc.wErr)
			}
			if tc.wErr && storeRev(t, s) != pre {
				t.Fatal("a refused txn wrote")
			}
		})
	}
}

// TestTxn_CompareMalformed checks that a Compare built with a wrong relation or value type fails
// Commit (clientv3 panics), also when nested, and writes nothing.
func TestTxn_CompareMalformed(t *testing.T) {
	s := emberTestStore(t)
	ctx := emberTestCtx(t)
	tests := []struct {
		name string
		cmp  Cmp
	}{
		{name: "value with an int", cmp: Compare(Value("k"), "=", 1)},
		{name: "value with nil", cmp: Compare(Value("k"), "=", nil)},
		{name: "version with a string", cmp: Compare(Version("k"), "=", "1")},
		{name: "create with a float", cmp: Compare(CreateRevision("k"), "=", 1.0)},
		{name: "mod with an int32", cmp: Compare(ModRevision("k"), "=", int32(1))},
		{name: "lease with a string", cmp: Compare(LeaseValue("k"), "=", "1")},
		{name: "unknown relation", cmp: Compare(Version("k"), ">=", 1)},
		{name: "empty relation", cmp: Compare(Value("k"), "", "v")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pre := storeRev(t, s)
			forms := map[string]func() error{
				"top level": func() error {
					_, err := s.Txn(ctx).If(tc.cmp).Then(OpPut("k", "v")).Else(OpPut("k", "v")).Commit()
					return err
				},
				"nested": func() error {
					_, err := s.Txn(ctx).Then(OpPut("j", "v"), OpTxn([]Cmp{tc.cmp}, []Op{OpPut("k", "v")}, nil)).Commit()
					return err
				},
				"nested in else via Do": func() error {
					_, err := s.Do(ctx, OpTxn(nil, nil, []Op{OpTxn(nil, nil, []Op{OpTxn([]Cmp{tc.cmp}, nil, nil)})}))
					return err
				},
			}
			for form, run := range forms {
				func() {
					defer func() {
						if p := recover(); p != nil {
							t.Fatalf("%s: panicked: %v", form, p)
						}
					}()
					if err := run(); err == nil {
						t.Fatalf("%s: Commit succeeded", form)
					}
				}()
			}
			if storeRev(t, s) != pre {
				t.Fatal("a malformed txn wrote")
			}
		})
	}
	// The accepted integer types work.
	for _, v := range []any{int(0), int64(0), LeaseID(0)} {
		if _, err := s.Txn(ctx).If(Compare(Version("k"), "=", v)).Commit(); err != nil {
			t.Errorf("Compare with %T: %v", v, err)
		}
	}
}
