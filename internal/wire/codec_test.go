package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// normalize returns a deep copy of v with every empty slice replaced by nil, matching what the
// decoders produce.
func normalize[T any](v T) T {
	out := reflect.New(reflect.TypeOf(v)).Elem()
	out.Set(normalizeValue(reflect.ValueOf(v)))
	return out.Interface().(T)
}

func normalizeValue(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(normalizeValue(v.Elem()))
		return p
	case reflect.Struct:
		s := reflect.New(v.Type()).Elem()
		for i := range v.NumField() {
			if s.Field(i).CanSet() {
				s.Field(i).Set(normalizeValue(v.Field(i)))
			}
		}
		return s
	case reflect.Slice:
		if v.Len() == 0 {
			return reflect.Zero(v.Type())
		}
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			s.Index(i).Set(normalizeValue(v.Index(i)))
		}
		return s
	default:
		return v
	}
}

func put(key, value string) Op {
	return Op{Kind: OpPut, Key: []byte(key), Value: []byte(value)}
}

// nestedTxn returns a Txn nested depth levels deep, counting itself.
func nestedTxn(depth int) *Txn {
	t := &Txn{Success: []Op{put("k", "v")}}
	for range depth - 1 {
		t = &Txn{Success: []Op{{Kind: OpTxn, Txn: t}}}
	}
	return t
}

func nestedTxnResult(depth int) *TxnResult {
	t := &TxnResult{Succeeded: true, Responses: []OpResult{{Kind: OpPut, Put: &PutResult{}}}}
	for range depth - 1 {
		t = &TxnResult{Responses: []OpResult{{Kind: OpTxn, Txn: t}}}
	}
	return t
}

type commandCase struct {
	name string
	cmd  Command
}

