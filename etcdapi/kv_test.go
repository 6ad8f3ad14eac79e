package etcdapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ember-kv/ember"
)

func keysOf(r *clientv3.GetResponse) []string {
	var out []string
	for _, kv := range r.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), "k/"))
	}
	return out
}

func TestKV_Range_Options(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		ra := mustPut(t, cli, "k/a", "old").Header.Revision
		rb := mustPut(t, cli, "k/b", "y").Header.Revision
		rc := mustPut(t, cli, "k/c", "x").Header.Revision
		mustPut(t, cli, "k/a", "z")
		mustPut(t, cli, "k/d", "w")

		tests := []struct {
			name      string
			key       string
			opts      []clientv3.OpOption
			wKeys     []string
			wMore     bool
			wCount    int64
			wNoValues bool
			wFirstVal string
		}{
			{name: "prefix", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix()}, wKeys: []string{"a", "b", "c", "d"}, wCount: 4, wFirstVal: "z"},
			{name: "limit", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(2)}, wKeys: []string{"a", "b"}, wMore: true, wCount: 4},
			{name: "sort mod descend", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend)}, wKeys: []string{"d", "a", "c", "b"}, wCount: 4},
			{name: "sort value without order ascends", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByValue, clientv3.SortNone)}, wKeys: []string{"d", "c", "b", "a"}, wCount: 4},
			{name: "sort create descend with limit", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(1)}, wKeys: []string{"d"}, wMore: true, wCount: 4},
			{name: "sort version descend", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByVersion, clientv3.SortDescend), clientv3.WithLimit(1)}, wKeys: []string{"a"}, wMore: true, wCount: 4},
			{name: "revision", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(rc)}, wKeys: []string{"a", "b", "c"}, wCount: 3, wFirstVal: "old"},
			{name: "min mod revision", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMinModRev(rc)}, wKeys: []string{"a", "c", "d"}, wCount: 4},
			{name: "max mod revision", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMaxModRev(rc)}, wKeys: []string{"b", "c"}, wCount: 4},
			{name: "min create revision", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMinCreateRev(rb)}, wKeys: []string{"b", "c", "d"}, wCount: 4},
			{name: "max create revision", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMaxCreateRev(ra)}, wKeys: []string{"a"}, wCount: 4},
			{name: "keys only", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}, wKeys: []string{"a", "b", "c", "d"}, wCount: 4, wNoValues: true},
			{name: "count only", key: "k/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}, wCount: 4},
			{name: "serializable", key: "k/b", opts: []clientv3.OpOption{clientv3.WithSerializable()}, wKeys: []string{"b"}, wCount: 1, wFirstVal: "y"},
			{name: "from key", key: "k/c", opts: []clientv3.OpOption{clientv3.WithFromKey()}, wKeys: []string{"c", "d"}, wCount: 2},
			{name: "range", key: "k/b", opts: []clientv3.OpOption{clientv3.WithRange("k/d")}, wKeys: []string{"b", "c"}, wCount: 2},
			{name: "missing key", key: "k/zz", wCount: 0},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				r, err := cli.Get(testCtx(t), tc.key, tc.opts...)
				if err != nil {
					t.Fatalf("Get: %v", err)
				}
				if got := keysOf(r); !slices.Equal(got, tc.wKeys) {
					t.Errorf("keys = %v, want %v", got, tc.wKeys)
				}
				if r.More != tc.wMore || r.Count != tc.wCount {
					t.Errorf("more, count = %v, %d; want %v, %d", r.More, r.Count, tc.wMore, tc.wCount)
				}
				for _, kv := range r.Kvs {
					if tc.wNoValues && len(kv.Value) != 0 {
						t.Errorf("%s has value %q with keys-only", kv.Key, kv.Value)
					}
				}
				if tc.wFirstVal != "" && (len(r.Kvs) == 0 || string(r.Kvs[0].Value) != tc.wFirstVal) {
					t.Errorf("first value: got %v, want %q", r.Kvs, tc.wFirstVal)
				}
			})
		}
	})
}

