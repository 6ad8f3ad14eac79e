package mvcc

import (
	"os"

	"golang.org/x/sys/unix"
)

// chunkFetcher returns a function that has n bytes of f at off read into the page cache. On
// Linux that is a readahead request (POSIX_FADV_WILLNEED): nothing is copied, and pages already
// cached cost only their lookup. The kernel caps one request at its readahead window, so the
// file is asked for a chunk at a time.
func chunkFetcher(f *os.File) func(off, n int64) error {
	fd := int(f.Fd())
	return func(off, n int64) error { return unix.Fadvise(fd, off, n, unix.FADV_WILLNEED) }
}
