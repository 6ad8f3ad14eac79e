package mvcc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ember-kv/ember/internal/wire"
)

// testBackend is an empty backend whose state keeps values up to inlineMax bytes in memory too.
func testBackend(t testing.TB, inlineMax int) *Backend {
	t.Helper()
	b, err := CreateBackend(filepath.Join(t.TempDir(), "state.db"), inlineMax)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Discard() })
	return b
}

// valueReadings renders the reads that look at values beyond a plain range: a sort by value, a
// txn whose compares test values, and a put that keeps the old value (on a throwaway clone).
func valueReadings(t testing.TB, st *State, nKeys int) string {
	t.Helper()
	var b strings.Builder
	op := wire.Op{Kind: wire.OpRange, Key: []byte{0}, End: []byte{0}, SortTarget: wire.SortByValue, SortOrder: wire.SortDescend}
	recs, _, _, code := st.RangeRecords(&op)
	fmt.Fprintf(&b, "by value %d:", code)
	for _, r := range recs {
		v, ok := st.Value(r)
		fmt.Fprintf(&b, "%s=%s(%v),", r.Key, v, ok)
	}
	for i := range nKeys {
		key := fmt.Sprintf("k%02d", i)
		txn := &wire.Txn{
			Compares: []wire.Compare{{Key: []byte(key), Target: wire.TargetValue, Result: wire.CompareGreater, Value: []byte("5")}},
			Success:  []wire.Op{{Kind: wire.OpRange, Key: []byte(key)}},
		}
		res, code := st.ReadTxn(txn)
		if code != wire.CodeOK {
			fmt.Fprintf(&b, " txn %s code %d", key, code)
			continue
		}
		fmt.Fprintf(&b, " txn %s %v", key, res.Txn.Succeeded)
		res, evs := st.Clone().ApplyTxn(&wire.Txn{Success: []wire.Op{{Kind: wire.OpPut, Key: []byte(key), IgnoreValue: true, PrevKV: true}}})
		if res.Code == wire.CodeOK {
			fmt.Fprintf(&b, " keep %s prev %s event %s/%s", key, res.Txn.Responses[0].Put.PrevKV.Value, evs[0].Value, evs[0].PrevValue)
		}
	}
	return b.String()
}