func commandCases() []commandCase {
	id := RequestID{Client: 0xdeadbeefcafe, Seq: 42}
	cases := []commandCase{
		{"put", Command{ID: id, Kind: KindTxn, Txn: &Txn{Success: []Op{put("foo", "bar")}}}},
		{"put all fields", Command{ID: id, Kind: KindTxn, Txn: &Txn{Success: []Op{{
			Kind: OpPut, Key: []byte("k"), Value: []byte("v"), Lease: 7,
			PrevKV: true, IgnoreValue: true, IgnoreLease: true,
		}}}}},
		{"put empty key and value", Command{Kind: KindTxn, Txn: &Txn{Success: []Op{{Kind: OpPut, Key: []byte{}, Value: []byte{}}}}}},
		{"put binary", Command{Kind: KindTxn, Txn: &Txn{Success: []Op{put("\x00\xff", string(bytes.Repeat([]byte{0x80}, 300)))}}}},
		{"delete", Command{ID: id, Kind: KindTxn, Txn: &Txn{Success: []Op{{Kind: OpDelete, Key: []byte("a")}}}}},
		{"delete range prevkv", Command{Kind: KindTxn, Txn: &Txn{Success: []Op{{Kind: OpDelete, Key: []byte("a"), End: []byte("\x00"), PrevKV: true}}}}},
		{"range all fields", Command{Kind: KindTxn, Txn: &Txn{Success: []Op{{
			Kind: OpRange, Key: []byte("a"), End: []byte("z"), Revision: 9, Limit: 100,
			SortOrder: SortDescend, SortTarget: SortByMod, Serializable: true, KeysOnly: true, CountOnly: true,
			MinModRev: 1, MaxModRev: 2, MinCreateRev: 3, MaxCreateRev: math.MaxInt64,
		}}}}},
		{"empty txn", Command{Kind: KindTxn, Txn: &Txn{}}},
		{"empty lists", Command{Kind: KindTxn, Txn: &Txn{Compares: []Compare{}, Success: []Op{}, Failure: []Op{}}}},
		{"txn both branches", Command{ID: id, Kind: KindTxn, Txn: &Txn{
			Compares: []Compare{{Target: TargetValue, Result: CompareEqual, Key: []byte("k"), Value: []byte("v")}},
			Success:  []Op{put("k", "v2"), {Kind: OpDelete, Key: []byte("x")}},
			Failure:  []Op{{Kind: OpRange, Key: []byte("k")}},
		}}},
		{"nested txn", Command{Kind: KindTxn, Txn: &Txn{
			Success: []Op{{Kind: OpTxn, Txn: &Txn{
				Compares: []Compare{{Target: TargetVersion, Key: []byte("a"), Int: 0}},
				Success:  []Op{{Kind: OpTxn, Txn: &Txn{Failure: []Op{put("deep", "er")}}}},
			}}},
		}}},
		{"max depth", Command{Kind: KindTxn, Txn: nestedTxn(maxTxnDepth)}},
		{"compact", Command{ID: id, Kind: KindCompact, Revision: 12345}},
		{"compact extremes", Command{ID: RequestID{Client: math.MaxUint64, Seq: math.MaxUint64}, RetryFloor: math.MaxUint64, Kind: KindCompact, Revision: math.MinInt64}},
		{"retry", Command{ID: id, RetryFloor: 77, Kind: KindLeaseRevoke, LeaseID: 9}},
		{"lease grant", Command{ID: id, Kind: KindLeaseGrant, LeaseID: 0x1234567890, LeaseTTL: 60}},
		{"lease revoke", Command{Kind: KindLeaseRevoke, LeaseID: -1}},
		{"lease checkpoint", Command{Kind: KindLeaseCheckpoint, Checkpoints: []LeaseCheckpoint{{ID: 1, RemainingMs: 500}, {ID: math.MaxInt64, RemainingMs: 0}}}},
		{"lease checkpoint empty", Command{Kind: KindLeaseCheckpoint}},
		{"leader start", Command{Kind: KindLeaderStart, Term: 7, NodeID: "node-1"}},
		{"leader start empty node", Command{Kind: KindLeaderStart, Term: math.MaxUint64}},
		{"alarm activate", Command{ID: id, Kind: KindAlarm, AlarmAction: AlarmActivate, AlarmType: AlarmNoSpace, NodeID: "m1"}},
		{"alarm deactivate", Command{ID: id, Kind: KindAlarm, AlarmAction: AlarmDeactivate, AlarmType: AlarmCorrupt, NodeID: "m2"}},
		{"auth user add", Command{ID: id, Kind: KindAuth, Auth: &Auth{Op: AuthUserAdd, Name: "alice", Password: []byte("$2a$04$hash")}}},
		{"auth user add without password", Command{ID: id, Kind: KindAuth, Auth: &Auth{Op: AuthUserAdd, Name: "bob", NoPassword: true}}},
		{"auth grant role", Command{ID: id, Kind: KindAuth, Auth: &Auth{Op: AuthUserGrantRole, Name: "alice", Role: "r"}}},
		{"auth grant from-key", Command{ID: id, Kind: KindAuth, Auth: &Auth{Op: AuthRoleGrantPermission, Name: "r", Key: []byte("a"), End: []byte{0}, PermType: PermReadWrite}}},
		{"auth enable", Command{ID: id, Kind: KindAuth, Auth: &Auth{Op: AuthEnable}}},
		{"txn authorized at an auth revision", Command{ID: id, Kind: KindTxn, AuthRev: 7, Txn: &Txn{Success: []Op{{Kind: OpPut, Key: []byte("k")}}}}},
		{"lease revoke authorized at an auth revision", Command{ID: id, Kind: KindLeaseRevoke, LeaseID: 5, AuthRev: 1 << 40}},
		{"txn granting a lease", Command{ID: id, Kind: KindTxn, LeaseID: -9, LeaseTTL: 60, Txn: &Txn{Success: []Op{{Kind: OpPut, Key: []byte("k"), Lease: -9}}}}},
		{"txn granting a lease, authorized", Command{ID: id, Kind: KindTxn, AuthRev: 3, LeaseID: 1 << 62, LeaseTTL: 1, Txn: &Txn{}}},
	}
	for target := TargetVersion; target <= TargetLease; target++ {
		for result := CompareEqual; result <= CompareNotEqual; result++ {
			c := Compare{Target: target, Result: result, Key: []byte("k"), End: []byte("l")}
			if target == TargetValue {
				c.Value = []byte("val")
			} else {
				c.Int = int64(target)*10 - int64(result)
			}
			cases = append(cases, commandCase{
				fmt.Sprintf("compare target %d result %d", target, result),
				Command{Kind: KindTxn, Txn: &Txn{Compares: []Compare{c}, Success: []Op{put("k", "v")}}},
			})
		}
	}
	for order := SortNone; order <= SortDescend; order++ {
		for target := SortByKey; target <= SortByValue; target++ {
			cases = append(cases, commandCase{
				fmt.Sprintf("sort order %d target %d", order, target),
				Command{Kind: KindTxn, Txn: &Txn{Success: []Op{{Kind: OpRange, Key: []byte("a"), SortOrder: order, SortTarget: target}}}},
			})
		}
	}
	return cases
}

