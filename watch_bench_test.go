package ember_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ember-kv/ember"
)

// Watch benchmarks on one in-memory member, so that the watch path is what is measured rather
// than the disk:
//
//	go test -run xxx -bench BenchmarkWatch -benchtime 2000x .
//
// "crowd" adds 10,000 watchers on distinct keys and 1,000 watchers on one key (all reading
// promptly) next to the measured watcher.

type crowd struct {
	wg     sync.WaitGroup
	cancel context.CancelFunc
}

func addCrowd(b *testing.B, s *ember.Store) *crowd {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &crowd{cancel: cancel}
	drain := func(wc ember.WatchChan) {
		defer c.wg.Done()
		for range wc {
		}
	}
	for i := 0; i < 10000; i++ {
		c.wg.Add(1)
		go drain(s.Watch(ctx, fmt.Sprintf("distinct/%05d", i)))
	}
	for i := 0; i < 1000; i++ {
		c.wg.Add(1)
		go drain(s.Watch(ctx, "hot"))
	}
	b.Cleanup(func() { cancel(); c.wg.Wait() })
	return c
}

func percentile(d []time.Duration, p float64) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[int(float64(len(d)-1)*p)]
}

// BenchmarkWatch_PutToEvent measures the time from calling Put to the watcher receiving the
// event, one put at a time.
func BenchmarkWatch_PutToEvent(b *testing.B) {
	for _, withCrowd := range []bool{false, true} {
		b.Run(fmt.Sprintf("crowd=%v", withCrowd), func(b *testing.B) {
			s := openMemStore(b)
			if withCrowd {
				addCrowd(b, s)
			}
			ctx := context.Background()
			wc := s.Watch(ctx, "measured")
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if _, err := s.Put(ctx, "measured", "v"); err != nil {
					b.Fatal(err)
				}
				<-wc
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			b.ReportMetric(float64(percentile(lat, 0.5).Microseconds()), "p50-µs")
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkWatch_WriteThroughput measures puts/s from 16 clients with and without the crowd of
// watchers (the crowd's keys are written too, so every watcher gets events).
func BenchmarkWatch_WriteThroughput(b *testing.B) {
	for _, withCrowd := range []bool{false, true} {
		b.Run(fmt.Sprintf("crowd=%v", withCrowd), func(b *testing.B) {
			s := openMemStore(b)
			if withCrowd {
				addCrowd(b, s)
			}
			ctx := context.Background()
			runClients(b, 16, func(i int64) error {
				key := fmt.Sprintf("distinct/%05d", i%10000)
				if i%10 == 0 {
					key = "hot"
				}
				_, err := s.Put(ctx, key, benchValue)
				return err
			})
		})
	}
}

// BenchmarkWatch_FanOut1000 measures the time from a put until all of 1,000 watchers of the key
// have its event.
func BenchmarkWatch_FanOut1000(b *testing.B) {
	s := openMemStore(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ready sync.WaitGroup
	got := make(chan struct{}, 1000)
	for i := 0; i < 1000; i++ {
		wc := s.Watch(ctx, "fan", ember.WithCreatedNotify())
		ready.Add(1)
		go func() {
			<-wc // created
			ready.Done()
			for range wc {
				got <- struct{}{}
			}
		}()
	}
	ready.Wait()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := s.Put(ctx, "fan", "v"); err != nil {
			b.Fatal(err)
		}
		for j := 0; j < 1000; j++ {
			<-got
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-µs")
}