// TestState_OnDisk_EqualsInMemory runs the same random writes and compactions on a state that
// holds every value in memory and on states with a backend (every value stored, or a mix
// by length), syncing the file at random points. After every operation every observable reading
// (reads at several revisions, hashes, watch catch-up, snapshots, reads of values) must be the
// same, and the file-backed state must pass Check (every stored value found). A snapshot of the
// file-backed state read into a new file must read the same again.
func TestState_OnDisk_EqualsInMemory(t *testing.T) {
	const nKeys = 20
	for _, inlineMax := range []int{0, 2} {
		for _, seed := range []int64{1, 2} {
			t.Run(fmt.Sprintf("inline%d/seed%d", inlineMax, seed), func(t *testing.T) {
				ctl := rand.New(rand.NewSource(seed))
				wMem, wDisk := rand.New(rand.NewSource(seed+100)), rand.New(rand.NewSource(seed+100))
				mem, disk := New(), NewOnDisk(testBackend(t, inlineMax))
				stored := 0
				for op := 0; op < 80; op++ {
					switch p := ctl.Intn(10); {
					case p < 5:
						n := 1 + ctl.Intn(4)
						randomHistory(t, mem, wMem, n, nKeys)
						randomHistory(t, disk, wDisk, n, nKeys)
					case p < 6 && disk.rev > disk.compactRev:
						rev := disk.compactRev + 1 + ctl.Int63n(disk.rev-disk.compactRev)
						if code := mem.Compact(rev); code != wire.CodeOK {
							t.Fatalf("compact(%d): code %d", rev, code)
						}
						if code := disk.Compact(rev); code != wire.CodeOK {
							t.Fatalf("compact(%d): code %d", rev, code)
						}
					case p < 8:
						n := 1 + ctl.Intn(6)
						mem.CompactStep(n)
						disk.CompactStep(n)
					}
					stored += len(disk.pending)
					if ctl.Intn(2) == 0 {
						if err := disk.Commit(uint64(op)); err != nil {
							t.Fatal(err)
						}
					}
					revs := make([]int64, 3)
					for i := range revs {
						revs[i] = max(disk.compactRev, 1) + ctl.Int63n(disk.rev-max(disk.compactRev, 1)+1)
					}
					if want, got := stateReadings(t, mem, nKeys, revs), stateReadings(t, disk, nKeys, revs); got != want {
						t.Fatalf("op %d: state on disk differs from the one in memory:\n got %s\nwant %s", op, got, want)
					}
					if want, got := valueReadings(t, mem, nKeys), valueReadings(t, disk, nKeys); got != want {
						t.Fatalf("op %d: value reads differ:\n got %s\nwant %s", op, got, want)
					}
					checkTreesAgree(t, disk)
				}
				if stored == 0 {
					t.Fatal("no value went to the file")
				}
				// Once the removal is done, the file holds exactly the stored values.
				for disk.CompactStep(100) {
				}
				if err := disk.Commit(1000); err != nil {
					t.Fatal(err)
				}
				if inFile, held := versionsInBackend(t, disk), disk.Versions(); inFile != held {
					t.Fatalf("backend holds %d versions, the state %d", inFile, held)
				}
				// What a restarting member loads equals the state it committed.
				loaded, applied, err := Load(disk.backend)
				if err != nil || applied != 1000 {
					t.Fatalf("Load: applied %d, %v", applied, err)
				}
				checkTreesAgree(t, loaded)
				if want, got := stateReadings(t, disk, nKeys, nil), stateReadings(t, loaded, nKeys, nil); got != want {
					t.Fatalf("loaded state differs:\n got %s\nwant %s", got, want)
				}
				if got, want := encodeSnapshot(t, loaded, 1), encodeSnapshot(t, disk, 1); !bytes.Equal(got, want) {
					t.Fatal("loaded state's snapshot differs")
				}
				data := encodeSnapshot(t, disk, 7)
				restored, applied, err := ReadSnapshotTo(bytes.NewReader(data), testBackend(t, inlineMax))
				if err != nil || applied != 7 {
					t.Fatalf("ReadSnapshotTo: applied %d, %v", applied, err)
				}
				if len(restored.pending) != 0 {
					t.Fatalf("restore left %d values pending", len(restored.pending))
				}
				checkTreesAgree(t, restored)
				if want, got := stateReadings(t, disk, nKeys, nil), stateReadings(t, restored, nKeys, nil); got != want {
					t.Fatalf("restored state differs:\n got %s\nwant %s", got, want)
				}
			})
		}
	}
}

// committedWithClones returns a state on disk holding a@2 a@3 a@4 b@5, all committed, with a
// clone of it and a pinned clone (unpinned at cleanup).
func committedWithClones(t testing.TB) (st, clone, pinned *State) {
	t.Helper()
	st = NewOnDisk(testBackend(t, 0))
	for i := range 3 {
		stPut(t, st, "a", fmt.Sprintf("a%d", i), 0)
	}
	stPut(t, st, "b", "b0", 0)
	if err := st.Commit(1); err != nil {
		t.Fatal(err)
	}
	pinned, err := st.Pin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pinned.Unpin)
	return st, st.Clone(), pinned
}

