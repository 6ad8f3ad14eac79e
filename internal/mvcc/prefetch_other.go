//go:build !linux

package mvcc

import "os"

// chunkFetcher returns a function that has n bytes of f at off read into the page cache, by
// reading them.
func chunkFetcher(f *os.File) func(off, n int64) error {
	buf := make([]byte, prefetchChunk)
	return func(off, n int64) error {
		_, err := f.ReadAt(buf[:n], off)
		return err
	}
}
