package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember/internal/wire"
)

// changeNames renders what st.Changes(from) yields; it fails the test if Changes cannot tell.
func changeNames(t testing.TB, st *State, from int64) string {
	t.Helper()
	var b strings.Builder
	if !st.Changes(from, func(r *Record) bool {
		fmt.Fprintf(&b, "%s.%d ", recordName(r), r.Sub)
		return true
	}) {
		t.Fatalf("Changes(%d) could not read every version", from)
	}
	return b.String()
}

// TestState_OnDisk_ChangesWhileBatchInFlight reads the versions in revision order while a batch
// is taken and being written: its versions are in memory (committing) and, once written, in the
// file too; each must come once, in order, and as the twin held in memory has them. A clone taken
// before the write reads the same after it.
func TestState_OnDisk_ChangesWhileBatchInFlight(t *testing.T) {
	const nKeys = 12
	mem, disk := New(), NewOnDisk(testBackend(t, 0))
	wMem, wDisk := rand.New(rand.NewSource(5)), rand.New(rand.NewSource(5))
	history := func(n int) {
		randomHistory(t, mem, wMem, n, nKeys)
		randomHistory(t, disk, wDisk, n, nKeys)
	}
	agree := func(stage string, st *State) {
		t.Helper()
		for from := int64(0); from <= mem.Rev()+1; from++ {
			if want, got := changeNames(t, mem, from), changeNames(t, st, from); got != want {
				t.Fatalf("%s: Changes(%d):\n got %s\nwant %s", stage, from, got, want)
			}
		}
		if err := st.Check(); err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
	}
	history(30)
	if err := disk.Commit(1); err != nil {
		t.Fatal(err)
	}
	history(20)
	b := disk.TakeBatch(2)
	history(10) // pending, after the batch's versions
	// A compaction into the batch's revisions: it removes versions from history that are in
	// the file, in the batch and pending, and no batch has written their deletion yet.
	if code := mem.Compact(45); code != wire.CodeOK {
		t.Fatal(code)
	}
	disk.Compact(45)
	for mem.CompactStep(15) {
	}
	for disk.CompactStep(15) {
	}
	agree("batch taken", disk)
	before := disk.Clone()
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	agree("batch written, not handed back", disk)
	agree("clone from before the write", before)
	disk.BatchDone(b, nil)
	agree("batch done", disk)
	agree("clone from before the write, batch done", before)
	history(10)
	if code := mem.Compact(63); code != wire.CodeOK {
		t.Fatal(code)
	}
	disk.Compact(63)
	mem.CompactStep(7)
	disk.CompactStep(7) // part of a removal
	agree("removal under way", disk)
	for mem.CompactStep(7) {
	}
	for disk.CompactStep(7) {
	}
	if err := disk.Commit(3); err != nil {
		t.Fatal(err)
	}
	agree("compacted and committed", disk)
}

// TestState_OnDisk_ChangesOfStaleClone: the file of a state with a backend orders its versions,
// so a clone that is not pinned reads them from the newest view. A compaction applied after the
// clone removes versions from that view: reading from at or below its revision must say it
// cannot tell (the watch then reads a newer clone, which answers ErrCompacted), never skip them;
// above it, and for a pinned clone, every version is there.
func TestState_OnDisk_ChangesOfStaleClone(t *testing.T) {
	st, clone, pinned := committedWithClones(t)
	all := changeNames(t, clone, 2)
	if want := "a@2.0 a@3.0 a@4.0 b@5.0 "; all != want {
		t.Fatalf("Changes(2) = %s, want %s", all, want)
	}

	if code := st.Compact(4); code != wire.CodeOK {
		t.Fatal(code)
	}
	for st.CompactStep(10) {
	}
	if err := st.Commit(2); err != nil {
		t.Fatal(err)
	}
	for from := int64(0); from <= 4; from++ {
		if clone.Changes(from, func(*Record) bool { return true }) {
			t.Fatalf("stale clone: Changes(%d) claimed every version", from)
		}
	}
	if got, want := changeNames(t, clone, 5), "b@5.0 "; got != want {
		t.Fatalf("stale clone: Changes(5) = %s, want %s", got, want)
	}
	if got := changeNames(t, pinned, 2); got != all {
		t.Fatalf("pinned clone: Changes(2) = %s, want %s", got, all)
	}
	if got, want := changeNames(t, st, 4), "a@4.0 b@5.0 "; got != want {
		t.Fatalf("live state: Changes(4) = %s, want %s", got, want)
	}
}

// TestState_OnDisk_KeepsNoRevsTree: with a backend the versions' revision order is the file's, not
// a tree on the heap, however the state came to be: written, loaded or restored.
func TestState_OnDisk_KeepsNoRevsTree(t *testing.T) {
	b := testBackend(t, 0)
	st := NewOnDisk(b)
	randomHistory(t, st, rand.New(rand.NewSource(9)), 40, 8)
	if err := st.Commit(1); err != nil {
		t.Fatal(err)
	}
	loaded, _, err := Load(b)
	if err != nil {
		t.Fatal(err)
	}
	restored, _, err := ReadSnapshotTo(bytes.NewReader(encodeSnapshot(t, st, 1)), testBackend(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*State{"written": st, "clone": st.Clone(), "loaded": loaded, "restored": restored} {
		if s.revs != nil {
			t.Errorf("%s state holds a revs tree of %d versions", name, s.revs.Len())
		}
		if err := s.Check(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestState_OnDisk_ChangesHoldNoViewWhileCalling: a watch's catch-up reads the versions of a
// clone that is not pinned and, for each, reads more (previous versions, values), while commits
// go on. If Changes held a view of the file while it called back, a commit that outgrows the
// mapping would wait for that view to end (bbolt remaps only with no read transaction open), and
// the next read in the callback would wait for the commit: both hang.
func TestState_OnDisk_ChangesHoldNoViewWhileCalling(t *testing.T) {
	b, err := openBackend(filepath.Join(t.TempDir(), "state.db"), 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	hung := false
	t.Cleanup(func() {
		if !hung { // closing waits for the hung transactions
			b.Discard()
		}
	})
	st := NewOnDisk(b)
	value := []byte(strings.Repeat("v", 4096))
	put := func(i int) {
		w := st.beginWrite()
		w.put(&wire.Op{Kind: wire.OpPut, Key: fmt.Appendf(nil, "k%04d", i%16), Value: value})
		w.end()
	}
	for i := range 32 {
		put(i)
	}
	if err := st.Commit(1); err != nil {
		t.Fatal(err)
	}
	clone := st.Clone()
	done := make(chan error, 1)
	go func() {
		first := true
		var err error
		complete := clone.Changes(0, func(r *Record) bool {
			if first {
				first = false
				for i := range 1024 { // 4 MiB of values through a 1 MiB mapping
					put(i)
				}
				err = st.Commit(2)
			}
			if _, ok := clone.PrevVersion(r); !ok {
				err = fmt.Errorf("previous version of %s missing", recordName(r))
			}
			_, _ = clone.Value(r)
			return err == nil
		})
		if err == nil && !complete {
			err = errors.New("Changes could not read every version")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		hung = true
		t.Fatal("a commit that remaps the file hung behind a view Changes held while calling back")
	}
}
