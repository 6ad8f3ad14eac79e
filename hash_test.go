package ember_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

func TestStore_HashKV_AgreesAcrossMembers(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := ctxFor(t, time.Minute)
	l := c.Leader().Store()
	for i := 0; i < 100; i++ {
		if _, err := l.Put(ctx, fmt.Sprintf("h/%d", i%7), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.Delete(ctx, "h/3")
	l.Compact(ctx, 50)
	final, _ := l.Put(ctx, "h/last", "v")
	c.WaitReady()
	var want *ember.HashKVResponse
	for _, m := range c.Running() {
		waitFor(t, 10*time.Second, "member applied everything", func() bool {
			st, _ := m.Store().Status(ctx)
			return st.Revision >= final.Header.Revision
		})
		got, err := m.Store().HashKV(ctx, final.Header.Revision)
		if err != nil {
			t.Fatal(err)
		}
		if want == nil {
			want = got
		} else if got.Hash != want.Hash || got.CompactRevision != want.CompactRevision {
			t.Fatalf("%s: hash %x (compact %d), first member %x (compact %d)", m.ID, got.Hash, got.CompactRevision, want.Hash, want.CompactRevision)
		}
	}
	// A hash at an older revision differs, and one at a compacted revision is refused.
	older, err := l.HashKV(ctx, final.Header.Revision-1)
	if err != nil || older.Hash == want.Hash {
		t.Fatalf("hash at an older revision: %v, %x", err, older.Hash)
	}
	if _, err := l.HashKV(ctx, 10); err == nil {
		t.Fatal("HashKV below the compaction revision succeeded")
	}
}
