package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Sizes fixed by issue #7: 16-byte keys, 256-byte values.
const (
	valueSize   = 256
	getKeys     = 10_000 // preloaded for the get cells
	putKeys     = 100_000
	casKeys     = 64
	fanWatchers = 1000
	leaseTTL    = 600 // seconds: no lease expires during a cell
)

var (
	value = strings.Repeat("v", valueSize)
	// epoch is the origin of the timestamps that watch cells write into values; time.Since
	// reads the monotonic clock.
	epoch = time.Now()
)

func key(prefix string, i int) string {
	return prefix + fmt.Sprintf("%0*d", 16-len(prefix), i)
}

// keyTable precomputes keys so that formatting them does not count as client work.
func keyTable(prefix string, n int) []string {
	t := make([]string, n)
	for i := range t {
		t[i] = key(prefix, i)
	}
	return t
}

// A workload is a set of cells run on one fresh cluster per system and member count, first
// with the clients on the leader, then (with more than one member) on a follower.
type workload struct {
	name    string
	systems []system // nil: ember and etcd
	// setup prepares the cluster through the leader before the cells run.
	setup func(ctx context.Context, c client) error
	cells []variant
}

type variant struct {
	name    string
	clients int
	run     func(ctx context.Context, b *bench, cell string, c client, clients int) (result, error)
}

var (
	putTable = keyTable("key-", putKeys)
	getTable = keyTable("key-", getKeys)
	casTable = keyTable("cas-", casKeys)
)

var workloads = []workload{
	{name: "put", cells: []variant{{"put", 1, runPut}, {"put", 16, runPut}, {"put", 256, runPut}}},
	{name: "get", setup: preload, cells: []variant{
		{"get lin", 16, runGet(false)}, {"get lin", 256, runGet(false)},
		{"get ser", 16, runGet(true)}, {"get ser", 256, runGet(true)},
	}},
	{name: "cas", cells: []variant{{"cas txn", 16, runCAS}}},
	{name: "lease", cells: []variant{{"lease+put", 16, runLease(false)}, {"lease+put 1 entry", 16, runLease(true)}}},
	{name: "watch", cells: []variant{{"watch prefix", 1, runWatch}, {"watch prefix", 16, runWatch}}},
	{name: "fanout", cells: []variant{{"fan-out 1000", 1, runFanout}}},
	{name: "raft", systems: []system{{"raft", startRaft}}, cells: []variant{{"raft apply", 1, runPut}, {"raft apply", 16, runPut}}},
}

// opsResult fills in what every closed-loop cell reports, from the sorted latencies.
func opsResult(lat []time.Duration, win window) result {
	return result{Ops: int64(len(lat)), Seconds: win.elapsed.Seconds(), CPUSeconds: win.cpu.Seconds(),
		P50: percentile(lat, 50), P99: percentile(lat, 99)}
}

func runPut(ctx context.Context, b *bench, cell string, c client, clients int) (result, error) {
	var next atomic.Int64
	var ph phase
	lat, win, err := b.closedLoop(ctx, cell, clients, &ph, func(ctx context.Context, _ int) error {
		_, err := c.put(ctx, putTable[next.Add(1)%putKeys], value)
		return err
	})
	return opsResult(lat, win), err
}

