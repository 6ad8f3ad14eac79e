package ember_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember"
)

func openDirStore(t testing.TB, dir string, opts ...ember.Option) *ember.Store {
	t.Helper()
	s, err := ember.Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.WaitReady(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	return s
}

// largeValues are values on both sides of the inline limit, up to 64 KiB.
func largeValues() map[string]string {
	vals := map[string]string{}
	for i, n := range []int{0, 1, 128, 129, 1024, 4096, 64 << 10} {
		vals[string(rune('a'+i))] = strings.Repeat(string(rune('A'+i)), n)
	}
	return vals
}

func assertValues(t testing.TB, s *ember.Store, want map[string]string) {
	t.Helper()
	for k, v := range want {
		g, err := s.Get(ctxFor(t, 5*time.Second), k)
		if err != nil {
			t.Fatal(err)
		}
		if len(g.Kvs) != 1 || string(g.Kvs[0].Value) != v {
			t.Fatalf("%s: %d pairs, value of %d bytes, want %d", k, len(g.Kvs), len(g.Kvs[0].Value), len(v))
		}
	}
}

// A member with a data dir keeps its state in its backend, and values longer than 128 bytes only
// there. Every read
// that looks at values sees them as it would in memory: gets, sorts and compares by value,
// previous values of puts and deletes, watch events with previous values; compaction removes the
// old ones; they survive a restart, a restart from a raft snapshot, and a backup and restore.
func TestStore_LargeValues_OnDisk(t *testing.T) {
	dir := t.TempDir()
	s := openDirStore(t, dir)
	ctx := ctxFor(t, 30*time.Second)
	wc := s.Watch(ctx, "", ember.WithPrefix(), ember.WithPrevKV())

	want := largeValues()
	for k, v := range want {
		if _, err := s.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	assertValues(t, s, want)
	if _, err := os.Stat(filepath.Join(dir, "state.db")); err != nil {
		t.Fatalf("no backend: %v", err)
	}

	sorted, err := s.Get(ctx, "", ember.WithPrefix(), ember.WithSort(ember.SortByValue, ember.SortDescend))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(sorted.Kvs); i++ {
		if bytes.Compare(sorted.Kvs[i-1].Value, sorted.Kvs[i].Value) < 0 {
			t.Fatalf("sort by value: %q before %q", sorted.Kvs[i-1].Key, sorted.Kvs[i].Key)
		}
	}
	big := want["g"]
	txn, err := s.Txn(ctx).If(ember.Compare(ember.Value("g"), "=", big)).
		Then(ember.OpPut("g", "", ember.WithIgnoreValue(), ember.WithPrevKV()), ember.OpGet("f")).Commit()
	if err != nil || !txn.Succeeded {
		t.Fatalf("txn comparing a stored value: %v, succeeded %v", err, txn != nil && txn.Succeeded)
	}
	if pk := txn.Responses[0].Put().PrevKv; pk == nil || string(pk.Value) != big {
		t.Fatal("put's previous value is not the stored one")
	}
	if got := txn.Responses[1].Get().Kvs; len(got) != 1 || string(got[0].Value) != want["f"] {
		t.Fatal("txn read of a stored value differs")
	}
	afterKeep := txn.Header.Revision
	del, err := s.Delete(ctx, "f", ember.WithPrevKV())
	if err != nil || len(del.PrevKvs) != 1 || string(del.PrevKvs[0].Value) != want["f"] {
		t.Fatalf("delete's previous value: %v", err)
	}
	delete(want, "f")

	// Events: one put per key, then g kept (its value and previous value both the stored one),
	// then f's delete with its previous value.
	seen := 0
	for seen < len(largeValues())+2 {
		wr := next(t, wc)
		for _, ev := range wr.Events {
			seen++
			switch {
			case ev.Type == ember.EventTypePut && ev.PrevKv == nil:
				if v := largeValues()[string(ev.Kv.Key)]; string(ev.Kv.Value) != v {
					t.Fatalf("put event of %s: %d bytes, want %d", ev.Kv.Key, len(ev.Kv.Value), len(v))
				}
			case ev.Type == ember.EventTypePut:
				if string(ev.Kv.Value) != big || string(ev.PrevKv.Value) != big {
					t.Fatal("event of the kept value differs")
				}
			default:
				if string(ev.PrevKv.Value) != largeValues()["f"] {
					t.Fatal("delete event's previous value differs")
				}
			}
		}
	}

	if _, err := s.Compact(ctx, afterKeep, ember.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "g", ember.WithRev(afterKeep-1)); !errors.Is(err, ember.ErrCompacted) {
		t.Fatalf("get below the compaction: %v, want ErrCompacted", err)
	}
	assertValues(t, s, want)

	var backup bytes.Buffer
	if err := s.Snapshot(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	if err := ember.TakeSnapshot(s); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "h", strings.Repeat("h", 5000)); err != nil { // after the raft snapshot: from the log
		t.Fatal(err)
	}
	want["h"] = strings.Repeat("h", 5000)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	reopened := openDirStore(t, dir)
	assertValues(t, reopened, want)

	restored := t.TempDir()
	if err := ember.Restore(bytes.NewReader(backup.Bytes()), restored); err != nil {
		t.Fatal(err)
	}
	delete(want, "h")
	assertValues(t, openDirStore(t, restored), want)
}

// Defragment gives back the space a compaction freed in the backend, while writes and reads
// go on: every value written before or during it reads back after, and the file shrinks.
func TestStore_Defragment_ReturnsCompactedSpace(t *testing.T) {
	dir := t.TempDir()
	s := openDirStore(t, dir)
	ctx := ctxFor(t, 60*time.Second)
	val := func(i, gen int) string { return strings.Repeat(string(rune('a'+gen)), 4000) + fmt.Sprint(i) }
	want := map[string]string{}
	for gen := range 2 {
		for i := range 200 {
			k := fmt.Sprintf("k%03d", i)
			if _, err := s.Put(ctx, k, val(i, gen)); err != nil {
				t.Fatal(err)
			}
			want[k] = val(i, gen)
		}
	}
	// The old versions must be in the file for their removal to free space there: written this
	// fast they may all still wait for the committer (and be removed before it runs), so commit
	// them, as a raft snapshot does.
	if err := ember.TakeSnapshot(s); err != nil {
		t.Fatal(err)
	}
	g, err := s.Get(ctx, "k000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(ctx, g.Header.Revision, ember.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	before, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Writes during the defragmentation, on keys of their own.
	stop := make(chan struct{})
	done := make(chan map[string]string)
	go func() {
		written := map[string]string{}
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- written
				return
			default:
			}
			// Small values: large ones would fill the pages the compaction freed before the
			// copy, and how many go in depends on timing, which made the freed space vary.
			k, v := fmt.Sprintf("during%04d", i), fmt.Sprint("d", i)
			if _, err := s.Put(ctx, k, v); err != nil {
				t.Error(err)
				done <- written
				return
			}
			written[k] = v
		}
	}()
	d, err := s.Defragment(ctx)
	close(stop)
	maps.Copy(want, <-done)
	if err != nil {
		t.Fatal(err)
	}
	after, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Freed < 200*4000/2 || after.DBSize >= before.DBSize {
		t.Fatalf("freed %d bytes; DBSize %d before, %d after", d.Freed, before.DBSize, after.DBSize)
	}
	assertValues(t, s, want)
	if files, _ := filepath.Glob(filepath.Join(dir, "state.db*")); len(files) != 1 {
		t.Fatalf("backend files after Defragment: %v", files)
	}
}