// A clone taken before a compaction may find the values the compaction removed gone: every read
// of them says so (CodeCompacted, or false from Value), never a wrong or empty value, and reads
// of what the compaction kept still work. A pinned clone finds every value.
func TestState_OnDisk_CompactionUnderClones(t *testing.T) {
	st, clone, pinned := committedWithClones(t)
	hashBefore, err := pinned.Hash(3)
	if err != nil {
		t.Fatal(err)
	}

	if code := st.Compact(4); code != wire.CodeOK {
		t.Fatalf("compact: %d", code)
	}
	for st.CompactStep(10) {
	}
	if err := st.Commit(1); err != nil {
		t.Fatal(err)
	}
	checkTreesAgree(t, st)

	// a@3 was superseded at 4 and dropped: the clone's read at 3 misses it.
	if res, code := rangeKeys(clone, &wire.Op{Kind: wire.OpRange, Key: []byte("a"), Revision: 3}); code != wire.CodeCompacted {
		t.Fatalf("clone's read of a at 3: %+v code %d, want CodeCompacted", res, code)
	}
	if _, code := clone.ReadTxn(&wire.Txn{Success: []wire.Op{{Kind: wire.OpRange, Key: []byte("a"), Revision: 2}}}); code != wire.CodeCompacted {
		t.Fatalf("clone's txn read of a at 2: code %d, want CodeCompacted", code)
	}
	if _, err := clone.Hash(3); err == nil {
		t.Fatal("unpinned clone hashed revision 3 with its values gone")
	}
	// What the compaction kept reads as before.
	if res := stGetAt(t, clone, "a", 0); string(res.Kvs[0].Value) != "a2" {
		t.Fatalf("clone's latest a = %q", res.Kvs[0].Value)
	}
	if res := stGetAt(t, clone, "b", 5); string(res.Kvs[0].Value) != "b0" {
		t.Fatalf("clone's b at 5 = %q", res.Kvs[0].Value)
	}
	// The pinned clone still reads everything, and hashes as before.
	if res := stGetAt(t, pinned, "a", 3); string(res.Kvs[0].Value) != "a1" {
		t.Fatalf("pinned a at 3 = %q", res.Kvs[0].Value)
	}
	if h, err := pinned.Hash(3); err != nil || h != hashBefore {
		t.Fatalf("pinned hash at 3: %08x %v, want %08x", h, err, hashBefore)
	}
	if err := pinned.Check(); err != nil {
		t.Fatal(err)
	}
}

// The Applier's own state must never miss a value: if its file loses one, applying a command that
// reads it fails with ErrCorrupt instead of applying with a wrong value.
func TestApplier_OnDisk_MissingValueIsDamage(t *testing.T) {
	vals := testBackend(t, 0)
	a := NewApplier(nil, 1<<20)
	a.SetState(NewOnDisk(vals))
	put := func(index uint64, key, val string, prevKV bool) (Applied, error) {
		cmd := &wire.Command{Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{
			{Kind: wire.OpPut, Key: []byte(key), Value: []byte(val), PrevKV: prevKV}}}}
		return a.Apply(index, cmd.Marshal(nil))
	}
	if _, err := put(1, "k", "v1", false); err != nil {
		t.Fatal(err)
	}
	if err := a.State().Commit(1); err != nil {
		t.Fatal(err)
	}
	// Damage the file: remove k's value behind the state's back.
	a.State().dirty.deletes = append(a.State().dirty.deletes, revPos{2, 0})
	if err := a.State().Commit(1); err != nil {
		t.Fatal(err)
	}
	if _, err := put(2, "k", "v2", true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("apply over a lost value: %v, want ErrCorrupt", err)
	}
}

func versionsInBackend(t testing.TB, st *State) int {
	t.Helper()
	n := 0
	if err := st.backend.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketRevs).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// Everything a snapshot carries (versions, leases, dedup entries, alarms, the auth state, the
