package ember_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ember-kv/ember"
)

// BenchmarkStore_PutDuringCompact measures what a compaction costs the writes and linearizable
// reads running beside it: each iteration overwrites compactKeys keys (compactKeys superseded
// versions), then compacts them away while one client puts and another reads in a loop, and
// reports the slowest and the 99th percentile put and get seen meanwhile. op=none sleeps for
// a second instead of compacting: the latencies the machine gives without a compaction. Run with
//
//	go test -run xxx -bench PutDuringCompact -benchtime 3x
func BenchmarkStore_PutDuringCompact(b *testing.B) {
	const compactKeys = 200_000
	for _, compact := range []bool{true, false} {
		b.Run(map[bool]string{true: "op=compact", false: "op=none"}[compact], func(b *testing.B) {
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
			var compactTime time.Duration
			lat := make([][]time.Duration, 2) // put, get latencies during compactions
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				rev := writeAll()
				b.StartTimer()
				loopCtx, stop := context.WithCancel(ctx)
				started := make(chan struct{}, 2)
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
							if n >= 10 {
								lat[c] = append(lat[c], time.Since(t0))
							}
							if n == 10 {
								started <- struct{}{}
							}
						}
					}()
				}
				<-started
				<-started
				t0 := time.Now()
				if compact {
					if _, err := s.Compact(ctx, rev, ember.WithCompactPhysical()); err != nil {
						b.Fatal(err)
					}
				} else {
					time.Sleep(time.Second)
				}
				compactTime = max(compactTime, time.Since(t0))
				stop()
				wg.Wait()
			}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			for c, name := range []string{"put", "get"} {
				slices.Sort(lat[c])
				b.ReportMetric(ms(lat[c][len(lat[c])-1]), "max-"+name+"-ms")
				b.ReportMetric(ms(lat[c][len(lat[c])*99/100]), "p99-"+name+"-ms")
			}
			b.ReportMetric(ms(compactTime), "compact-ms")
		})
	}
}
