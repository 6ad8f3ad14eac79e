package ember_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ember-kv/ember"
)

// BenchmarkStore_PutDuringCompact measures what a compaction costs the writes and linearizable
// reads running beside it: each iteration overwrites compactKeys keys (compactKeys superseded
// versions), then compacts them away while one client puts and another reads in a loop, and
// reports the slowest put and get seen during the compaction. Run with
//
//	go test -run xxx -bench PutDuringCompact -benchtime 3x
func BenchmarkStore_PutDuringCompact(b *testing.B) {
	const compactKeys = 200_000
	s, err := ember.Open("")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	value := strings.Repeat("v", 64)
	writeAll := func() int64 {
		var rev int64
		for i := 0; i < compactKeys; i += 100 {
			ops := make([]ember.Op, 100)
			for j := range ops {
				ops[j] = ember.OpPut(fmt.Sprintf("k%07d", i+j), value)
			}
			resp, err := s.Txn(ctx).Then(ops...).Commit()
			if err != nil {
				b.Fatal(err)
			}
			rev = resp.Header.Revision
		}
		return rev
	}
	writeAll()
	var maxPut, maxGet, compactTime time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		rev := writeAll()
		b.StartTimer()
		loopCtx, stop := context.WithCancel(ctx)
		started := make(chan struct{}, 2)
		lat := make([]time.Duration, 2)
		var wg sync.WaitGroup
		for c, op := range []func() error{
			func() error { _, err := s.Put(ctx, "w", value); return err },
			func() error { _, err := s.Get(ctx, "w"); return err },
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; loopCtx.Err() == nil; n++ {
					t0 := time.Now()
					if err := op(); err != nil {
						b.Error(err)
						return
					}
					lat[c] = max(lat[c], time.Since(t0))
					if n == 10 {
						started <- struct{}{}
					}
				}
			}()
		}
		<-started
		<-started
		t0 := time.Now()
		if _, err := s.Compact(ctx, rev, ember.WithCompactPhysical()); err != nil {
			b.Fatal(err)
		}
		compactTime = max(compactTime, time.Since(t0))
		stop()
		wg.Wait()
		maxPut, maxGet = max(maxPut, lat[0]), max(maxGet, lat[1])
	}
	b.ReportMetric(float64(maxPut.Microseconds())/1000, "max-put-ms")
	b.ReportMetric(float64(maxGet.Microseconds())/1000, "max-get-ms")
	b.ReportMetric(float64(compactTime.Microseconds())/1000, "compact-ms")
}