func TestKV_Put_Options(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		ctx := testCtx(t)
		lease, err := cli.Grant(ctx, 60)
		if err != nil {
			t.Fatalf("Grant: %v", err)
		}
		first := mustPut(t, cli, "p", "v1", clientv3.WithLease(lease.ID))
		if first.PrevKv != nil {
			t.Errorf("first put PrevKv = %v, want nil", first.PrevKv)
		}
		r := mustPut(t, cli, "p", "v2", clientv3.WithPrevKV(), clientv3.WithIgnoreLease())
		if r.PrevKv == nil || string(r.PrevKv.Value) != "v1" || r.PrevKv.ModRevision != first.Header.Revision {
			t.Errorf("PrevKv = %v, want v1 at %d", r.PrevKv, first.Header.Revision)
		}
		mustPut(t, cli, "p", "", clientv3.WithIgnoreValue(), clientv3.WithIgnoreLease())
		g, err := cli.Get(ctx, "p")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if kv := g.Kvs[0]; string(kv.Value) != "v2" || kv.Lease != int64(lease.ID) || kv.Version != 3 {
			t.Errorf("after ignore-value put: %v, want value v2, lease %x, version 3", kv, lease.ID)
		}
	})
}

func TestKV_DeleteRange_PrevKV(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		for _, k := range []string{"d/1", "d/2", "e"} {
			mustPut(t, cli, k, "v"+k)
		}
		r, err := cli.Delete(testCtx(t), "d/", clientv3.WithPrefix(), clientv3.WithPrevKV())
		if err != nil {
			t.Fatalf("Delete: %v", err)
		}
		var prev []string
		for _, kv := range r.PrevKvs {
			prev = append(prev, string(kv.Key)+"="+string(kv.Value))
		}
		if wPrev := []string{"d/1=vd/1", "d/2=vd/2"}; r.Deleted != 2 || !slices.Equal(prev, wPrev) {
			t.Errorf("deleted %d, prev %v; want 2, %v", r.Deleted, prev, wPrev)
		}
		r, err = cli.Delete(testCtx(t), "nothing")
		if err != nil || r.Deleted != 0 {
			t.Errorf("delete of a missing key: %v, %v", r, err)
		}
	})
}

func TestKV_Txn_Compares(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		ctx := testCtx(t)
		lease, err := cli.Grant(ctx, 60)
		if err != nil {
			t.Fatalf("Grant: %v", err)
		}
		rev := mustPut(t, cli, "t/a", "v", clientv3.WithLease(lease.ID)).Header.Revision
		mustPut(t, cli, "t/b", "v")

		tests := []struct {
			name string
			cmp  clientv3.Cmp
			w    bool
		}{
			{"version equal", clientv3.Compare(clientv3.Version("t/a"), "=", 1), true},
			{"version greater", clientv3.Compare(clientv3.Version("t/a"), ">", 1), false},
			{"create equal", clientv3.Compare(clientv3.CreateRevision("t/a"), "=", rev), true},
			{"mod less", clientv3.Compare(clientv3.ModRevision("t/a"), "<", rev), false},
			{"value equal", clientv3.Compare(clientv3.Value("t/a"), "=", "v"), true},
			{"value not equal", clientv3.Compare(clientv3.Value("t/a"), "!=", "v"), false},
			{"lease equal", clientv3.Compare(clientv3.LeaseValue("t/a"), "=", lease.ID), true},
			{"missing key version", clientv3.Compare(clientv3.Version("t/none"), "=", 0), true},
			{"prefix value", clientv3.Compare(clientv3.Value("t/"), "=", "v").WithPrefix(), true},
			{"range mod greater", clientv3.Compare(clientv3.ModRevision("t/a"), ">", rev).WithRange("t/c"), false},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				r, err := cli.Txn(testCtx(t)).If(tc.cmp).Commit()
				if err != nil {
					t.Fatalf("Commit: %v", err)
				}
				if r.Succeeded != tc.w {
					t.Errorf("succeeded = %v, want %v", r.Succeeded, tc.w)
				}
			})
		}
	})
}

