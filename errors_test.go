package ember_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember"
)

// Every exported error, from a request that must produce it, with nothing written: G6's table
// of limits and bad input.
func TestErrors_EveryLimitWritesNothing(t *testing.T) {
	s := openMemStore(t, ember.WithMaxTxnOps(4), ember.WithMaxRequestBytes(4096), ember.WithQuotaBackendBytes(1<<20))
	ctx := ctxFor(t, time.Minute)
	for i := 0; i < 5; i++ {
		if _, err := s.Put(ctx, "k", fmt.Sprint(i)); err != nil { // revisions 2..6
			t.Fatal(err)
		}
	}
	if _, err := s.Compact(ctx, 4); err != nil {
		t.Fatal(err)
	}
	lease, err := s.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	ops := func(n int) []ember.Op {
		var out []ember.Op
		for i := 0; i < n; i++ {
			out = append(out, ember.OpPut(fmt.Sprintf("m%d", i), "v"))
		}
		return out
	}
	tests := []struct {
		name string
		do   func() error
		wErr error
	}{
		{"put empty key", func() error { _, err := s.Put(ctx, "", "v"); return err }, ember.ErrEmptyKey},
		{"get empty key", func() error { _, err := s.Get(ctx, ""); return err }, ember.ErrEmptyKey},
		{"delete empty key", func() error { _, err := s.Delete(ctx, ""); return err }, ember.ErrEmptyKey},
		{"compare on empty key", func() error {
			_, err := s.Txn(ctx).If(ember.Compare(ember.Version(""), "=", 0)).Commit()
			return err
		}, ember.ErrEmptyKey},
		{"request over MaxRequestBytes", func() error { _, err := s.Put(ctx, "big", strings.Repeat("x", 5000)); return err }, ember.ErrRequestTooLarge},
		{"txn over MaxTxnOps", func() error { _, err := s.Txn(ctx).Then(ops(5)...).Commit(); return err }, ember.ErrTooManyOps},
		{"nested txn over the shared budget", func() error {
			_, err := s.Txn(ctx).Then(ember.OpPut("a", "1"), ember.OpTxn(nil, ops(3), nil)).Commit()
			return err
		}, ember.ErrTooManyOps},
		{"duplicate key in txn", func() error {
			_, err := s.Txn(ctx).Then(ember.OpPut("d", "1"), ember.OpPut("d", "2")).Commit()
			return err
		}, ember.ErrDuplicateKey},
		{"put inside a deleted range", func() error {
			_, err := s.Txn(ctx).Then(ember.OpDelete("d", ember.WithPrefix()), ember.OpPut("d1", "2")).Commit()
			return err
		}, ember.ErrDuplicateKey},
		{"unknown lease", func() error { _, err := s.Put(ctx, "l", "v", ember.WithLease(12345)); return err }, ember.ErrLeaseNotFound},
		{"revoke unknown lease", func() error { _, err := s.Revoke(ctx, 12345); return err }, ember.ErrLeaseNotFound},
		{"keepalive unknown lease", func() error { _, err := s.KeepAliveOnce(ctx, 12345); return err }, ember.ErrLeaseNotFound},
		{"TTL too large", func() error { _, err := s.Grant(ctx, 9_000_000_001); return err }, ember.ErrTTLTooLarge},
		{"read below compaction", func() error { _, err := s.Get(ctx, "k", ember.WithRev(3)); return err }, ember.ErrCompacted},
		{"compact again", func() error { _, err := s.Compact(ctx, 4); return err }, ember.ErrCompacted},
		{"read in the future", func() error { _, err := s.Get(ctx, "k", ember.WithRev(1000)); return err }, ember.ErrFutureRev},
		{"compact in the future", func() error { _, err := s.Compact(ctx, 1000); return err }, ember.ErrFutureRev},
		{"txn read below compaction", func() error {
			_, err := s.Txn(ctx).Then(ember.OpPut("z", "1"), ember.OpGet("k", ember.WithRev(2))).Commit()
			return err
		}, ember.ErrCompacted},
		{"ignore value on a missing key", func() error { _, err := s.Put(ctx, "nope", "", ember.WithIgnoreValue()); return err }, ember.ErrKeyNotFound},
		{"ignore value with a value", func() error { _, err := s.Put(ctx, "k", "v", ember.WithIgnoreValue()); return err }, ember.ErrValueProvided},
		{"ignore lease with a lease", func() error {
			_, err := s.Put(ctx, "k", "v", ember.WithIgnoreLease(), ember.WithLease(lease.ID))
			return err
		}, ember.ErrLeaseProvided},
		{"member not found", func() error { return s.RemoveMember(ctx, "ghost") }, ember.ErrMemberNotFound},
		{"member exists", func() error { return s.AddMember(ctx, s.ID(), "127.0.0.1:1") }, ember.ErrMemberExists},
		{"promote an unknown member", func() error { return s.PromoteMember(ctx, "ghost") }, ember.ErrMemberNotFound},
		{"context deadline", func() error {
			dctx, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
			defer cancel()
			_, err := s.Get(dctx, "k")
			return err
		}, context.DeadlineExceeded},
		{"corrupt backup", func() error {
			return ember.Restore(bytes.NewReader([]byte("EMBERSN1garbage")), filepath.Join(t.TempDir(), "r"))
		}, ember.ErrCorrupt},
	}
	before, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if !errors.Is(err, tc.wErr) {
				t.Fatalf("err = %v, want %v", err, tc.wErr)
			}
		})
	}
	after, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Revision != before.Revision || after.Keys != before.Keys {
		t.Fatalf("bad input wrote: revision %d → %d, keys %d → %d", before.Revision, after.Revision, before.Keys, after.Keys)
	}
	// A closed store says so.
	s.Close()
	if _, err := s.Put(ctx, "k", "v"); !errors.Is(err, ember.ErrStopped) {
		t.Fatalf("put after Close: %v, want ErrStopped", err)
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, ember.ErrStopped) {
		t.Fatalf("get after Close: %v, want ErrStopped", err)
	}
}