type resultCase struct {
	name string
	res  Result
}

func resultCases() []resultCase {
	kv := func(k, v string, rev int64) *KV {
		return &KV{Key: []byte(k), Value: []byte(v), CreateRevision: rev, ModRevision: rev + 1, Version: 2, Lease: 5}
	}
	cases := []resultCase{
		{"empty", Result{}},
		{"lease grant", Result{Revision: 10, LeaseID: 99, LeaseTTL: 30}},
		{"negative", Result{Revision: math.MinInt64, LeaseID: math.MaxInt64, LeaseTTL: -1}},
		{"empty txn", Result{Txn: &TxnResult{}}},
		{"range", Result{Revision: 3, Txn: &TxnResult{Succeeded: true, Responses: []OpResult{
			{Kind: OpRange, Range: &RangeResult{Kvs: []*KV{kv("a", "1", 1), kv("b", "", 2)}, More: true, Count: 10}},
		}}}},
		{"range empty", Result{Txn: &TxnResult{Succeeded: true, Responses: []OpResult{{Kind: OpRange, Range: &RangeResult{}}}}}},
		{"put", Result{Txn: &TxnResult{Succeeded: true, Responses: []OpResult{{Kind: OpPut, Put: &PutResult{}}}}}},
		{"put prevkv", Result{Txn: &TxnResult{Succeeded: true, Responses: []OpResult{{Kind: OpPut, Put: &PutResult{PrevKV: kv("k", "old", 4)}}}}}},
		{"put empty prevkv", Result{Txn: &TxnResult{Responses: []OpResult{{Kind: OpPut, Put: &PutResult{PrevKV: &KV{}}}}}}},
		{"delete", Result{Txn: &TxnResult{Succeeded: true, Responses: []OpResult{{Kind: OpDelete, Delete: &DeleteResult{Deleted: 2, PrevKVs: []*KV{kv("a", "x", 1), kv("b", "y", 2)}}}}}}},
		{"delete none", Result{Txn: &TxnResult{Responses: []OpResult{{Kind: OpDelete, Delete: &DeleteResult{}}}}}},
		{"mixed", Result{Revision: 8, Txn: &TxnResult{Responses: []OpResult{
			{Kind: OpPut, Put: &PutResult{}},
			{Kind: OpRange, Range: &RangeResult{Count: 1, Kvs: []*KV{kv("k", "v", 8)}}},
			{Kind: OpTxn, Txn: &TxnResult{Succeeded: true, Responses: []OpResult{{Kind: OpDelete, Delete: &DeleteResult{Deleted: 1}}}}},
		}}}},
		{"max depth", Result{Txn: nestedTxnResult(maxTxnDepth)}},
	}
	for c := CodeOK; c < codeMax; c++ {
		cases = append(cases, resultCase{fmt.Sprintf("code %d", c), Result{Code: c, Revision: int64(c)}})
	}
	return cases
}

func TestCommand_RoundTrip(t *testing.T) {
	for _, tc := range commandCases() {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.cmd.Marshal(nil)
			if b[0] != commandVersion {
				t.Fatalf("first byte = %d, want version %d", b[0], commandVersion)
			}
			got, err := UnmarshalCommand(b)
			if err != nil {
				t.Fatalf("UnmarshalCommand: %v", err)
			}
			if want := normalize(tc.cmd); !reflect.DeepEqual(got, &want) {
				t.Fatalf("round trip mismatch\n got %+v\nwant %+v", got, &want)
			}
		})
	}
}

func TestCommand_MarshalAppends(t *testing.T) {
	cmd := Command{Kind: KindCompact, Revision: 5}
	prefix := []byte("prefix")
	b := cmd.Marshal(prefix)
	if !bytes.HasPrefix(b, prefix) {
		t.Fatalf("Marshal did not keep dst: %q", b)
	}
	if !bytes.Equal(b[len(prefix):], cmd.Marshal(nil)) {
		t.Fatal("Marshal(dst) != dst + Marshal(nil)")
	}
}

