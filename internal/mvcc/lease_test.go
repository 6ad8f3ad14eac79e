package mvcc

import (
	"slices"
	"testing"

	"github.com/ember-kv/ember/internal/wire"
)

func leaseKeysMap(st *State, ids ...int64) map[int64][]string {
	out := map[int64][]string{}
	for _, id := range ids {
		out[id] = st.LeaseKeys(id)
	}
	return out
}

// TestState_Leases walks lease attachment rules (§1 Put, §5 Revoke) step by step: a put without a
// lease detaches, a put with another lease moves the key, a delete detaches, and a revoke deletes
// every attached key at one revision in key order.
func TestState_Leases(t *testing.T) {
	st := New()
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
		if !ev.Rec.Tombstone() || ev.Rec.Mod != st.Rev() || ev.Rec.Sub != int32(i) || ev.Prev == nil || ev.Prev.Lease != 1 {
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
	if _, ok := st.leases.Get(&Lease{ID: 1}); ok || len(st.LeaseKeys(1)) != 0 {
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
		{name: "grant TTL too large", code: st.GrantLease(7, MaxLeaseTTL+1), wCode: wire.CodeTTLTooLarge},
		{name: "grant max TTL", code: st.GrantLease(8, MaxLeaseTTL), wCode: wire.CodeOK},
		{name: "grant id 0", code: st.GrantLease(0, 10), wCode: wire.CodeLeaseNotFound},
	}
	for _, tc := range lt {
		if tc.code != tc.wCode {
			t.Errorf("%s: code %d, want %d", tc.name, tc.code, tc.wCode)
		}
	}
	checkTreesAgree(t, st)
}

func codeOf(c wire.Code, _ []Event) wire.Code { return c }

// A transaction that grants a lease does both or neither: its puts may attach keys to the lease
// it grants, in any branch and nested txn, and a refused grant or a refused op leaves the lease
// ungranted and the keys unwritten.
func TestState_ApplyGrantTxn(t *testing.T) {
	put := func(key string, lease int64) wire.Op {
		return wire.Op{Kind: wire.OpPut, Key: []byte(key), Value: []byte("v"), Lease: lease}
	}
	tests := []struct {
		name     string
		id, ttl  int64
		txn      wire.Txn
		wantCode wire.Code
		wantKeys []string // attached to id afterwards
	}{
		{name: "put with the lease", id: 7, ttl: 30, txn: wire.Txn{Success: []wire.Op{put("a", 7), put("b", 7), put("c", 0)}},
			wantKeys: []string{"a", "b"}},
		{name: "else branch, nested", id: 8, ttl: 30, txn: wire.Txn{
			Compares: []wire.Compare{{Key: []byte("nope"), Target: wire.TargetVersion, Result: wire.CompareGreater}},
			Failure:  []wire.Op{{Kind: wire.OpTxn, Txn: &wire.Txn{Success: []wire.Op{put("n", 8)}}}}},
			wantKeys: []string{"n"}},
		{name: "no ops", id: 9, ttl: 30},
		{name: "lease in use", id: 1, ttl: 30, txn: wire.Txn{Success: []wire.Op{put("x", 1)}}, wantCode: wire.CodeLeaseExists},
		{name: "TTL too large", id: 10, ttl: MaxLeaseTTL + 1, txn: wire.Txn{Success: []wire.Op{put("x", 10)}}, wantCode: wire.CodeTTLTooLarge},
		{name: "lease 0", id: 0, ttl: 30, txn: wire.Txn{Success: []wire.Op{put("x", 0)}}, wantCode: wire.CodeLeaseNotFound},
		{name: "a put with another, unknown lease", id: 11, ttl: 30, txn: wire.Txn{Success: []wire.Op{put("x", 11), put("y", 12)}},
			wantCode: wire.CodeLeaseNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := New()
			if code := st.GrantLease(1, 60); code != wire.CodeOK {
				t.Fatal(code)
			}
			rev := st.Rev()
			res, evs := st.ApplyGrantTxn(tc.id, tc.ttl, &tc.txn)
			if res.Code != tc.wantCode {
				t.Fatalf("code %d, want %d", res.Code, tc.wantCode)
			}
			_, granted := st.leases.Get(&Lease{ID: tc.id})
			if tc.wantCode != wire.CodeOK {
				if granted && tc.id != 1 || st.Rev() != rev || len(evs) != 0 {
					t.Fatalf("refused, yet lease granted %v, revision %d → %d, %d events", granted, rev, st.Rev(), len(evs))
				}
				return
			}
			if !granted || res.LeaseID != tc.id || res.LeaseTTL != tc.ttl {
				t.Fatalf("lease %d granted %v, result lease %d TTL %d", tc.id, granted, res.LeaseID, res.LeaseTTL)
			}
			if got := st.LeaseKeys(tc.id); !slices.Equal(got, tc.wantKeys) {
				t.Fatalf("keys of lease %d: %q, want %q", tc.id, got, tc.wantKeys)
			}
		})
	}
}