func TestKV_Txn_Nested(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		rev := mustPut(t, cli, "n/a", "1").Header.Revision
		inner := clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value("n/a"), "=", "2")},
			[]clientv3.Op{clientv3.OpPut("n/b", "then")},
			[]clientv3.Op{clientv3.OpPut("n/b", "else"), clientv3.OpGet("n/a"), clientv3.OpDelete("n/c")})
		r, err := cli.Txn(testCtx(t)).
			If(clientv3.Compare(clientv3.ModRevision("n/a"), "=", rev)).
			Then(inner, clientv3.OpGet("n/", clientv3.WithPrefix(), clientv3.WithCountOnly())).
			Commit()
		if err != nil {
			t.Fatalf("Commit: %v", err)
		}
		if !r.Succeeded || len(r.Responses) != 2 {
			t.Fatalf("outer: succeeded %v with %d responses", r.Succeeded, len(r.Responses))
		}
		in := r.Responses[0].GetResponseTxn()
		if in == nil || in.Succeeded || len(in.Responses) != 3 {
			t.Fatalf("inner txn response = %v, want the else branch's 3 responses", in)
		}
		if got := in.Responses[1].GetResponseRange(); got == nil || string(got.Kvs[0].Value) != "1" {
			t.Errorf("inner get = %v, want n/a=1", got)
		}
		if got := in.Responses[0].GetResponsePut().Header.Revision; got != r.Header.Revision {
			t.Errorf("inner put revision %d, want the txn's %d", got, r.Header.Revision)
		}
		if got := r.Responses[1].GetResponseRange().Count; got != 2 {
			t.Errorf("count after the inner put = %d, want 2", got)
		}
	})
}

func TestKV_Errors(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		for i := range 3 {
			mustPut(t, cli, "e", fmt.Sprint(i))
		}
		compactRev := mustPut(t, cli, "e", "last").Header.Revision
		if _, err := cli.Compact(testCtx(t), compactRev); err != nil {
			t.Fatalf("Compact: %v", err)
		}
		manyOps := make([]clientv3.Op, 129)
		for i := range manyOps {
			manyOps[i] = clientv3.OpPut(fmt.Sprintf("many/%d", i), "v")
		}
		canceled, cancel := context.WithCancel(context.Background())
		cancel()

		tests := []struct {
			name string
			do   func(ctx context.Context) error
			wErr error
		}{
			{"empty key put", func(ctx context.Context) error { _, err := cli.Put(ctx, "", "v"); return err }, rpctypes.ErrEmptyKey},
			{"empty key get", func(ctx context.Context) error { _, err := cli.Get(ctx, ""); return err }, rpctypes.ErrEmptyKey},
			{"empty key delete", func(ctx context.Context) error { _, err := cli.Delete(ctx, ""); return err }, rpctypes.ErrEmptyKey},
			{"empty key compare", func(ctx context.Context) error {
				_, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(""), "=", "x")).Commit()
				return err
			}, rpctypes.ErrEmptyKey},
			{"compacted get", func(ctx context.Context) error {
				_, err := cli.Get(ctx, "e", clientv3.WithRev(compactRev-1))
				return err
			}, rpctypes.ErrCompacted},
			{"compacted compact", func(ctx context.Context) error { _, err := cli.Compact(ctx, compactRev-1); return err }, rpctypes.ErrCompacted},
			{"future get", func(ctx context.Context) error {
				_, err := cli.Get(ctx, "e", clientv3.WithRev(compactRev+100))
				return err
			}, rpctypes.ErrFutureRev},
			{"future compact", func(ctx context.Context) error { _, err := cli.Compact(ctx, compactRev+100); return err }, rpctypes.ErrFutureRev},
			{"ignore value of missing key", func(ctx context.Context) error {
				_, err := cli.Put(ctx, "missing", "", clientv3.WithIgnoreValue())
				return err
			}, rpctypes.ErrKeyNotFound},
			{"value with ignore value", func(ctx context.Context) error {
				_, err := cli.Put(ctx, "e", "v", clientv3.WithIgnoreValue())
				return err
			}, rpctypes.ErrValueProvided},
			{"unknown lease", func(ctx context.Context) error {
				_, err := cli.Put(ctx, "e", "v", clientv3.WithLease(12345))
				return err
			}, rpctypes.ErrLeaseNotFound},
			{"revoke unknown lease", func(ctx context.Context) error { _, err := cli.Revoke(ctx, 12345); return err }, rpctypes.ErrLeaseNotFound},
			{"duplicate key", func(ctx context.Context) error {
				_, err := cli.Txn(ctx).Then(clientv3.OpPut("d", "1"), clientv3.OpPut("d", "2")).Commit()
				return err
			}, rpctypes.ErrDuplicateKey},
			{"too many ops", func(ctx context.Context) error { _, err := cli.Txn(ctx).Then(manyOps...).Commit(); return err }, rpctypes.ErrTooManyOps},
			{"request too large", func(ctx context.Context) error {
				_, err := cli.Put(ctx, "big", strings.Repeat("x", 1600<<10))
				return err
			}, rpctypes.ErrRequestTooLarge},
			{"canceled context", func(context.Context) error { _, err := cli.Get(canceled, "e"); return err }, context.Canceled},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if err := tc.do(testCtx(t)); !errors.Is(err, tc.wErr) {
					t.Errorf("err = %v, want %v", err, tc.wErr)
				}
			})
		}
	})
}