// TestCommand_UnusedFieldsDropped pins that only the fields of the command's and op's kinds are
// encoded.
func TestCommand_UnusedFieldsDropped(t *testing.T) {
	cmd := Command{Kind: KindCompact, Revision: 3, LeaseID: 4, Term: 5, NodeID: "n", Txn: &Txn{}}
	got, err := UnmarshalCommand(cmd.Marshal(nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Command{Kind: KindCompact, Revision: 3}); !reflect.DeepEqual(*got, want) {
		t.Fatalf("got %+v, want %+v", *got, want)
	}

	op := Op{Kind: OpDelete, Key: []byte("k"), Value: []byte("v"), Limit: 3, PrevKV: true, IgnoreLease: true}
	cmd = Command{Kind: KindTxn, Txn: &Txn{Success: []Op{op}}}
	got, err = UnmarshalCommand(cmd.Marshal(nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Op{Kind: OpDelete, Key: []byte("k"), PrevKV: true}); !reflect.DeepEqual(got.Txn.Success[0], want) {
		t.Fatalf("got %+v, want %+v", got.Txn.Success[0], want)
	}
}

func TestUnmarshalCommand_NoAliasing(t *testing.T) {
	cmd := Command{Kind: KindTxn, Txn: &Txn{Success: []Op{put("key", "value")}}}
	b := cmd.Marshal(nil)
	got, err := UnmarshalCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0xff
	}
	if op := got.Txn.Success[0]; string(op.Key) != "key" || string(op.Value) != "value" {
		t.Fatalf("decoded command aliases its input: %q %q", op.Key, op.Value)
	}
}

func TestResult_RoundTrip(t *testing.T) {
	for _, tc := range resultCases() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := UnmarshalResult(tc.res.Marshal(nil))
			if err != nil {
				t.Fatalf("UnmarshalResult: %v", err)
			}
			if want := normalize(tc.res); !reflect.DeepEqual(got, &want) {
				t.Fatalf("round trip mismatch\n got %+v\nwant %+v", got, &want)
			}
		})
	}
}

// TestResult_NilKV pins that a nil KV inside a list encodes as an empty KV rather than panicking.
func TestResult_NilKV(t *testing.T) {
	res := Result{Txn: &TxnResult{Responses: []OpResult{{Kind: OpRange, Range: &RangeResult{Kvs: []*KV{nil}}}}}}
	got, err := UnmarshalResult(res.Marshal(nil))
	if err != nil {
		t.Fatal(err)
	}
	if kvs := got.Txn.Responses[0].Range.Kvs; len(kvs) != 1 || !reflect.DeepEqual(kvs[0], &KV{}) {
		t.Fatalf("got %+v, want one empty KV", kvs)
	}
}

func TestKV_RoundTrip(t *testing.T) {
	kvs := []*KV{
		{},
		{Key: []byte("k"), Value: []byte("v"), CreateRevision: 1, ModRevision: 2, Version: 3, Lease: 4},
		{Key: []byte{0}, CreateRevision: math.MaxInt64, ModRevision: math.MinInt64, Version: -1, Lease: -2},
	}
	var e Encoder
	for _, kv := range kvs {
		EncodeKV(&e, kv)
	}
	d := NewDecoder(e.B)
	for _, want := range kvs {
		if got := DecodeKV(d); !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
	if kv := DecodeKV(NewDecoder([]byte{1})); kv != nil {
		t.Fatalf("DecodeKV of truncated input = %+v, want nil", kv)
	}
}

func wantMalformed(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

// Every single-bit error in a command is caught: by the version check in the first byte, by the
// checksum everywhere else.
func TestUnmarshalCommand_BitFlips(t *testing.T) {
	for _, tc := range commandCases() {
		b := tc.cmd.Marshal(nil)
		for i := range len(b) * 8 {
			d := slices.Clone(b)
			d[i/8] ^= 1 << (i % 8)
			c, err := UnmarshalCommand(d)
			switch {
			case c != nil:
				t.Fatalf("%s: bit %d flipped: decoded %+v", tc.name, i, c)
			case i >= 8 && !errors.Is(err, ErrChecksum):
				t.Fatalf("%s: bit %d flipped: %v, want ErrChecksum", tc.name, i, err)
			case !errors.Is(err, ErrMalformed):
				t.Fatalf("%s: bit %d flipped: %v, want ErrMalformed", tc.name, i, err)
			}
		}
	}
}

func TestUnmarshalCommand_Truncated(t *testing.T) {
	for _, tc := range commandCases() {
		b := tc.cmd.Marshal(nil)
		body := unsealed(&tc.cmd)
		for n := range len(b) {
			c, err := UnmarshalCommand(b[:n])
			if c != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: prefix %d/%d: got (%v, %v), want ErrMalformed", tc.name, n, len(b), c, err)
			}
			if n < len(body) {
				// The body cut short but with a valid checksum: the decoder must notice.
				c, err := UnmarshalCommand(sealed(body[:n]))
				if c != nil || !errors.Is(err, ErrMalformed) {
					t.Fatalf("%s: sealed prefix %d/%d: got (%v, %v), want ErrMalformed", tc.name, n, len(body), c, err)
				}
			}
		}
	}
}

func TestUnmarshalResult_Truncated(t *testing.T) {
	for _, tc := range resultCases() {
		b := tc.res.Marshal(nil)
		for n := range len(b) {
			r, err := UnmarshalResult(b[:n])
			if r != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: prefix %d/%d: got (%v, %v), want ErrMalformed", tc.name, n, len(b), r, err)
			}
		}
	}
}

