package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"
)

// phase tells the goroutines of a cell whether what they do now counts: a cell warms up, is
// measured, then stops.
type phase struct{ v atomic.Int32 }

const (
	warming int32 = iota
	measuring
	done
)

func (p *phase) measuring() bool { return p.v.Load() == measuring }
func (p *phase) done() bool      { return p.v.Load() == done }

// window is one cell's measured interval.
type window struct {
	elapsed time.Duration
	cpu     time.Duration // process CPU time used in the interval
}

// measure warms up, then moves ph to measuring for the cell's duration (profiling it if asked)
// and to done. It returns early with ctx's cause if ctx ends.
func (b *bench) measure(ctx context.Context, cell string, ph *phase) (window, error) {
	if err := sleep(ctx, b.warmup); err != nil {
		ph.v.Store(done)
		return window{}, err
	}
	if b.profileDir != "" {
		f, err := os.Create(b.profilePath(cell))
		if err != nil {
			return window{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return window{}, err
		}
		defer pprof.StopCPUProfile()
	}
	cpu0, t0 := cpuTime(), time.Now()
	ph.v.Store(measuring)
	err := sleep(ctx, b.duration)
	ph.v.Store(done)
	return window{elapsed: time.Since(t0), cpu: cpuTime() - cpu0}, err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// closedLoop runs op on n goroutines, each starting its next operation when the previous one
// returns, and returns the latencies of the operations that completed while measuring. The first
// error stops the cell.
func (b *bench) closedLoop(ctx context.Context, cell string, n int, ph *phase, op func(ctx context.Context, worker int) error) ([]time.Duration, window, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	parts := make([][]time.Duration, n)
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			for !ph.done() && ctx.Err() == nil {
				t0 := time.Now()
				if err := op(ctx, w); err != nil {
					cancel(fmt.Errorf("client %d: %w", w, err))
					return
				}
				if ph.measuring() {
					parts[w] = append(parts[w], time.Since(t0))
				}
			}
		})
	}
	win, err := b.measure(ctx, cell, ph)
	wg.Wait()
	if cause := context.Cause(ctx); err == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	return merge(parts), win, err
}