// counters) survives a backend: restored from a snapshot into one, loaded back from it as a
// restarting member does, and streamed to another member, the state writes the same snapshot.
func TestBackend_RoundTripsEveryTable(t *testing.T) {
	want := encodeSnapshot(t, richState(t), 42)
	dir := t.TempDir()
	st, applied, err := RestoreStream(bytes.NewReader(want), filepath.Join(dir, "a.db"), 0)
	if err != nil || applied != 42 {
		t.Fatalf("RestoreStream: applied %d, %v", applied, err)
	}
	loaded, applied, err := Load(st.backend)
	if err != nil || applied != 42 {
		t.Fatalf("Load: applied %d, %v", applied, err)
	}
	for loaded.CompactStep(100) { // the removal a load resumes finds nothing to remove
	}
	if got := encodeSnapshot(t, loaded, 42); !bytes.Equal(got, want) {
		t.Fatal("loaded state writes a different snapshot")
	}
	size, rc, err := st.backend.StreamBackend()
	if err != nil {
		t.Fatal(err)
	}
	stream, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || int64(len(stream)) != size {
		t.Fatalf("stream: %d of %d bytes, %v", len(stream), size, err)
	}
	received, applied, err := RestoreStream(bytes.NewReader(stream), filepath.Join(dir, "b.db"), InlineValueMax)
	if err != nil || applied != 42 {
		t.Fatalf("RestoreStream of a backend stream: applied %d, %v", applied, err)
	}
	defer received.backend.Discard()
	for received.CompactStep(100) {
	}
	if got := encodeSnapshot(t, received, 42); !bytes.Equal(got, want) {
		t.Fatal("received state writes a different snapshot")
	}
	st.backend.Discard()
}

// A backend stream damaged anywhere, or cut short, is refused with ErrCorrupt, and leaves no file.
func TestBackend_StreamDamageRefused(t *testing.T) {
	src := NewOnDisk(testBackend(t, 0))
	stPut(t, src, "k", strings.Repeat("v", 500), 0)
	if err := src.Commit(3); err != nil {
		t.Fatal(err)
	}
	_, rc, err := src.backend.StreamBackend()
	if err != nil {
		t.Fatal(err)
	}
	stream, _ := io.ReadAll(rc)
	rc.Close()
	path := filepath.Join(t.TempDir(), "x.db")
	for _, off := range []int{len(backendMagic) + 8 + 100, len(stream) / 2, len(stream) - 1} {
		bad := append([]byte(nil), stream...)
		bad[off] ^= 0x40
		if _, _, err := RestoreStream(bytes.NewReader(bad), path, 0); !errors.Is(err, ErrCorrupt) {
			t.Errorf("byte %d flipped: %v, want ErrCorrupt", off, err)
		}
		if _, err := os.Stat(path); err == nil {
			t.Errorf("byte %d flipped: a file was left", off)
		}
	}
	if _, _, err := RestoreStream(bytes.NewReader(stream[:len(stream)-10]), path, 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("cut short: %v, want ErrCorrupt", err)
	}
}

// A backend entry whose bytes do not match their checksum, in any bucket, makes Load fail with
// ErrCorrupt: a member never starts on a damaged state.
func TestBackend_LoadRefusesDamage(t *testing.T) {
	data := encodeSnapshot(t, richState(t), 42)
	for _, bucket := range [][]byte{bucketRevs, bucketLeases, bucketDedup, bucketMeta} {
		t.Run(string(bucket), func(t *testing.T) {
			st, _, err := RestoreStream(bytes.NewReader(data), filepath.Join(t.TempDir(), "s.db"), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer st.backend.Discard()
			if err := st.backend.db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket(bucket)
				k, v := b.Cursor().Last()
				v = append([]byte(nil), v...)
				v[0] ^= 0x01
				return b.Put(k, v)
			}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := Load(st.backend); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "checksum mismatch") {
				t.Fatalf("Load: %v, want ErrCorrupt for a checksum mismatch", err)
			}
		})
	}
}

