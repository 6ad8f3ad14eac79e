package mvcc

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"weak"

	"github.com/ember-kv/ember/internal/wire"
)

// BenchmarkState_HeapPerKey loads keys of 1 KiB values into a state on disk, committing every
// 1000 puts as a member's Applier does, then overwrites each key once, and reports the Go heap
// in use per key after each phase (load-B/key, overwrite-B/key) and per extra version
// (version-B). Values are only in the backend, so the figures are the index's cost. Run with
// -benchtime=1x; with EMBER_HEAP_PROFILE=file it writes the heap profile after the overwrite
// (go tool pprof -sample_index=inuse_space).
func BenchmarkState_HeapPerKey(b *testing.B) {
	for _, keys := range []int{200_000} {
		b.Run(fmt.Sprint(keys), func(b *testing.B) {
			for range b.N {
				load, over := heapPerKey(b, keys)
				b.ReportMetric(load/float64(keys), "load-B/key")
				b.ReportMetric(over/float64(keys), "overwrite-B/key")
				b.ReportMetric((over-load)/float64(keys), "version-B")
			}
		})
	}
}

// heapPerKey returns the heap in use (bytes, above the heap before) after loading keys keys
// and after overwriting each once.
func heapPerKey(b *testing.B, keys int) (load, over float64) {
	b.Helper()
	value := make([]byte, 1024)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	inUse := func() float64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapInuse)
	}
	base := inUse()
	st := NewOnDisk(testBackend(b, InlineValueMax))
	applied := uint64(0)
	putAll(b, st, keys, value, &applied)
	load = inUse() - base
	putAll(b, st, keys, value, &applied)
	over = inUse() - base
	if p := os.Getenv("EMBER_HEAP_PROFILE"); p != "" {
		writeHeapProfile(b, p)
	}
	runtime.KeepAlive(st)
	return load, over
}

// putAll puts keys "scale/%08d" with value into st, committing every 1000 puts and at the end,
// as a member's Applier does; applied counts the puts.
func putAll(tb testing.TB, st *State, keys int, value []byte, applied *uint64) {
	tb.Helper()
	for i := range keys {
		op := wire.Op{Kind: wire.OpPut, Key: fmt.Appendf(nil, "scale/%08d", i), Value: value}
		w := st.beginWrite()
		w.put(&op)
		w.end()
		if *applied++; *applied%1000 == 0 {
			if err := st.Commit(*applied); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := st.Commit(*applied); err != nil {
		tb.Fatal(err)
	}
}

// writeHeapProfile writes the heap profile to path, for pprof -sample_index=inuse_space.
func writeHeapProfile(b *testing.B, path string) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// TestState_OnDisk_KeepsNoSupersededRecord: with a backend, a key's older versions are listed in
// its record, not held as records, so once a batch has written them, the records of overwritten
// and compacted versions must be garbage, whether or not a read view was taken meanwhile. Keys
// are loaded in order, as a bulk load does, so that the keys tree splits its nodes as it grows.
func TestState_OnDisk_KeepsNoSupersededRecord(t *testing.T) {
	for _, clone := range []bool{false, true} {
		t.Run(fmt.Sprintf("clone=%v", clone), func(t *testing.T) {
			const keys = 5000
			st := NewOnDisk(testBackend(t, 0))
			var first []weak.Pointer[Record]
			for round := range 3 {
				for i := range keys {
					op := wire.Op{Kind: wire.OpPut, Key: fmt.Appendf(nil, "key/%06d", i), Value: []byte("value")}
					w := st.beginWrite()
					w.put(&op)
					if evs := w.end(); round == 0 {
						first = append(first, weak.Make(evs[0].Rec))
					}
				}
				if round == 1 && clone {
					runtime.KeepAlive(st.Clone()) // a read view, taken and dropped
				}
				if err := st.Commit(uint64(round + 1)); err != nil {
					t.Fatal(err)
				}
			}
			if code := compactFully(st, st.Rev()); code != wire.CodeOK {
				t.Fatalf("compact: code %d", code)
			}
			if err := st.Commit(4); err != nil {
				t.Fatal(err)
			}
			checkTreesAgree(t, st)
			runtime.GC()
			kept := 0
			for _, p := range first {
				if p.Value() != nil {
					kept++
				}
			}
			if kept > 0 {
				t.Fatalf("%d of the %d records of the first round are still reachable", kept, keys)
			}
			if n := st.Versions(); n != keys {
				t.Fatalf("%d versions held after compacting, want %d", n, keys)
			}
		})
	}
}
