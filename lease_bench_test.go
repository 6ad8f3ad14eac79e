package ember_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// BenchmarkLease_KeepAlive10k keeps 10,000 leases alive (TTL 10 s, one key each, keepalives
// spread over the three members of a loopback cluster) for a measured window and reports what
// it costs: CPU cores used by the whole process, bytes between members, raft entries per
// second. Any delete of a leased key during the window is an early expiry and fails the run.
//
//	go test -run xxx -bench Lease_KeepAlive10k -benchtime 1x -timeout 10m .
func BenchmarkLease_KeepAlive10k(b *testing.B) {
	const leases, ttl = 10000, 10
	window := 30 * time.Second
	for i := 0; i < b.N; i++ {
		c := embertest.NewCluster(b, 3, ember.WithHeartbeatTimeout(time.Second), ember.WithElectionTimeout(time.Second))
		ctx, cancel := context.WithCancel(context.Background())
		members := c.Running()
		var expired atomic.Int64
		wc := c.Leader().Store().Watch(ctx, "lease/", ember.WithPrefix(), ember.WithFilterPut())
		go func() {
			for wr := range wc {
				expired.Add(int64(len(wr.Events)))
			}
		}()

		// Grant, keep alive and attach concurrently, each lease from "its" member.
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for j := 0; j < leases; j++ {
			wg.Add(1)
			sem <- struct{}{}
			go func(j int) {
				defer wg.Done()
				defer func() { <-sem }()
				s := members[j%len(members)].Store()
				g, err := s.Grant(ctx, ttl)
				if err != nil {
					b.Error(err)
					return
				}
				ka, err := s.KeepAlive(ctx, g.ID)
				if err != nil {
					b.Error(err)
					return
				}
				go func() {
					for range ka {
					}
				}()
				if _, err := s.Put(ctx, fmt.Sprintf("lease/%05d", j), "v", ember.WithLease(g.ID)); err != nil {
					b.Error(err)
				}
			}(j)
		}
		wg.Wait()
		if b.Failed() {
			cancel()
			return
		}
		// Let the keepalive phases spread over a renewal period before measuring.
		time.Sleep(ttl * time.Second / 3)

		b.ResetTimer()
		cpu0, bytes0 := cpuTime(), c.Network().Bytes()
		st0, _ := c.Leader().Store().Status(ctx)
		start := time.Now()
		time.Sleep(window)
		elapsed := time.Since(start)
		cpu1, bytes1 := cpuTime(), c.Network().Bytes()
		st1, _ := c.Leader().Store().Status(ctx)
		b.StopTimer()

		if n := expired.Load(); n > 0 {
			b.Fatalf("%d leased keys deleted while their leases were kept alive", n)
		}
		g, err := c.Leader().Store().Get(ctx, "lease/", ember.WithPrefix(), ember.WithCountOnly())
		if err != nil || g.Count != leases {
			b.Fatalf("leased keys left: %v %v", g, err)
		}
		b.ReportMetric((cpu1-cpu0).Seconds()/elapsed.Seconds(), "cpu-cores")
		b.ReportMetric(float64(bytes1-bytes0)/elapsed.Seconds()/1024, "peer-KiB/s")
		b.ReportMetric(float64(st1.RaftIndex-st0.RaftIndex)/elapsed.Seconds(), "raft-entries/s")
		b.ReportMetric(float64(leases)/(float64(ttl)/3), "renewals/s")
		cancel()
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