func TestUnmarshal_TrailingBytes(t *testing.T) {
	for _, tc := range commandCases() {
		_, err := UnmarshalCommand(sealed(append(unsealed(&tc.cmd), 0)))
		wantMalformed(t, err)
	}
	for _, tc := range resultCases() {
		_, err := UnmarshalResult(append(tc.res.Marshal(nil), 0))
		wantMalformed(t, err)
	}
}

func TestUnmarshalCommand_DepthLimit(t *testing.T) {
	ok := Command{Kind: KindTxn, Txn: nestedTxn(maxTxnDepth)}
	if _, err := UnmarshalCommand(ok.Marshal(nil)); err != nil {
		t.Fatalf("depth %d: %v", maxTxnDepth, err)
	}
	deep := Command{Kind: KindTxn, Txn: nestedTxn(maxTxnDepth + 1)}
	_, err := UnmarshalCommand(deep.Marshal(nil))
	wantNested(t, err)

	okRes := Result{Txn: nestedTxnResult(maxTxnDepth)}
	if _, err := UnmarshalResult(okRes.Marshal(nil)); err != nil {
		t.Fatalf("result depth %d: %v", maxTxnDepth, err)
	}
	deepRes := Result{Txn: nestedTxnResult(maxTxnDepth + 1)}
	_, err = UnmarshalResult(deepRes.Marshal(nil))
	wantNested(t, err)
}

func wantNested(t *testing.T, err error) {
	t.Helper()
	wantMalformed(t, err)
	if !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("err = %v, want the depth limit", err)
	}
}

// cmdBytes builds an encoded KindTxn command around raw txn bytes, bypassing Marshal so that
// tests can write what Marshal would not.
func cmdBytes(txn func(e *Encoder)) []byte {
	e := Encoder{}
	e.Byte(commandVersion)
	e.Byte(byte(KindTxn))
	e.Uvarint(0) // client
	e.Uvarint(0) // seq
	e.Uvarint(0) // retry floor
	e.Byte(1)    // txn present
	txn(&e)
	return e.B
}

