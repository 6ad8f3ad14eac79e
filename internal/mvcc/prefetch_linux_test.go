package mvcc

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cachedFraction is the fraction of path's pages in the page cache (mincore of a mapping).
func cachedFraction(t testing.TB, path string) float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	pages := (len(m) + os.Getpagesize() - 1) / os.Getpagesize()
	vec := make([]byte, pages)
	if _, _, e := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return float64(n) / float64(pages)
}

// Load's prefetch brings a file the kernel has dropped from its page cache back into it, in
// large reads, instead of leaving each page to a fault of the walk.
func TestPrefetch_FillsPageCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	data := make([]byte, 3*prefetchChunk+12345)
	rand.Read(data)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil { // dirty pages stay cached
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if c := cachedFraction(t, path); c > 0.5 {
		t.Skipf("the file system keeps %.0f%% of the file cached after POSIX_FADV_DONTNEED (tmpfs?)", 100*c)
	}
	stop := prefetch(path)
	defer stop()
	deadline := time.Now().Add(10 * time.Second)
	for cachedFraction(t, path) < 0.99 {
		if time.Now().After(deadline) {
			t.Fatalf("%.0f%% of the file cached 10 s after the prefetch started", 100*cachedFraction(t, path))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