// preload writes the keys the get cells read, from 64 clients.
func preload(ctx context.Context, c client) error {
	var next atomic.Int64
	errs := make(chan error, 64)
	for range 64 {
		go func() {
			for {
				i := next.Add(1) - 1
				if i >= getKeys {
					errs <- nil
					return
				}
				if _, err := c.put(ctx, getTable[i], value); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var first error
	for range 64 {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func runGet(serializable bool) func(context.Context, *bench, string, client, int) (result, error) {
	return func(ctx context.Context, b *bench, cell string, c client, clients int) (result, error) {
		var ph phase
		lat, win, err := b.closedLoop(ctx, cell, clients, &ph, func(ctx context.Context, _ int) error {
			return c.get(ctx, getTable[rand.IntN(getKeys)], serializable)
		})
		return opsResult(lat, win), err
	}
}

// runCAS is a read-modify-write loop over 64 keys: each transaction compares the key's mod
// revision with the newest one any client has seen and puts if it still matches; a conflict
// returns the current revision, so the next attempt on that key can succeed.
func runCAS(ctx context.Context, b *bench, cell string, c client, clients int) (result, error) {
	var revs [casKeys]atomic.Int64
	for i, k := range casTable {
		rev, err := c.put(ctx, k, value)
		if err != nil {
			return result{}, err
		}
		revs[i].Store(rev)
	}
	var ok, conflict atomic.Int64
	var ph phase
	lat, win, err := b.closedLoop(ctx, cell, clients, &ph, func(ctx context.Context, _ int) error {
		i := rand.IntN(casKeys)
		seen := revs[i].Load()
		succeeded, rev, err := c.cas(ctx, casTable[i], seen, value)
		if err != nil {
			return err
		}
		for cur := revs[i].Load(); rev > cur && !revs[i].CompareAndSwap(cur, rev); cur = revs[i].Load() {
		}
		if ph.measuring() {
			if succeeded {
				ok.Add(1)
			} else {
				conflict.Add(1)
			}
		}
		return nil
	})
	r := opsResult(lat, win)
	r.Notes = fmt.Sprintf("%d ok, %d conflicts", ok.Load(), conflict.Load())
	return r, err
}

// runLease grants a lease and puts a key with it, per operation; oneEntry makes them one request
// where the system has one (see client.leasePut).
func runLease(oneEntry bool) func(ctx context.Context, b *bench, cell string, c client, clients int) (result, error) {
	return func(ctx context.Context, b *bench, cell string, c client, clients int) (result, error) {
		var next atomic.Int64
		var ph phase
		lat, win, err := b.closedLoop(ctx, cell, clients, &ph, func(ctx context.Context, _ int) error {
			return c.leasePut(ctx, key("lse-", int(next.Add(1))), value, leaseTTL, oneEntry)
		})
		return opsResult(lat, win), err
	}
}

// stampedValue is a value that starts with the time it was written, in ns since epoch.
func stampedValue() string {
	s := strconv.FormatInt(int64(time.Since(epoch)), 10) + "|"
	return s + value[len(s):]
}

func stampOf(v []byte) time.Duration {
	ns, _ := strconv.ParseInt(string(v[:max(bytes.IndexByte(v, '|'), 0)]), 10, 64)
	return time.Duration(ns)
}

var cellSeq atomic.Int64

// runWatch puts from clients writers under a prefix that one watcher on the same member
// watches. It reports put→event latency, the watcher's lag behind the newest acknowledged
// revision, and whether every put arrived once, in revision order.
func runWatch(ctx context.Context, b *bench, cell string, c client, clients int) (result, error) {
	prefix := fmt.Sprintf("w%03d-", cellSeq.Add(1)%1000)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		ph        phase
		committed atomic.Int64 // newest revision a put returned
		mu        sync.Mutex   // guards the watcher's state below
		lat       []time.Duration
		seen      int64 // events received
		last      int64 // newest revision received
		maxLag    int64
		watchErr  error
		disorder  int64
	)
	err := c.watch(ctx, prefix, true, func(evs []event, err error) {
		now := time.Since(epoch)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			watchErr = err
			return
		}
		for _, ev := range evs {
			if ev.rev <= last {
				disorder++
			}
			last = ev.rev
			seen++
			if ph.measuring() {
				lat = append(lat, now-stampOf(ev.val))
				maxLag = max(maxLag, committed.Load()-ev.rev)
			}
		}
	})
	if err != nil {
		return result{}, err
	}
	var next, puts atomic.Int64
	putLat, win, err := b.closedLoop(ctx, cell, clients, &ph, func(ctx context.Context, _ int) error {
		rev, err := c.put(ctx, key(prefix, int(next.Add(1))), stampedValue())
		if err != nil {
			return err
		}
		puts.Add(1)
		for cur := committed.Load(); rev > cur && !committed.CompareAndSwap(cur, rev); cur = committed.Load() {
		}
		return nil
	})
	if err != nil {
		return result{}, err
	}
	mu.Lock()
	lagAtStop := committed.Load() - last
	mu.Unlock()
	t0 := time.Now()
	var drained bool
	for {
		mu.Lock()
		drained = last >= committed.Load()
		mu.Unlock()
		if drained || time.Since(t0) > 30*time.Second {
			break
		}
		time.Sleep(time.Millisecond)
	}
	drain := time.Since(t0)
	mu.Lock()
	defer mu.Unlock()
	if watchErr != nil {
		return result{}, watchErr
	}
	slices.Sort(lat)
	r := opsResult(lat, win)
	r.Ops = int64(len(putLat)) // the cell's rate is the writers' puts/s
	r.MaxLag, r.LagAtStop = maxLag, lagAtStop
	r.Delivered = disorder == 0 && seen == puts.Load() && drained
	r.Notes = fmt.Sprintf("put→event; max lag %d revs, %d at stop, drained in %v; %d/%d events, %d out of order",
		maxLag, lagAtStop, drain.Round(time.Millisecond), seen, puts.Load(), disorder)
	return r, nil
}

// runFanout puts to one key that 1,000 watchers on the same member watch, one put at a time,
// and times each put until every watcher has its event.
func runFanout(ctx context.Context, b *bench, cell string, c client, _ int) (result, error) {
	k := key(fmt.Sprintf("f%03d-", cellSeq.Add(1)%1000), 0)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var got atomic.Int64
	all := make(chan struct{}, 1)
	errs := make(chan error, fanWatchers)
	for range fanWatchers {
		err := c.watch(ctx, k, false, func(evs []event, err error) {
			if err != nil {
				errs <- err
				return
			}
			if got.Add(int64(len(evs))) == fanWatchers {
				all <- struct{}{}
			}
		})
		if err != nil {
			return result{}, err
		}
	}
	var ph phase
	lat, win, err := b.closedLoop(ctx, cell, 1, &ph, func(ctx context.Context, _ int) error {
		got.Store(0)
		if _, err := c.put(ctx, k, value); err != nil {
			return err
		}
		select {
		case <-all:
			return nil
		case err := <-errs:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("only %d of %d watchers got the event within 30s", got.Load(), fanWatchers)
		}
	})
	r := opsResult(lat, win)
	r.Notes = fmt.Sprintf("put→all %d watchers; %d rounds", fanWatchers, len(lat))
	return r, err
}