func TestUnmarshalCommand_Invalid(t *testing.T) {
	txnCmd := func(ops ...Op) []byte {
		return unsealed(&Command{Kind: KindTxn, Txn: &Txn{Success: ops}})
	}
	cmpCmd := func(c Compare) []byte {
		return unsealed(&Command{Kind: KindTxn, Txn: &Txn{Compares: []Compare{c}}})
	}
	version := unsealed(&Command{Kind: KindCompact})
	version[0] = commandVersion - 1
	// opFlags encodes a single op of kind by hand, with flag byte f.
	opFlags := func(kind OpKind, f byte) []byte {
		return cmdBytes(func(e *Encoder) {
			e.Uvarint(0) // compares
			e.Uvarint(1) // success ops
			e.Byte(byte(kind))
			e.Bytes(nil) // key
			switch kind {
			case OpRange:
				e.Bytes(nil)
				e.Varint(0)
				e.Varint(0)
				e.Byte(0)
				e.Byte(0)
				e.Byte(f)
				for range 4 {
					e.Varint(0)
				}
			case OpPut:
				e.Bytes(nil)
				e.Varint(0)
				e.Byte(f)
			case OpDelete:
				e.Bytes(nil)
				e.Byte(f)
			}
			e.Uvarint(0) // failure ops
		})
	}
	// badOpKind pads the op so that the list count passes its bound and the kind is what fails.
	badOpKind := func(kind byte) []byte {
		return cmdBytes(func(e *Encoder) {
			e.Uvarint(0)
			e.Uvarint(1)
			e.Byte(kind)
			e.B = append(e.B, 0, 0, 0)
			e.Uvarint(0)
		})
	}
	// Guard against the hand-built encoding failing for some other reason.
	for _, kind := range []OpKind{OpRange, OpPut, OpDelete} {
		if _, err := UnmarshalCommand(sealed(opFlags(kind, 1))); err != nil {
			t.Fatalf("valid flags for op kind %d: %v", kind, err)
		}
	}
	// Bodies without their checksum: each is sealed below, so that the decoder, not the
	// checksum, must refuse it.
	cases := map[string][]byte{
		"empty":                         nil,
		"version":                       version,
		"kind 0":                        unsealed(&Command{Kind: 0}),
		"kind 9":                        unsealed(&Command{Kind: KindAuth + 1}),
		"auth missing":                  unsealed(&Command{Kind: KindAuth}),
		"auth revision 0":               append(unsealed(&Command{Kind: KindLeaseRevoke, LeaseID: 1}), 0),
		"auth revision on a compaction": unsealed(&Command{Kind: KindCompact, Revision: 3, AuthRev: 2}),
		"auth op 0":                     unsealed(&Command{Kind: KindAuth, Auth: &Auth{Name: "u"}}),
		"auth op past last":             unsealed(&Command{Kind: KindAuth, Auth: &Auth{Op: authOpMax, Name: "u"}}),
		"auth perm type 3":              unsealed(&Command{Kind: KindAuth, Auth: &Auth{Op: AuthRoleGrantPermission, Name: "r", Key: []byte("k"), PermType: 3}}),
		"alarm action 0":                unsealed(&Command{Kind: KindAlarm, AlarmType: AlarmNoSpace, NodeID: "m1"}),
		"alarm action 3":                unsealed(&Command{Kind: KindAlarm, AlarmAction: 3, AlarmType: AlarmNoSpace, NodeID: "m1"}),
		"alarm type 0":                  unsealed(&Command{Kind: KindAlarm, AlarmAction: AlarmActivate, NodeID: "m1"}),
		"alarm type 3":                  unsealed(&Command{Kind: KindAlarm, AlarmAction: AlarmActivate, AlarmType: 3, NodeID: "m1"}),
		"alarm no member":               unsealed(&Command{Kind: KindAlarm, AlarmAction: AlarmActivate, AlarmType: AlarmNoSpace}),
		"nil txn":                       unsealed(&Command{Kind: KindTxn}),
		"grant on a compaction": func() []byte {
			b := unsealed(&Command{Kind: KindCompact, Revision: 1})
			b[1] |= kindGrant
			return b
		}(),
		"grant of lease 0":         unsealed(&Command{Kind: KindTxn, LeaseTTL: 5, Txn: &Txn{}}),
		"grant for a negative TTL": unsealed(&Command{Kind: KindTxn, LeaseID: 1, LeaseTTL: -5, Txn: &Txn{}}),
		"nil nested txn":           txnCmd(Op{Kind: OpTxn}),
		"op kind 0":                badOpKind(0),
		"op kind 5":                badOpKind(byte(OpTxn + 1)),
		"sort order":               txnCmd(Op{Kind: OpRange, SortOrder: SortDescend + 1}),
		"sort target":              txnCmd(Op{Kind: OpRange, SortTarget: SortByValue + 1}),
		"compare target":           cmpCmd(Compare{Target: TargetLease + 1}),
		"compare result":           cmpCmd(Compare{Result: CompareNotEqual + 1}),
		"range flags":              opFlags(OpRange, 1<<3),
		"put flags":                opFlags(OpPut, 1<<3),
		"delete flags":             opFlags(OpDelete, flagIgnoreValue),
		"txn presence 2":           cmdBytes(func(e *Encoder) { e.B[len(e.B)-1] = 2; e.B = append(e.B, 0, 0, 0) }),
		"varint overflow":          append([]byte{commandVersion, byte(KindCompact), 0, 0}, bytes.Repeat([]byte{0xff}, 11)...),
		"huge key length":          cmdBytes(func(e *Encoder) { e.B = append(e.B, 0, 1, byte(OpPut)); e.Uvarint(1 << 62) }),
		"key length past end":      cmdBytes(func(e *Encoder) { e.B = append(e.B, 0, 1, byte(OpPut)); e.Uvarint(5); e.B = append(e.B, "abcd"...) }),
		"huge op count":            cmdBytes(func(e *Encoder) { e.Uvarint(0); e.Uvarint(math.MaxUint64) }),
		"op count past end":        cmdBytes(func(e *Encoder) { e.Uvarint(0); e.Uvarint(2); encodeOp(e, &Op{Kind: OpDelete}) }),
		"huge compare count":       cmdBytes(func(e *Encoder) { e.Uvarint(1 << 40) }),
		"huge checkpoints": func() []byte {
			e := Encoder{B: unsealed(&Command{Kind: KindLeaseCheckpoint})}
			e.B = e.B[:len(e.B)-1]
			e.Uvarint(1 << 50)
			return e.B
		}(),
		"checkpoint count past end": func() []byte {
			b := unsealed(&Command{Kind: KindLeaseCheckpoint, Checkpoints: make([]LeaseCheckpoint, 3)})
			b[len(b)-7] = 4
			return b
		}(),
		"huge node id": func() []byte {
			e := Encoder{B: unsealed(&Command{Kind: KindLeaderStart})}
			e.B = e.B[:len(e.B)-1]
			e.Uvarint(math.MaxUint64)
			return e.B
		}(),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := UnmarshalCommand(sealed(b))
			if c != nil {
				t.Fatalf("decoded %+v", c)
			}
			wantMalformed(t, err)
		})
	}
}

