// Command bench runs the same closed-loop workloads against ember and against embedded etcd in
// one process, on 1 and 3 members on loopback with real data dirs and fsync on, and prints
// ember's figures next to etcd's (issue #7). From the repository root:
//
//	go run -C bench . -suite all
//
// Suites: put, get, cas, lease, watch, fanout, raft (raw hashicorp/raft with a no-op FSM, the
// ceiling for ember's writes) and mem (memory per live key, each system in a child process).
// Not in all: scale (issue #13; -n keys of -value-size bytes on -members members of each system,
// in a child process each: load, memory, overwrite, steady puts, compaction stalls, paginated
// LIST, close and restart, and with more than one member a follower wiped and added back under
// writes; see scale.go), run as
//
//	go run -C bench . -suite scale -n 1000000
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ember-kv/ember"
)

type bench struct {
	warmup, duration time.Duration
	profileDir       string
	log              io.Writer
	jsonOut          *json.Encoder
	results          []result
	baseGoroutines   int
	scale            scaleConfig // the scale suite's keys, value size and timings
}

var suiteNames = []string{"put", "get", "cas", "lease", "watch", "fanout", "raft", "mem"}

// extraSuites are not part of "all": at its default million keys, scale runs for many minutes.
var extraSuites = []string{"scale"}

