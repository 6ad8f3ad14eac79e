package ember_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

func TestStore_QuotaRefusesGrowthUntilCompaction(t *testing.T) {
	const quota = 48 << 10
	c := embertest.NewCluster(t, 3, ember.WithQuotaBackendBytes(quota))
	ctx := ctxFor(t, time.Minute)
	l, f := c.Leader().Store(), c.Followers()[0].Store()
	lease, err := l.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Put(ctx, "leased", "v", ember.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	value := strings.Repeat("x", 1024)
	var full bool
	for i := 0; i < 200 && !full; i++ {
		_, err := f.Put(ctx, "big", value)
		switch {
		case errors.Is(err, ember.ErrNoSpace):
			full = true
		case err != nil:
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("200 KiB of puts never hit a 48 KiB quota")
	}
	// Growth is refused on every member and in every form.
	growth := []struct {
		name string
		do   func() error
	}{
		{"put on the leader", func() error { _, err := l.Put(ctx, "k", "v"); return err }},
		{"put on a follower", func() error { _, err := f.Put(ctx, "k", "v"); return err }},
		{"txn with a put in the else branch", func() error {
			_, err := f.Txn(ctx).If(ember.Compare(ember.Version("big"), ">", 0)).Else(ember.OpPut("k", "v")).Commit()
			return err
		}},
		{"lease grant", func() error { _, err := f.Grant(ctx, 60); return err }},
	}
	for _, g := range growth {
		if err := g.do(); !errors.Is(err, ember.ErrNoSpace) {
			t.Errorf("%s over quota: %v, want ErrNoSpace", g.name, err)
		}
	}
	// Everything that does not add data goes on.
	if _, err := f.Get(ctx, "big"); err != nil {
		t.Errorf("read over quota: %v", err)
	}
	if _, err := f.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Errorf("keepalive over quota: %v", err)
	}
	if _, err := f.Txn(ctx).Then(ember.OpDelete("nothing"), ember.OpGet("big")).Commit(); err != nil {
		t.Errorf("delete-only txn over quota: %v", err)
	}
	if _, err := l.Revoke(ctx, lease.ID); err != nil {
		t.Errorf("revoke over quota: %v", err)
	}
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Compacting drops the superseded versions of "big": the store is under quota again, with no
	// alarm to disarm.
	if _, err := f.Compact(ctx, st.Revision); err != nil {
		t.Fatalf("compact over quota: %v", err)
	}
	waitFor(t, 10*time.Second, "writes accepted after compaction", func() bool {
		_, err := f.Put(ctx, "k", "v")
		return err == nil
	})
	if st2, _ := l.Status(ctx); st2.DBSizeInUse >= quota {
		t.Fatalf("size in use %d after compaction, quota %d", st2.DBSizeInUse, quota)
	}
}

func TestStore_Status_ReportsQuota(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opt    int64
		wQuota int64
	}{
		{"default", 0, 2 << 30},
		{"set", 1 << 20, 1 << 20},
		{"disabled", -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := embertest.NewCluster(t, 1, ember.WithQuotaBackendBytes(tc.opt))
			st, err := c.Leader().Store().Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st.DBSizeQuota != tc.wQuota {
				t.Fatalf("DBSizeQuota = %d, want %d", st.DBSizeQuota, tc.wQuota)
			}
		})
	}
}