func TestUnmarshalResult_Invalid(t *testing.T) {
	txnRes := func(rs ...OpResult) []byte {
		return (&Result{Txn: &TxnResult{Responses: rs}}).Marshal(nil)
	}
	version := (&Result{}).Marshal(nil)
	version[0] = 0
	presence := (&Result{}).Marshal(nil)
	presence[3] = 2
	cases := map[string][]byte{
		"empty":            nil,
		"version":          version,
		"code":             (&Result{Code: codeMax}).Marshal(nil),
		"code 255":         (&Result{Code: 255}).Marshal(nil),
		"txn presence 2":   presence,
		"op kind 0":        txnRes(OpResult{}),
		"op kind 5":        txnRes(OpResult{Kind: OpTxn + 1}),
		"nil range":        txnRes(OpResult{Kind: OpRange}),
		"nil put":          txnRes(OpResult{Kind: OpPut}),
		"nil delete":       txnRes(OpResult{Kind: OpDelete}),
		"nil txn":          txnRes(OpResult{Kind: OpTxn}),
		"wrong sub-result": txnRes(OpResult{Kind: OpRange, Put: &PutResult{}}),
		"huge response count": func() []byte {
			e := Encoder{B: []byte{resultVersion, 0, 0, 1, 0}}
			e.Uvarint(math.MaxUint64 >> 1)
			return e.B
		}(),
	}
	// Bytes: version, code, revision, presence, succeeded, response count, kind, presence, KV count.
	kvCount := txnRes(OpResult{Kind: OpRange, Range: &RangeResult{}})
	if kvCount[8] != 0 {
		t.Fatalf("KV count byte is %d, want 0", kvCount[8])
	}
	kvCount[8] = 0x7f
	cases["kv count past end"] = kvCount
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			r, err := UnmarshalResult(b)
			if r != nil {
				t.Fatalf("decoded %+v", r)
			}
			wantMalformed(t, err)
		})
	}
}

// TestMinSizes checks the minimum element sizes that bound list counts against the smallest
// encodings actually produced; a minimum that is too large would reject valid input.
func TestMinSizes(t *testing.T) {
	size := func(f func(e *Encoder)) int {
		var e Encoder
		f(&e)
		return len(e.B)
	}
	for target := TargetVersion; target <= TargetLease; target++ {
		if n := size(func(e *Encoder) { encodeCompare(e, &Compare{Target: target}) }); n < minCompareSize {
			t.Errorf("compare target %d encodes in %d bytes < minCompareSize %d", target, n, minCompareSize)
		}
	}
	for kind := OpRange; kind <= OpTxn; kind++ {
		op := Op{Kind: kind}
		if kind == OpTxn {
			op.Txn = &Txn{}
		}
		if n := size(func(e *Encoder) { encodeOp(e, &op) }); n < minOpSize {
			t.Errorf("op kind %d encodes in %d bytes < minOpSize %d", kind, n, minOpSize)
		}
		r := OpResult{Kind: kind, Range: &RangeResult{}, Put: &PutResult{}, Delete: &DeleteResult{}, Txn: &TxnResult{}}
		if n := size(func(e *Encoder) { encodeOpResult(e, &r) }); n < minOpResultSize {
			t.Errorf("op result kind %d encodes in %d bytes < minOpResultSize %d", kind, n, minOpResultSize)
		}
	}
	if n := size(func(e *Encoder) { EncodeKV(e, &KV{}) }); n < minKVSize {
		t.Errorf("KV encodes in %d bytes < minKVSize %d", n, minKVSize)
	}
	if n := size(func(e *Encoder) { e.Varint(0); e.Varint(0) }); n < minCheckpointSize {
		t.Errorf("checkpoint encodes in %d bytes < minCheckpointSize %d", n, minCheckpointSize)
	}
}