func main() {
	runScaleChildIfAsked()
	var (
		suite      = flag.String("suite", "all", "comma-separated suites: all ("+strings.Join(suiteNames, ",")+") or any of them, or "+strings.Join(extraSuites, ","))
		members    = flag.String("members", "1,3", "comma-separated member counts")
		sysNames   = flag.String("systems", "ember,etcd", "systems to compare")
		at         = flag.String("at", "leader,follower", "where the clients run (follower only with more than one member)")
		clients    = flag.String("clients", "", "comma-separated client counts: run only the cells with these (default: all)")
		duration   = flag.Duration("duration", 5*time.Second, "measured time per cell")
		warmup     = flag.Duration("warmup", time.Second, "unmeasured time before each cell")
		jsonPath   = flag.String("json", "", "also write every cell as a JSON line to this file")
		cpuProfile = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
		profileDir = flag.String("profile-dir", "", "write a CPU profile of each cell's measured interval into this dir")
		memKeys    = flag.Int("mem-keys", 100_000, "keys loaded for the mem suite")
		scaleKeys  = flag.Int("n", 1_000_000, "keys loaded for the scale suite")
		valueSize  = flag.Int("value-size", 1024, "value size in bytes for the scale suite")
		rounds     = flag.Int("compact-rounds", 1, "times the scale suite's compaction cell runs, each after an overwrite (median and worst reported)")
		pacedRnds  = flag.Int("paced-rounds", 0, "further compaction rounds with a paced load (1,000 gets/s, 100 puts/s) instead of closed loops")
		memChildOf = flag.String("mem-child", "", "internal: measure this system's memory and print it as JSON")
		logStoreF  = flag.String("log-store", "wal", "ember's and raw raft's raft log store: wal (ember's default, hashicorp/raft-wal) or bolt (ember.LogStoreBolt, raft-boltdb)")
	)
	flag.Parse()
	switch *logStoreF {
	case "bolt":
		logStore = ember.LogStoreBolt
	case "wal":
		logStore = ember.LogStoreWAL
	default:
		fmt.Fprintf(os.Stderr, "-log-store %q: want bolt or wal\n", *logStoreF)
		os.Exit(2)
	}
	if *memChildOf != "" {
		if err := memChild(*memChildOf, *memKeys, *profileDir); err != nil {
			fmt.Fprintln(os.Stderr, "mem child:", err)
			os.Exit(1)
		}
		return
	}
	cfg, err := parseConfig(*suite, *members, *sysNames, *at, *clients)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	b := &bench{warmup: *warmup, duration: *duration, profileDir: *profileDir, log: os.Stderr,
		scale: scaleConfig{Keys: *scaleKeys, ValueSize: *valueSize, Duration: *duration, Settle: 2 * time.Second, CompactRounds: *rounds, PacedRounds: *pacedRnds}}
	if *cpuProfile != "" && *profileDir != "" {
		fmt.Fprintln(os.Stderr, "-cpuprofile and -profile-dir exclude each other: Go runs one CPU profile at a time")
		os.Exit(2)
	}
	if err := b.run(cfg, *jsonPath, *cpuProfile, *memKeys); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type config struct {
	suites    []string
	members   []int
	systems   []system
	clients   []int // nil: every cell
	followers bool
	leaders   bool
}

func parseConfig(suite, members, sysNames, at, clients string) (config, error) {
	var c config
	for _, s := range strings.Split(suite, ",") {
		switch {
		case s == "all":
			c.suites = append(c.suites, suiteNames...)
		case slices.Contains(suiteNames, s), slices.Contains(extraSuites, s):
			c.suites = append(c.suites, s)
		default:
			return c, fmt.Errorf("unknown suite %q", s)
		}
	}
	var err error
	if c.members, err = counts(members); err != nil {
		return c, fmt.Errorf("-members: %w", err)
	}
	if clients != "" {
		if c.clients, err = counts(clients); err != nil {
			return c, fmt.Errorf("-clients: %w", err)
		}
	}
	for _, name := range strings.Split(sysNames, ",") {
		i := slices.IndexFunc(systems, func(s system) bool { return s.name == name })
		if i < 0 {
			return c, fmt.Errorf("unknown system %q", name)
		}
		c.systems = append(c.systems, systems[i])
	}
	for _, a := range strings.Split(at, ",") {
		switch a {
		case "leader":
			c.leaders = true
		case "follower":
			c.followers = true
		default:
			return c, fmt.Errorf("unknown placement %q", a)
		}
	}
	return c, nil
}

func counts(list string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad count %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func (b *bench) run(cfg config, jsonPath, cpuProfile string, memKeys int) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if jsonPath != "" {
		f, err := os.Create(jsonPath)
		if err != nil {
			return err
		}
		defer f.Close()
		b.jsonOut = json.NewEncoder(f)
	}
	if b.profileDir != "" {
		if b.profileDir, err = filepath.Abs(b.profileDir); err != nil {
			return err
		}
		if err := os.MkdirAll(b.profileDir, 0o755); err != nil {
			return err
		}
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	b.baseGoroutines = runtime.NumGoroutine()
	b.progress("%d CPUs, %s; cells of %v after %v warm-up; ember and raw raft on the %v log store",
		runtime.NumCPU(), runtime.Version(), b.duration, b.warmup, logStore)
	diskStart := b.probeDisk()
	var mem []memResult
	var scale []scaleResult
	for _, s := range cfg.suites {
		if s == "scale" {
			rs := b.measureScale(ctx, cfg.systems, cfg.members, b.scale)
			if b.jsonOut != nil {
				for _, r := range rs {
					b.jsonOut.Encode(r)
				}
			}
			scale = append(scale, rs...)
			continue
		}
		if s == "mem" {
			mem = b.measureMemory(ctx, cfg.systems, memKeys)
			if b.jsonOut != nil {
				for _, m := range mem {
					b.jsonOut.Encode(m)
				}
			}
			continue
		}
		w := workloads[slices.IndexFunc(workloads, func(w workload) bool { return w.name == s })]
		for _, m := range cfg.members {
			if err := b.runWorkload(ctx, w, m, cfg); err != nil {
				return err
			}
		}
	}
	diskEnd := b.probeDisk()
	fmt.Printf("Log store of ember and raw raft: %v.\n", logStore)
	fmt.Printf("Disk: fdatasync after a 4 KiB write, p50 / p99: %s at the start, %s at the end.\n\n", diskStart, diskEnd)
	printTables(os.Stdout, b.results, mem)
	printScale(os.Stdout, scale)
	return nil
}

func (b *bench) probeDisk() string {
	p50, p99, err := fsyncProbe(200)
	if err != nil {
		return "error: " + err.Error()
	}
	s := dur(p50) + " / " + dur(p99)
	b.progress("disk: fdatasync p50 / p99 %s", s)
	return s
}

// runWorkload runs one workload's cells on a fresh cluster of each system. Both clusters are up
// at once and each cell runs on ember and then at once on etcd, so that the two are measured
// seconds apart: on a shared machine, load changes over minutes would otherwise decide the
// ratio. The idle cluster only heartbeats meanwhile.
func (b *bench) runWorkload(ctx context.Context, w workload, members int, cfg config) error {
	syss := w.systems
	if syss == nil {
		syss = cfg.systems
	}
	var ats []string
	if cfg.leaders {
		ats = append(ats, "leader")
	}
	if cfg.followers && members > 1 && w.name != "raft" {
		ats = append(ats, "follower")
	}
	cells := slices.DeleteFunc(slices.Clone(w.cells), func(v variant) bool {
		return cfg.clients != nil && !slices.Contains(cfg.clients, v.clients)
	})
	if len(cells) == 0 {
		return nil
	}
	type running struct {
		sys system
		cl  cluster
	}
	var up []running
	defer func() {
		for _, r := range up {
			if err := r.cl.close(); err != nil {
				b.progress("%s: close: %v", r.sys.name, err)
			}
		}
		if len(up) > 0 {
			b.settle(w.name)
		}
	}()
	for _, sys := range syss {
		cl, err := b.startCluster(ctx, w, sys, members)
		if err != nil {
			for _, at := range ats {
				for _, v := range cells {
					b.record(result{System: sys.name, Workload: v.name, Members: members, At: at, Clients: v.clients, Err: err.Error()})
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		up = append(up, running{sys, cl})
	}
	for _, at := range ats {
		for _, v := range cells {
			for _, r := range up {
				b.runCell(ctx, r.sys, r.cl, v, members, at)
			}
		}
	}
	return ctx.Err()
}

// startCluster starts sys with members members in a temp dir that close removes, and runs the
// workload's setup on it.
func (b *bench) startCluster(ctx context.Context, w workload, sys system, members int) (cluster, error) {
	root, err := os.MkdirTemp("", "ember-bench-")
	if err != nil {
		return nil, err
	}
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	cl, err := sys.start(startCtx, members, root)
	cancel()
	if err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("start: %w", err)
	}
	cl = removingCluster{cl, root}
	if w.setup != nil {
		if err := w.setup(ctx, cl.client(false)); err != nil {
			cl.close()
			return nil, fmt.Errorf("setup: %w", err)
		}
	}
	return cl, nil
}

// removingCluster removes the cluster's temp dir once it is closed.
type removingCluster struct {
	cluster
	root string
}

func (c removingCluster) close() error {
	err := c.cluster.close()
	return errors.Join(err, os.RemoveAll(c.root))
}

func (b *bench) runCell(ctx context.Context, sys system, cl cluster, v variant, members int, at string) {
	cell := fmt.Sprintf("%s-%s-m%d-%s-c%d", sys.name, strings.ReplaceAll(v.name, " ", "-"), members, at, v.clients)
	cellCtx, cancel := context.WithTimeout(ctx, b.warmup+b.duration+2*time.Minute)
	r, err := v.run(cellCtx, b, strings.ReplaceAll(cell, "+", "-"), cl.client(at == "follower"), v.clients)
	cancel()
	r.System, r.Workload, r.Members, r.At, r.Clients = sys.name, v.name, members, at, v.clients
	if err != nil {
		r.Err = err.Error()
	}
	b.record(r)
}

// settle waits for the closed cluster's goroutines to end, so that they do not eat into the
// next cell's CPU, and reports any that stay.
func (b *bench) settle(name string) {
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > b.baseGoroutines+5 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine() - b.baseGoroutines; n > 5 {
		b.progress("%s: %d goroutines still running 5s after close", name, n)
	}
	runtime.GC()
}

func (b *bench) record(r result) {
	b.results = append(b.results, r)
	if b.jsonOut != nil {
		b.jsonOut.Encode(r)
	}
	if r.Err != "" {
		b.progress("%-5s %-13s m=%d %-8s c=%-3d error: %s", r.System, r.Workload, r.Members, r.At, r.Clients, r.Err)
		return
	}
	b.progress("%-5s %-13s m=%d %-8s c=%-3d %9s ops/s  p50 %-9s p99 %-9s %.2f cores %s",
		r.System, r.Workload, r.Members, r.At, r.Clients, thousands(r.opsPerSec()), dur(r.P50), dur(r.P99), r.cores(), r.Notes)
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.log, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// profilePath is where -profile-dir puts a cell's CPU profile.
func (b *bench) profilePath(cell string) string { return filepath.Join(b.profileDir, cell+".prof") }