// Reads share one read transaction of the backend until a commit replaces it, however many run
// at once: bbolt's Begin locks the whole file, so a transaction per read would serialize them.
// A replaced view ends with its last reader.
func TestBackend_ReadsShareAView(t *testing.T) {
	b := testBackend(t, 0)
	st := NewOnDisk(b)
	stPut(t, st, "a", "a0", 0)
	if err := st.Commit(1); err != nil {
		t.Fatal(err)
	}
	openTxs := func() int { return b.db.Stats().OpenTxN }
	acquire := func() *readView {
		t.Helper()
		v, err := b.acquire()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	first, second := acquire(), acquire()
	if first != second || openTxs() != 1 {
		t.Fatalf("two reads: views %p and %p, %d read transactions, want one shared", first, second, openTxs())
	}
	if res := stGetAt(t, st.Clone(), "a", 0); string(res.Kvs[0].Value) != "a0" {
		t.Fatalf("a = %q", res.Kvs[0].Value)
	}

	stPut(t, st, "a", "a1", 0)
	if err := st.Commit(2); err != nil {
		t.Fatal(err)
	}
	third := acquire()
	if third == first || openTxs() != 2 {
		t.Fatalf("after a commit: view replaced %v, %d read transactions, want the old one open for its readers", third != first, openTxs())
	}
	if res := stGetAt(t, st.Clone(), "a", 0); string(res.Kvs[0].Value) != "a1" {
		t.Fatalf("a after the commit = %q", res.Kvs[0].Value)
	}
	first.release()
	second.release()
	third.release()
	if openTxs() != 1 {
		t.Fatalf("%d read transactions once the readers are done, want the current view's", openTxs())
	}
}

// A commit that outgrows the file's mapping makes bbolt remap it, which waits for every read
// transaction to end, the shared view's too, which would end only after that commit: such a
// commit retires the view first. Without that the commit hangs.
func TestBackend_CommitOutgrowsMapping(t *testing.T) {
	b, err := openBackend(filepath.Join(t.TempDir(), "state.db"), 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Discard() })
	st := NewOnDisk(b)
	value := strings.Repeat("v", 4096)
	done := make(chan error, 1)
	go func() {
		for i := range 1024 { // 4 MiB of values through a 1 MiB mapping
			w := st.beginWrite()
			w.put(&wire.Op{Kind: wire.OpPut, Key: fmt.Appendf(nil, "k%04d", i), Value: []byte(value)})
			w.end()
			if i%64 == 63 {
				if err := st.Commit(uint64(i)); err != nil {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a commit that remaps the file hung behind the shared read view")
	}
	if err := st.Check(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkState_ReadStoredValue reads stored values from a read view by many goroutines at
// once, as serializable gets of values longer than the inline limit do.
func BenchmarkState_ReadStoredValue(b *testing.B) {
	st := NewOnDisk(testBackend(b, 0))
	for i := range 1000 {
		stPut(b, st, fmt.Sprintf("k%04d", i), strings.Repeat("v", 256), 0)
	}
	if err := st.Commit(1); err != nil {
		b.Fatal(err)
	}
	view := st.Clone()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			op := wire.Op{Kind: wire.OpRange, Key: fmt.Appendf(nil, "k%04d", i%1000)}
			r, _, _ := view.KeyRecord(&op)
			vr := view.Values()
			v, ok := vr.Append(nil, r)
			vr.Close()
			if !ok || len(v) != 256 {
				b.Fatal("value not found")
			}
			i++
		}
	})
}

// Overwriting a value kept only in the backend reads it only if the command's result needs it
// (PrevKV, IgnoreValue); the event then lacks it until its owner asks (ReadPrevValues), which
// reads what the apply left unread. Values in memory always come with the event.
func TestState_OnDisk_PrevValueReadOnDemand(t *testing.T) {
	st := NewOnDisk(testBackend(t, 4))
	stPut(t, st, "big", "big-v1", 0)
	stPut(t, st, "small", "s1", 0)
	if err := st.Commit(1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		op       wire.Op
		wantRead bool
		wantPrev string
	}{
		{"stored, nothing needs it", wire.Op{Kind: wire.OpPut, Key: []byte("big"), Value: []byte("big-v2")}, false, "big-v1"},
		{"stored, PrevKV", wire.Op{Kind: wire.OpPut, Key: []byte("big"), Value: []byte("big-v2"), PrevKV: true}, true, "big-v1"},
		{"stored, IgnoreValue", wire.Op{Kind: wire.OpPut, Key: []byte("big"), IgnoreValue: true}, true, "big-v1"},
		{"stored, delete", wire.Op{Kind: wire.OpDelete, Key: []byte("big")}, false, "big-v1"},
		{"inline", wire.Op{Kind: wire.OpPut, Key: []byte("small"), Value: []byte("s2")}, true, "s1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, evs := st.Clone().ApplyTxn(&wire.Txn{Success: []wire.Op{tc.op}})
			if len(evs) != 1 || evs[0].Prev == nil {
				t.Fatalf("events %+v, want one replacing a version", evs)
			}
			if evs[0].PrevRead != tc.wantRead {
				t.Fatalf("PrevRead %v, want %v", evs[0].PrevRead, tc.wantRead)
			}
			st.ReadPrevValues(evs)
			if !evs[0].PrevRead || evs[0].PrevValue != tc.wantPrev {
				t.Fatalf("after ReadPrevValues: %q (read %v), want %q", evs[0].PrevValue, evs[0].PrevRead, tc.wantPrev)
			}
		})
	}
}

// BenchmarkBatch_Write writes a batch as a member under load does: versions, the dedup entries
// of their requests from three proposers, and as many expired entries forgotten.
func BenchmarkBatch_Write(b *testing.B) {
	st := NewOnDisk(testBackend(b, InlineValueMax))
	st.backend.db.NoSync = true // the disk is not what this measures
	const perBatch = 3000
	seq := uint64(0)
	for b.Loop() {
		for i := range perBatch {
			stPut(b, st, fmt.Sprintf("k%05d", i), "v", 0)
			id := wire.RequestID{Client: uint64(i%3 + 1), Seq: seq}
			st.dedup.Set(&DedupEntry{ID: id, Index: seq})
			st.markDedup(id, &DedupEntry{ID: id, Index: seq})
			if seq >= 3*perBatch {
				old := wire.RequestID{Client: uint64(i%3 + 1), Seq: seq - 3*perBatch}
				st.markDedup(old, nil)
			}
			seq++
		}
		if err := st.Commit(seq); err != nil {
			b.Fatal(err)
		}
	}
}

// A ValueReader appends a value from wherever it is held: in its record (inline), pending a
// commit, or only in the file. A version compaction removed from the file after the state was
// cloned reads as missing (the caller answers ErrCompacted or reads a newer view); a pinned
// clone still reads it.
func TestValueReader_Append_WhereverHeld(t *testing.T) {
	st := NewOnDisk(testBackend(t, 4))
	stPut(t, st, "a", "a-v1-stored", 0) // a@2
	stPut(t, st, "a", "a-v2-stored", 0) // a@3
	stPut(t, st, "i", "in", 0)          // i@4, inline
	stPut(t, st, "e", "", 0)            // e@5, empty
	if err := st.Commit(1); err != nil {
		t.Fatal(err)
	}
	stPut(t, st, "p", "p-pending", 0) // p@6, pending
	clone := st.Clone()
	pinned, err := st.Pin()
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Unpin()
	if code := st.Compact(3); code != wire.CodeOK {
		t.Fatalf("compact: %d", code)
	}
	for st.CompactStep(10) {
	}
	if err := st.Commit(2); err != nil {
		t.Fatal(err)
	}
	read := func(s *State, key string, rev int64) (string, bool) {
		t.Helper()
		r, _, code := s.KeyRecord(&wire.Op{Kind: wire.OpRange, Key: []byte(key), Revision: rev})
		if code == wire.CodeCompacted {
			return "", false // the version itself went with the compaction, not only its value
		}
		if code != wire.CodeOK || r == nil {
			t.Fatalf("%s at %d: record %v, code %d", key, rev, r, code)
		}
		vr := s.Values()
		defer vr.Close()
		v, ok := vr.Append([]byte("prefix:"), r)
		if !strings.HasPrefix(string(v), "prefix:") {
			t.Fatalf("%s at %d: %q does not keep what dst held", key, rev, v)
		}
		return string(v[len("prefix:"):]), ok
	}
	for _, tc := range []struct {
		name   string
		st     *State
		key    string
		rev    int64
		want   string
		wantOK bool
	}{
		{"stored", clone, "a", 0, "a-v2-stored", true},
		{"inline", clone, "i", 0, "in", true},
		{"empty", clone, "e", 0, "", true},
		{"pending", clone, "p", 0, "p-pending", true},
		{"compacted under the clone", clone, "a", 2, "", false},
		{"pinned", pinned, "a", 2, "a-v1-stored", true},
		{"live state", st, "a", 0, "a-v2-stored", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v, ok := read(tc.st, tc.key, tc.rev); v != tc.want || ok != tc.wantOK {
				t.Fatalf("%q %v, want %q %v", v, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// storedValue reads a revs entry without decoding all of it: any entry that is not exactly one
// encodeRecord and its checksum is refused, never read past or cut.
func TestStoredValue_Malformed(t *testing.T) {
	k := revKey(revPos{7, 0})
	r := &Record{Key: "key", Create: 7, Mod: 7, Version: 1, Lease: 300}
	e := seal(bucketRevs, k, encodeRecord(r, "value"))
	if v, ok := storedValue(e); !ok || string(v) != "value" {
		t.Fatalf("well-formed: %q %v", v, ok)
	}
	for i := range len(e) {
		if v, ok := storedValue(e[:i]); ok {
			t.Fatalf("cut to %d bytes: read %q", i, v)
		}
	}
	if v, ok := storedValue(append(e[:len(e):len(e)], 0)); ok {
		t.Fatalf("a byte longer: read %q", v)
	}
	bad := bytes.Clone(e)
	bad[len(binary.AppendVarint(binary.AppendVarint(binary.AppendVarint(nil, 7), 1), 300))] = 2 // the tombstone flag
	if v, ok := storedValue(bad); ok {
		t.Fatalf("tombstone byte 2: read %q", v)
	}
}

// The page reader finds every revs entry as bbolt's own lookup does, values that overflow their
// page included, and finds nothing where bbolt finds nothing; a revs bucket small enough to be
// inline is read through bbolt.
func TestPageReader_Get_MatchesBolt(t *testing.T) {
	small := NewOnDisk(testBackend(t, 0))
	stPut(t, small, "k", "v", 0)
	if err := small.Commit(1); err != nil {
		t.Fatal(err)
	}
	if v, err := small.backend.acquire(); err != nil || v.paged {
		t.Fatalf("inline revs: paged %v, %v", v.paged, err)
	} else {
		v.release()
	}

	st := NewOnDisk(testBackend(t, 0))
	sizes := []int{0, 1, 100, 300, 3000, 5000, 20000}
	for i := range 3000 {
		stPut(t, st, fmt.Sprintf("k%05d", i%700), strings.Repeat("v", sizes[i%len(sizes)]), 0)
		if i%500 == 499 {
			if err := st.Commit(uint64(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := st.Commit(3000); err != nil {
		t.Fatal(err)
	}
	v, err := st.backend.acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer v.release()
	if !v.paged {
		t.Fatal("revs of 3000 versions not paged")
	}
	n := 0
	if err := v.revs.ForEach(func(k, want []byte) error {
		n++
		got, found, ok := v.pages.get(k)
		if !ok || !found || !bytes.Equal(got, want) {
			return fmt.Errorf("%x: %d bytes, found %v, ok %v; bbolt has %d bytes", k, len(got), found, ok, len(want))
		}
		// Just past k: no entry (subs of one revision are consecutive, so k+1 may exist).
		past := binary.BigEndian.AppendUint64(bytes.Clone(k[:8]), binary.BigEndian.Uint64(k[8:])+1<<32)
		if got, found, ok := v.pages.get(past); !ok || found != (v.revs.Get(past) != nil) {
			return fmt.Errorf("%x: %d bytes, found %v, ok %v", past, len(got), found, ok)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 3000 {
		t.Fatalf("%d entries, want 3000", n)
	}
	for _, k := range [][]byte{make([]byte, 16), bytes.Repeat([]byte{0xff}, 16), []byte("short")} {
		if _, found, ok := v.pages.get(k); !ok || found {
			t.Fatalf("%x: found %v, ok %v", k, found, ok)
		}
	}
}

// activeFreelist reads the freelist page of the newer of the file's two bbolt meta pages:
// bbolt's "no freelist" (all ones) while commits skip writing it.
func activeFreelist(t testing.TB, path string, pageSize int) uint64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A meta page: a 16-byte page header, then magic, version, page size, flags (4 bytes each),
	// the root bucket (root page, sequence), freelist page, high-water page, txid (8 each).
	const freelistAt, txidAt = 16 + 16 + 16, 16 + 16 + 16 + 16
	var freelist, txid uint64
	for _, off := range []int{0, pageSize} {
		if id := binary.LittleEndian.Uint64(data[off+txidAt:]); id >= txid {
			txid, freelist = id, binary.LittleEndian.Uint64(data[off+freelistAt:])
		}
	}
	return freelist
}

// A closed backend opens without rebuilding its freelist from every page (a third of a
// restart at a million keys): Close writes it, and the next commit goes back to skipping it, so
// that a crash after that open rebuilds it as before.
func TestBackend_Close_WritesFreelist(t *testing.T) {
	const noFreelist = ^uint64(0)
	path := filepath.Join(t.TempDir(), "state.db")
	b, err := CreateBackend(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	st := NewOnDisk(b)
	for i := range 200 {
		stPut(t, st, fmt.Sprintf("k%03d", i%50), strings.Repeat("v", 300), 0)
	}
	if err := st.Commit(1); err != nil {
		t.Fatal(err)
	}
	if code := st.Compact(st.rev); code != wire.CodeOK {
		t.Fatalf("compact: code %d", code)
	}
	for st.CompactStep(1000) {
	}
	if err := st.Commit(2); err != nil {
		t.Fatal(err)
	}
	pageSize := b.db.Info().PageSize
	want := encodeSnapshot(t, st, 2)
	if got := activeFreelist(t, path, pageSize); got != noFreelist {
		t.Fatalf("before Close: freelist page %d, want none (commits skip it)", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := activeFreelist(t, path, pageSize); got == noFreelist {
		t.Fatal("after Close: no freelist written")
	}

	b, err = OpenBackend(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if free := b.db.Stats().FreePageN; free == 0 {
		t.Fatal("reopened: no free pages read from the written freelist")
	}
	loaded, _, err := Load(b)
	if err != nil {
		t.Fatal(err)
	}
	for loaded.CompactStep(1000) {
	}
	if got := encodeSnapshot(t, loaded, 2); !bytes.Equal(got, want) {
		t.Fatal("reopened state differs")
	}
	stPut(t, loaded, "after", "reopen", 0)
	if err := loaded.Commit(3); err != nil {
		t.Fatal(err)
	}
	if got := activeFreelist(t, path, pageSize); got != noFreelist {
		t.Fatalf("a commit after reopening wrote the freelist (page %d)", got)
	}
}

// A page of versions damaged so that bbolt panics reading it is refused with ErrCorrupt: Load
// reads the file on a goroutine of its own, which must turn the panic into the error too.
func TestBackend_LoadRefusesDamagedPage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	b, err := CreateBackend(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	st := NewOnDisk(b)
	for i := range 100 {
		stPut(t, st, fmt.Sprintf("k%03d", i), strings.Repeat("v", 300), 0)
	}
	if err := st.Commit(1); err != nil {
		t.Fatal(err)
	}
	pageSize := b.db.Info().PageSize
	var leaf int
	if err := b.db.View(func(tx *bolt.Tx) error {
		for id := 2; leaf == 0; id++ {
			info, err := tx.Page(id)
			if err != nil || info == nil {
				return fmt.Errorf("no leaf page found: %v", err)
			}
			if info.Type == "leaf" && info.Count > 1 { // a page of versions, not a bucket's root
				leaf = id
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff, 0xff, 0xff, 0x7f}, int64(leaf*pageSize)); err != nil { // the page's id
		t.Fatal(err)
	}
	f.Close()
	b, err = OpenBackend(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, _, err := Load(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Load of a damaged page: %v, want ErrCorrupt", err)
	}
}