// roundTripCommand checks the fuzz property: whatever decodes re-encodes to something that
// decodes to the same value.
func roundTripCommand(t *testing.T, b []byte) {
	c, err := UnmarshalCommand(b)
	if err != nil {
		if !errors.Is(err, ErrMalformed) || c != nil {
			t.Fatalf("UnmarshalCommand = (%v, %v)", c, err)
		}
		return
	}
	b2 := c.Marshal(nil)
	c2, err := UnmarshalCommand(b2)
	if err != nil {
		t.Fatalf("re-decoding %x: %v", b2, err)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("re-decoded command differs\nfirst  %+v\nsecond %+v", c, c2)
	}
}

func roundTripResult(t *testing.T, b []byte) {
	r, err := UnmarshalResult(b)
	if err != nil {
		if !errors.Is(err, ErrMalformed) || r != nil {
			t.Fatalf("UnmarshalResult = (%v, %v)", r, err)
		}
		return
	}
	b2 := r.Marshal(nil)
	r2, err := UnmarshalResult(b2)
	if err != nil {
		t.Fatalf("re-decoding %x: %v", b2, err)
	}
	if !reflect.DeepEqual(r, r2) {
		t.Fatalf("re-decoded result differs\nfirst  %+v\nsecond %+v", r, r2)
	}
}

// FuzzUnmarshalCommand decodes its input as it is, which mostly tests the checksum, and with a
// valid checksum appended, which tests the decoder behind it. Seeds are encodings without
// their checksum.
func FuzzUnmarshalCommand(f *testing.F) {
	for _, tc := range commandCases() {
		b := tc.cmd.Marshal(nil)
		f.Add(b[:len(b)-checksumSize])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		roundTripCommand(t, b)
		roundTripCommand(t, sealed(b))
	})
}

// unsealed returns c's encoding without its checksum.
func unsealed(c *Command) []byte {
	b := c.Marshal(nil)
	return b[:len(b)-checksumSize]
}

// sealed appends b's checksum to b.
func sealed(b []byte) []byte {
	return binary.LittleEndian.AppendUint32(slices.Clip(b), crc32.Checksum(b, crcTable))
}

func FuzzUnmarshalResult(f *testing.F) {
	for _, tc := range resultCases() {
		f.Add(tc.res.Marshal(nil))
	}
	f.Fuzz(roundTripResult)
}

func benchPut() *Command {
	return &Command{
		ID:   RequestID{Client: 0x1234567890abcdef, Seq: 1000},
		Kind: KindTxn,
		Txn:  &Txn{Success: []Op{{Kind: OpPut, Key: bytes.Repeat([]byte("k"), 16), Value: bytes.Repeat([]byte("v"), 256)}}},
	}
}

func BenchmarkCommand_Marshal(b *testing.B) {
	cmd := benchPut()
	b.SetBytes(int64(len(cmd.Marshal(nil))))
	b.ReportAllocs()
	for b.Loop() {
		cmd.Marshal(nil)
	}
}

func BenchmarkUnmarshalCommand(b *testing.B) {
	data := benchPut().Marshal(nil)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := UnmarshalCommand(data); err != nil {
			b.Fatal(err)
		}
	}
}

// ResultHead reads the code and revision of every result, and refuses what UnmarshalResult
// refuses in the head.
func TestResultHead(t *testing.T) {
	for _, tc := range resultCases() {
		t.Run(tc.name, func(t *testing.T) {
			code, rev, err := ResultHead(tc.res.Marshal(nil))
			if err != nil || code != tc.res.Code || rev != tc.res.Revision {
				t.Fatalf("ResultHead = %d, %d, %v; want %d, %d", code, rev, err, tc.res.Code, tc.res.Revision)
			}
		})
	}
	for name, b := range map[string][]byte{
		"empty":   nil,
		"version": {resultVersion + 1, 0, 2},
		"code":    {resultVersion, byte(codeMax), 2},
		"no rev":  {resultVersion, 0},
	} {
		if _, _, err := ResultHead(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}
