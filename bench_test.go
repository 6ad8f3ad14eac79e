package ember_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// Benchmarks of the KV paths on 1 member (the embedded default: persistent, no listener) and on
// 3 members on loopback (requests sent to the leader and to a follower). Run with
//
//	go test -run xxx -bench . -benchtime 3s
//
// Figures are in bench/RESULTS.md.

var benchValue = strings.Repeat("v", 256)

type benchTarget struct {
	name  string
	store func(b *testing.B) *ember.Store
}

func benchTargets() []benchTarget {
	return []benchTarget{
		{"nodes=1", func(b *testing.B) *ember.Store {
			s, err := ember.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.WaitReady(ctx); err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"nodes=3/leader", func(b *testing.B) *ember.Store {
			return embertest.NewCluster(b, 3, ember.WithHeartbeatTimeout(time.Second), ember.WithElectionTimeout(time.Second)).Leader().Store()
		}},
		{"nodes=3/follower", func(b *testing.B) *ember.Store {
			return embertest.NewCluster(b, 3, ember.WithHeartbeatTimeout(time.Second), ember.WithElectionTimeout(time.Second)).Followers()[0].Store()
		}},
	}
}

// runClients runs op from clients goroutines until b.N operations are done.
func runClients(b *testing.B, clients int, op func(i int64) error) {
	b.Helper()
	var next atomic.Int64
	errs := make(chan error, clients)
	b.ResetTimer()
	for c := 0; c < clients; c++ {
		go func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					errs <- nil
					return
				}
				if err := op(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for c := 0; c < clients; c++ {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkPut(b *testing.B) {
	for _, tg := range benchTargets() {
		for _, clients := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/clients=%d", tg.name, clients), func(b *testing.B) {
				s := tg.store(b)
				ctx := context.Background()
				runClients(b, clients, func(i int64) error {
					_, err := s.Put(ctx, fmt.Sprintf("key-%010d", i%100000), benchValue)
					return err
				})
			})
		}
	}
}

func BenchmarkGet(b *testing.B) {
	for _, tg := range benchTargets() {
		for _, mode := range []string{"linearizable", "serializable"} {
			b.Run(fmt.Sprintf("%s/%s/clients=16", tg.name, mode), func(b *testing.B) {
				s := tg.store(b)
				ctx := context.Background()
				for i := 0; i < 1000; i++ {
					if _, err := s.Put(ctx, fmt.Sprintf("key-%06d", i), benchValue); err != nil {
						b.Fatal(err)
					}
				}
				var opts []ember.OpOption
				if mode == "serializable" {
					opts = append(opts, ember.WithSerializable())
				}
				runClients(b, 16, func(i int64) error {
					_, err := s.Get(ctx, fmt.Sprintf("key-%06d", i%1000), opts...)
					return err
				})
			})
		}
	}
}

func BenchmarkTxn(b *testing.B) {
	for _, tg := range benchTargets() {
		b.Run(tg.name+"/cas/clients=16", func(b *testing.B) {
			s := tg.store(b)
			ctx := context.Background()
			runClients(b, 16, func(i int64) error {
				k := fmt.Sprintf("ctr-%d", i%64)
				_, err := s.Txn(ctx).
					If(ember.Compare(ember.Version(k), ">", -1)).
					Then(ember.OpPut(k, benchValue)).
					Else(ember.OpGet(k)).
					Commit()
				return err
			})
		})
	}
}

// BenchmarkGet_SerializableStored reads 10k keys of 256-byte values (longer than the inline
// limit, so read from the backend file) with serializable gets from parallel readers, on one
// member with a data dir: the cost of a get that reads a stored value, for profiles.
//
//	go test -run xxx -bench BenchmarkGet_SerializableStored -benchmem -cpuprofile cpu.out
func BenchmarkGet_SerializableStored(b *testing.B) {
	s, err := ember.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if err := s.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	const n = 10_000
	keys := make([]string, n)
	var puts []ember.Op
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%012d", i)
		if puts = append(puts, ember.OpPut(keys[i], benchValue)); len(puts) == 100 {
			if _, err := s.Txn(ctx).Then(puts...).Commit(); err != nil {
				b.Fatal(err)
			}
			puts = puts[:0]
		}
	}
	// A snapshot commits the backend; the put after it moves the read view past the versions
	// the commit held in memory, so that every value read below comes from the file.
	if err := ember.TakeSnapshot(s); err != nil {
		b.Fatal(err)
	}
	if _, err := s.Put(ctx, "other", "x"); err != nil {
		b.Fatal(err)
	}
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1) * 7919
		for pb.Next() {
			i++
			r, err := s.Get(ctx, keys[i%n], ember.WithSerializable())
			if err != nil || len(r.Kvs) != 1 || len(r.Kvs[0].Value) != len(benchValue) {
				b.Errorf("get: %v, %v", r, err)
				return
			}
		}
	})
}