func TestKV_Compact_Physical(t *testing.T) {
	forEachTransport(t, func(t *testing.T, _ *ember.Store, cli *clientv3.Client) {
		mustPut(t, cli, "c", "1")
		rev := mustPut(t, cli, "c", "2").Header.Revision
		r, err := cli.Compact(testCtx(t), rev, clientv3.WithCompactPhysical())
		if err != nil {
			t.Fatalf("Compact: %v", err)
		}
		if r.Header.Revision < rev {
			t.Errorf("compact header revision %d, want at least %d", r.Header.Revision, rev)
		}
		if _, err := cli.Get(testCtx(t), "c", clientv3.WithRev(rev-1)); !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("read below the compaction: %v, want %v", err, rpctypes.ErrCompacted)
		}
	})
}

func TestHeader_Fields(t *testing.T) {
	forEachTransport(t, func(t *testing.T, st *ember.Store, cli *clientv3.Client) {
		ctx := testCtx(t)
		put := mustPut(t, cli, "h", "v")
		status, err := st.Status(ctx)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		members, err := cli.MemberList(ctx)
		if err != nil {
			t.Fatalf("MemberList: %v", err)
		}
		get, err := cli.Get(ctx, "h")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		wMember := memberID(st.ID())
		for _, h := range []struct {
			name string
			h    interface {
				GetClusterId() uint64
				GetMemberId() uint64
				GetRaftTerm() uint64
			}
		}{{"put", put.Header}, {"get", get.Header}, {"member list", members.Header}} {
			if h.h.GetClusterId() == 0 || h.h.GetClusterId() != put.Header.ClusterId {
				t.Errorf("%s cluster ID %x, want the put's %x (non-zero)", h.name, h.h.GetClusterId(), put.Header.ClusterId)
			}
			if h.h.GetMemberId() != wMember || h.h.GetRaftTerm() != status.RaftTerm {
				t.Errorf("%s member %x term %d, want %x, %d", h.name, h.h.GetMemberId(), h.h.GetRaftTerm(), wMember, status.RaftTerm)
			}
		}
		if get.Header.Revision != put.Header.Revision || put.Header.Revision != status.Revision {
			t.Errorf("revisions: put %d, get %d, status %d", put.Header.Revision, get.Header.Revision, status.Revision)
		}
		if len(members.Members) != 1 || members.Members[0].ID != wMember || members.Members[0].Name != st.ID() {
			t.Errorf("members = %v, want one with ID %x named %s", members.Members, wMember, st.ID())
		}
	})
}
