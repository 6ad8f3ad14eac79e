package main

import (
	"os"
	"slices"
	"syscall"
	"time"
)

// fsyncProbe times fdatasync after 4 KiB writes in a temp dir. Every write in both systems waits
// for such syncs, and on a shared machine their latency moves between runs, so the run reports
// it at its start and end.
func fsyncProbe(n int) (p50, p99 time.Duration, err error) {
	f, err := os.CreateTemp("", "ember-bench-fsync-")
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	lat := make([]time.Duration, 0, n)
	for i := range n {
		t0 := time.Now()
		if _, err := f.WriteAt(buf, int64(i%64)*4096); err != nil {
			return 0, 0, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return 0, 0, err
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	return percentile(lat, 50), percentile(lat, 99), nil
}
