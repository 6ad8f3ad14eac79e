package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ember-kv/ember"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
)

// The scale suite (issue #13) loads many large keys into each system and measures what a
// Kubernetes-sized data set costs: memory, write rates, a compaction's stall, a full paginated
// LIST, a restart and, with more than one member, a wiped follower's catch-up (wipe.go). Each system runs in its own child process of this binary, so that the heap
// and RSS it reports are that system's alone; clients are the leader's in-process ones.

const (
	scaleLoaders   = 64  // concurrent writers of the load and of the overwrite
	scaleSteady    = 16  // concurrent writers of the steady put rate
	scalePage      = 500 // keys per LIST page, as the Kubernetes API server's default chunk
	scalePrefix    = "scale/"
	scaleBgKey     = "scale-bg" // the background putter's key, outside the listed prefix
	scaleChildEnv  = "EMBER_BENCH_SCALE_CHILD"
	scaleQuota     = 8 << 30 // two versions of 1M 1 KiB values exceed both systems' 2 GiB default
	scaleChildTime = 4 * time.Hour
)

// scaleConfig is what the parent passes to the child, as JSON in scaleChildEnv.
type scaleConfig struct {
	System    string        `json:"system"`
	Members   int           `json:"members"`
	Keys      int           `json:"keys"`
	ValueSize int           `json:"value_size"`
	Duration  time.Duration `json:"duration"` // of the steady put cell
	// Settle is the pause before each memory reading, so that background work set off by the
	// writes (batched commits, snapshots) is done.
	Settle time.Duration `json:"settle"`
	// CompactRounds is how many times the compaction cell runs (at least once): the longest
	// waits during a compaction vary from run to run far more than the other figures, so one
	// sample says little. Rounds after the first come after the restart (before the wipe),
	// each after an overwrite of every key, so that the other cells are as in runs with one.
	CompactRounds int `json:"compact_rounds"`
	// PacedRounds is how many further rounds run with a paced load beside the compaction
	// instead of closed loops (see compactUnderLoad); they come after the closed rounds.
	PacedRounds int `json:"paced_rounds"`
}

// scaleResult is one system's figures. Memory is read after runtime.GC and debug.FreeOSMemory,
// so that garbage and freed spans returned to the OS do not count.
type scaleResult struct {
	System    string `json:"system"`
	Members   int    `json:"members"`
	Keys      int    `json:"keys"`
	ValueSize int    `json:"value_size"`
	// LoadRate: Keys new keys of ValueSize bytes under one prefix, written by 64 concurrent
	// writers, divided by the wall time from the first put to the last acknowledgement (keys/s).
	LoadRate float64 `json:"load_keys_per_sec"`
	// Heap*: runtime.MemStats.HeapInuse of the child after a GC (bytes).
	// RssAnon*: RssAnon of /proc/self/status, the child's resident anonymous memory, which
	// leaves out file-backed pages such as an mmapped database (bytes).
	HeapAfterLoad    uint64 `json:"heap_inuse_after_load"`
	RssAnonAfterLoad uint64 `json:"rss_anon_after_load"`
	// OverwriteRate: every key put once more with a new value, 64 writers (keys/s).
	OverwriteRate         float64 `json:"overwrite_keys_per_sec"`
	HeapAfterOverwrite    uint64  `json:"heap_inuse_after_overwrite"`
	RssAnonAfterOverwrite uint64  `json:"rss_anon_after_overwrite"`
	// SteadyRate: puts/s of 16 writers, each putting a random loaded key in a closed loop, over
	// the cell duration.
	SteadyRate float64 `json:"steady_puts_per_sec"`
	// Compact*: Compact at the revision right after the overwrite, which removes the Keys
	// versions of the load, waiting for the physical removal (WithCompactPhysical in both
	// systems). CompactTime is the Compact call's duration, the window. Meanwhile one goroutine
	// puts scaleBgKey and another reads a loaded key (linearizable), each in a closed loop. A
	// wait is the time from one of a loop's completions to its next, which tile the loop's time
	// line; CompactMaxPut / CompactMaxGet are the longest put / get wait that overlapped the
	// window, CompactPuts the number of put waits that did (the puts completed in the window,
	// plus the first one completed after it), CompactGets the same for the gets.
	// They are the first round's; CompactRuns has every round's (CompactRounds, then
	// PacedRounds).
	CompactTime   time.Duration `json:"compact_ns"`
	CompactMaxPut time.Duration `json:"compact_max_put_wait_ns"`
	CompactMaxGet time.Duration `json:"compact_max_get_wait_ns"`
	CompactPuts   int           `json:"compact_puts"`
	CompactGets   int           `json:"compact_gets"`
	CompactRuns   []compactRun  `json:"compact_runs"`
	// ListRate: the whole prefix read in pages of 500 as the Kubernetes API server does, the
	// first page at the current revision, each later page from the key after the previous
	// page's last at the first page's revision; Keys divided by the time of all pages (keys/s).
	ListRate float64 `json:"list_keys_per_sec"`
	// CloseTime: the system's Close (of every member). RestartTime: reopening the same dirs
	// (every member, one after the other) until the first linearizable Get of a loaded key on
	// the leader succeeds. Heap / RssAnon after restart are read then.
	CloseTime           time.Duration `json:"close_ns"`
	RestartTime         time.Duration `json:"restart_ns"`
	HeapAfterRestart    uint64        `json:"heap_inuse_after_restart"`
	RssAnonAfterRestart uint64        `json:"rss_anon_after_restart"`
	// Wipe* (more than one member only; see scaleWipe): a follower is stopped, removed, its
	// data dir deleted, and it is added back as a new member, while 16 writers put random
	// loaded keys on the leader in closed loops. WipeCatchUp: from the add (etcd: MemberAdd
	// before starting the member; ember: Open with WithJoin, which adds the member itself)
	// until a serializable read on the new member is at the revision of a serializable read on
	// the leader just before the add. WipeRateBefore: the writers' puts/s over the cell
	// duration before the stop; WipeRateDuring: over WipeCatchUp. WipeSnapshots: snapshots
	// the new member installed (ember: raft's "Installed remote snapshot" in its log; etcd: the
	// leader's etcd_network_snapshot_send_success to it). WipePutErrors: failed puts (each put
	// has 10 s) from the stop to the catch-up.
	WipeCatchUp    time.Duration `json:"wipe_catch_up_ns,omitempty"`
	WipeRateBefore float64       `json:"wipe_puts_per_sec_before,omitempty"`
	WipeRateDuring float64       `json:"wipe_puts_per_sec_during,omitempty"`
	WipeSnapshots  int           `json:"wipe_snapshot_installs"`
	WipePutErrors  int64         `json:"wipe_put_errors"`
	Err            string        `json:"error,omitempty"`
}

// compactRun is one round of the compaction cell (see scaleResult's Compact figures and
// compactUnderLoad). Puts and Gets count the waits that overlapped the window.
type compactRun struct {
	Paced  bool          `json:"paced"`
	Time   time.Duration `json:"compact_ns"`
	MaxPut time.Duration `json:"max_put_wait_ns"`
	MaxGet time.Duration `json:"max_get_wait_ns"`
	Puts   int           `json:"puts"`
	Gets   int           `json:"gets"`
}

// scaleRow is one row of the scale table; the test checks that each is positive, or not
// negative if zeroOK. A multi row is only measured, and printed, with more than one member; a
// rounds row only with more than one closed compaction round; a paced row only with paced
// rounds.
type scaleRow struct {
	name                         string
	val                          func(scaleResult) float64
	format                       func(float64) string
	multi, rounds, paced, zeroOK bool
}

var scaleRows = func() []scaleRow {
	mib := func(f func(scaleResult) uint64) func(scaleResult) float64 {
		return func(r scaleResult) float64 { return float64(f(r)) / (1 << 20) }
	}
	secs := func(f func(scaleResult) time.Duration) func(scaleResult) float64 {
		return func(r scaleResult) float64 { return f(r).Seconds() }
	}
	fmtMiB := func(v float64) string { return thousands(v) + " MiB" }
	fmtRate := func(unit string) func(float64) string {
		return func(v float64) string { return strings.TrimSpace(thousands(v) + " " + unit) }
	}
	fmtDur := func(v float64) string { return dur(time.Duration(v * float64(time.Second))) }
	// Over the closed or the paced compaction rounds: the median and the largest of a per-round
	// figure.
	median := func(paced bool, f func(compactRun) time.Duration) func(scaleResult) float64 {
		return func(r scaleResult) float64 {
			var ds []time.Duration
			for _, c := range r.CompactRuns {
				if c.Paced == paced {
					ds = append(ds, f(c))
				}
			}
			if len(ds) == 0 {
				return 0
			}
			slices.Sort(ds)
			return ((ds[(len(ds)-1)/2] + ds[len(ds)/2]) / 2).Seconds()
		}
	}
	worst := func(paced bool, f func(compactRun) time.Duration) func(scaleResult) float64 {
		return func(r scaleResult) float64 {
			var m time.Duration
			for _, c := range r.CompactRuns {
				if c.Paced == paced {
					m = max(m, f(c))
				}
			}
			return m.Seconds()
		}
	}
	maxPut := func(c compactRun) time.Duration { return c.MaxPut }
	maxGet := func(c compactRun) time.Duration { return c.MaxGet }
	return []scaleRow{
		{name: "load, 64 writers", val: func(r scaleResult) float64 { return r.LoadRate }, format: fmtRate("keys/s")},
		{name: "heap in use after load", val: mib(func(r scaleResult) uint64 { return r.HeapAfterLoad }), format: fmtMiB},
		{name: "RssAnon after load", val: mib(func(r scaleResult) uint64 { return r.RssAnonAfterLoad }), format: fmtMiB},
		{name: "overwrite, 64 writers", val: func(r scaleResult) float64 { return r.OverwriteRate }, format: fmtRate("keys/s")},
		{name: "heap in use after overwrite", val: mib(func(r scaleResult) uint64 { return r.HeapAfterOverwrite }), format: fmtMiB},
		{name: "RssAnon after overwrite", val: mib(func(r scaleResult) uint64 { return r.RssAnonAfterOverwrite }), format: fmtMiB},
		{name: "steady puts, 16 writers", val: func(r scaleResult) float64 { return r.SteadyRate }, format: fmtRate("puts/s")},
		{name: "compact of the old versions, until physically done", val: secs(func(r scaleResult) time.Duration { return r.CompactTime }), format: fmtDur},
		{name: "longest put during compact", val: secs(func(r scaleResult) time.Duration { return r.CompactMaxPut }), format: fmtDur},
		{name: "longest linearizable get during compact", val: secs(func(r scaleResult) time.Duration { return r.CompactMaxGet }), format: fmtDur},
		{name: "puts during compact, 1 writer", val: func(r scaleResult) float64 { return float64(r.CompactPuts) }, format: fmtRate("")},
		{name: "linearizable gets during compact, 1 reader", val: func(r scaleResult) float64 { return float64(r.CompactGets) }, format: fmtRate("")},
		{name: "longest put during compact, median of the rounds", val: median(false, maxPut), format: fmtDur, rounds: true},
		{name: "longest put during compact, worst round", val: worst(false, maxPut), format: fmtDur, rounds: true},
		{name: "longest linearizable get during compact, median of the rounds", val: median(false, maxGet), format: fmtDur, rounds: true},
		{name: "longest linearizable get during compact, worst round", val: worst(false, maxGet), format: fmtDur, rounds: true},
		{name: "paced load: longest put during compact, median of the rounds", val: median(true, maxPut), format: fmtDur, paced: true},
		{name: "paced load: longest put during compact, worst round", val: worst(true, maxPut), format: fmtDur, paced: true},
		{name: "paced load: longest linearizable get during compact, median of the rounds", val: median(true, maxGet), format: fmtDur, paced: true},
		{name: "paced load: longest linearizable get during compact, worst round", val: worst(true, maxGet), format: fmtDur, paced: true},
		{name: "paginated LIST, 500 per page", val: func(r scaleResult) float64 { return r.ListRate }, format: fmtRate("keys/s")},
		{name: "close", val: secs(func(r scaleResult) time.Duration { return r.CloseTime }), format: fmtDur},
		{name: "restart to first linearizable read", val: secs(func(r scaleResult) time.Duration { return r.RestartTime }), format: fmtDur},
		{name: "heap in use after restart", val: mib(func(r scaleResult) uint64 { return r.HeapAfterRestart }), format: fmtMiB},
		{name: "RssAnon after restart", val: mib(func(r scaleResult) uint64 { return r.RssAnonAfterRestart }), format: fmtMiB},
		{name: "wiped follower re-added: catch-up to the leader's revision", val: secs(func(r scaleResult) time.Duration { return r.WipeCatchUp }), format: fmtDur, multi: true},
		{name: "puts, 16 writers, before the wipe", val: func(r scaleResult) float64 { return r.WipeRateBefore }, format: fmtRate("puts/s"), multi: true},
		{name: "puts, 16 writers, during the catch-up", val: func(r scaleResult) float64 { return r.WipeRateDuring }, format: fmtRate("puts/s"), multi: true},
		{name: "put rate during / before", val: func(r scaleResult) float64 { return r.WipeRateDuring / r.WipeRateBefore }, format: func(v float64) string { return fmt.Sprintf("%.2f", v) }, multi: true},
		{name: "snapshots installed by the re-added member", val: func(r scaleResult) float64 { return float64(r.WipeSnapshots) }, format: fmtRate(""), multi: true, zeroOK: true},
		{name: "failed puts during the wipe", val: func(r scaleResult) float64 { return float64(r.WipePutErrors) }, format: fmtRate(""), multi: true, zeroOK: true},
	}
}()

// measureScale runs the scale suite for each system and member count in a child process of this
// binary, one after the other so that they do not compete for the machine. With more than one
// member, all run in the one child on loopback and its memory is their sum.
func (b *bench) measureScale(ctx context.Context, syss []system, members []int, cfg scaleConfig) []scaleResult {
	var out []scaleResult
	for _, m := range members {
		for _, sys := range syss {
			c := cfg
			c.System, c.Members = sys.name, m
			r, err := runScaleChild(ctx, c)
			if err != nil {
				r = scaleResult{System: sys.name, Members: m, Keys: cfg.Keys, ValueSize: cfg.ValueSize, Err: err.Error()}
			}
			if r.Err != "" {
				b.progress("scale %s: error: %s", sys.name, r.Err)
			}
			out = append(out, r)
		}
	}
	return out
}

func runScaleChild(ctx context.Context, cfg scaleConfig) (scaleResult, error) {
	var r scaleResult
	exe, err := os.Executable()
	if err != nil {
		return r, err
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		return r, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), scaleChildEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("scale child %s: %w", cfg.System, err)
	}
	err = json.Unmarshal(stdout, &r)
	return r, err
}

// runScaleChildIfAsked runs the child's side and exits when this process is a scale child;
// main and TestMain call it first.
func runScaleChildIfAsked() {
	js := os.Getenv(scaleChildEnv)
	if js == "" {
		return
	}
	var cfg scaleConfig
	err := json.Unmarshal([]byte(js), &cfg)
	var r scaleResult
	if err == nil {
		r, err = scaleChild(cfg)
	}
	if err == nil {
		err = json.NewEncoder(os.Stdout).Encode(r)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// scaleStore is what the scale suite needs of one member of a system.
type scaleStore interface {
	put(ctx context.Context, key, val string) (rev int64, err error)
	get(ctx context.Context, key string) error // linearizable
	// compact compacts at rev and returns once the old versions are removed physically.
	compact(ctx context.Context, rev int64) error
	// page reads up to limit keys in [key, end) at rev (0: the current revision).
	page(ctx context.Context, key, end string, rev int64, limit int) (n int, last string, at int64, more bool, err error)
	close() error
}

// scaleOpeners give, for a root dir and a member count, a function that opens (and reopens)
// the members in dirs under root, with the system's defaults apart from the space quota, and
// returns once a leader is known, with the leader's client.
var scaleOpeners = map[string]func(root string, members int) (func(ctx context.Context) (scaleStore, error), error){
	"ember": openEmberScale,
	"etcd":  openEtcdScale,
}

func openEmberScale(root string, members int) (func(ctx context.Context) (scaleStore, error), error) {
	peers := map[string]string{}
	for i := range members {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		peers[memberName(i)] = addr
	}
	return func(ctx context.Context) (scaleStore, error) {
		c := &emberScale{root: root, peers: peers}
		for i := range members {
			opts := c.memberOptions(i)
			if members > 1 {
				opts = append(opts, ember.WithInitialCluster(peers))
			}
			s, err := ember.Open(filepath.Join(root, memberName(i)), opts...)
			if err != nil {
				c.close()
				return nil, err
			}
			c.all = append(c.all, s)
		}
		for _, s := range c.all {
			if err := s.WaitReady(ctx); err != nil {
				c.close()
				return nil, err
			}
		}
		for {
			for _, s := range c.all {
				if s.IsLeader() {
					c.s = s
				}
			}
			if c.s != nil {
				return c, nil
			}
			select {
			case <-ctx.Done():
				c.close()
				return nil, fmt.Errorf("ember: no leader: %w", ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}, nil
}

func openEtcdScale(root string, members int) (func(ctx context.Context) (scaleStore, error), error) {
	// The same URLs on each open: they are part of the members' persisted identity.
	peers, clients := make([]url.URL, members), make([]url.URL, members)
	var initial []string
	for i := range members {
		for _, u := range []*url.URL{&peers[i], &clients[i]} {
			a, err := freeAddr()
			if err != nil {
				return nil, err
			}
			*u = url.URL{Scheme: "http", Host: a}
		}
		initial = append(initial, memberName(i)+"="+peers[i].String())
	}
	return func(ctx context.Context) (scaleStore, error) {
		c := &etcdScale{root: root, peers: peers, clients: clients, initial: strings.Join(initial, ",")}
		for i := range members {
			e, err := embed.StartEtcd(c.memberConfig(i))
			if err != nil {
				c.close()
				return nil, err
			}
			c.es = append(c.es, e)
		}
		for _, e := range c.es {
			select {
			case <-e.Server.ReadyNotify():
			case <-ctx.Done():
				c.close()
				return nil, fmt.Errorf("etcd: not ready: %w", ctx.Err())
			}
			c.cs = append(c.cs, v3client.New(e.Server))
		}
		for {
			for i, e := range c.es {
				if e.Server.Leader() == e.Server.MemberID() {
					c.c = c.cs[i]
				}
			}
			if c.c != nil {
				return c, nil
			}
			select {
			case <-ctx.Done():
				c.close()
				return nil, fmt.Errorf("etcd: no leader: %w", ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}, nil
}

// emberScale sends everything to the leader s of the members all, whose dirs are under root
// and whose peer addresses are peers (by ID; none on one member). The wipe cell (scaleWipe)
// replaces all[wiped] and counts its snapshot installs in installs.
type emberScale struct {
	s        *ember.Store
	all      []*ember.Store
	root     string
	peers    map[string]string
	wiped    int
	installs snapshotCounter
}

// memberOptions are the options of member i: ember's defaults apart from the space quota, and
// with more than one member its ID and peer address.
func (e *emberScale) memberOptions(i int) []ember.Option {
	opts := []ember.Option{ember.WithQuotaBackendBytes(scaleQuota)}
	if len(e.peers) > 1 {
		id := memberName(i)
		opts = append(opts, ember.WithNodeID(id), ember.WithBindAddr(e.peers[id]))
	}
	return opts
}

func (e *emberScale) put(ctx context.Context, key, val string) (int64, error) {
	r, err := e.s.Put(ctx, key, val)
	if err != nil {
		return 0, err
	}
	return r.Header.Revision, nil
}

func (e *emberScale) get(ctx context.Context, key string) error {
	_, err := e.s.Get(ctx, key)
	return err
}

func (e *emberScale) compact(ctx context.Context, rev int64) error {
	_, err := e.s.Compact(ctx, rev, ember.WithCompactPhysical())
	return err
}

func (e *emberScale) page(ctx context.Context, key, end string, rev int64, limit int) (int, string, int64, bool, error) {
	r, err := e.s.Get(ctx, key, ember.WithRange(end), ember.WithRev(rev), ember.WithLimit(int64(limit)))
	if err != nil || len(r.Kvs) == 0 {
		return 0, "", 0, false, errors.Join(err, errors.New("ember: empty page"))
	}
	return len(r.Kvs), string(r.Kvs[len(r.Kvs)-1].Key), r.Header.Revision, r.More, nil
}

func (e *emberScale) close() error {
	var errs []error
	for _, s := range e.all {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// etcdScale sends everything to the leader's client c; es and cs are all members and clients,
// their dirs under root, their URLs peers and clients, initial their --initial-cluster. The wipe
// cell (scaleWipe) replaces es[wiped] and cs[wiped] by a new member of ID wipedID.
type etcdScale struct {
	c              *clientv3.Client
	es             []*embed.Etcd
	cs             []*clientv3.Client
	root           string
	peers, clients []url.URL
	initial        string
	wiped          int
	wipedID        uint64
}

// memberConfig is the config of member i: etcd's defaults apart from the space quota and logs.
func (e *etcdScale) memberConfig(i int) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = memberName(i)
	cfg.Dir = filepath.Join(e.root, cfg.Name)
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{e.peers[i]}, []url.URL{e.peers[i]}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{e.clients[i]}, []url.URL{e.clients[i]}
	cfg.InitialCluster = e.initial
	cfg.QuotaBackendBytes = scaleQuota
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	return cfg
}

func (e *etcdScale) put(ctx context.Context, key, val string) (int64, error) {
	r, err := e.c.Put(ctx, key, val)
	if err != nil {
		return 0, err
	}
	return r.Header.Revision, nil
}

func (e *etcdScale) get(ctx context.Context, key string) error {
	_, err := e.c.Get(ctx, key)
	return err
}

func (e *etcdScale) compact(ctx context.Context, rev int64) error {
	_, err := e.c.Compact(ctx, rev, clientv3.WithCompactPhysical())
	return err
}

func (e *etcdScale) page(ctx context.Context, key, end string, rev int64, limit int) (int, string, int64, bool, error) {
	r, err := e.c.Get(ctx, key, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(int64(limit)))
	if err != nil || len(r.Kvs) == 0 {
		return 0, "", 0, false, errors.Join(err, errors.New("etcd: empty page"))
	}
	return len(r.Kvs), string(r.Kvs[len(r.Kvs)-1].Key), r.Header.Revision, r.More, nil
}

func (e *etcdScale) close() error {
	for _, c := range e.cs {
		if c != nil { // nil: a member the wipe cell removed and could not add back
			c.Close()
		}
	}
	for _, m := range e.es {
		if m != nil {
			m.Close()
		}
	}
	return nil
}

// scaleChild is the child's side: it runs every step on one member in a temp dir and returns
// the figures.
func scaleChild(cfg scaleConfig) (scaleResult, error) {
	r := scaleResult{System: cfg.System, Members: cfg.Members, Keys: cfg.Keys, ValueSize: cfg.ValueSize}
	opener := scaleOpeners[cfg.System]
	if opener == nil {
		return r, fmt.Errorf("unknown system %q", cfg.System)
	}
	if cfg.Keys < 1 || cfg.ValueSize < 1 || cfg.Members < 1 {
		return r, fmt.Errorf("%d keys of %d bytes on %d members", cfg.Keys, cfg.ValueSize, cfg.Members)
	}
	root, err := os.MkdirTemp("", "ember-bench-scale-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(root)
	open, err := opener(root, cfg.Members)
	if err != nil {
		return r, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), scaleChildTime)
	defer cancel()
	st, err := open(ctx)
	if err != nil {
		return r, fmt.Errorf("open: %w", err)
	}
	defer func() {
		if st != nil {
			st.close()
		}
	}()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+"scale %s: "+format+"\n", append([]any{cfg.System}, args...)...)
	}
	keys := keyTable(scalePrefix, cfg.Keys)
	// Values are random bytes, so that no layer can compress them; each key gets a different
	// window of a buffer twice the value size.
	rnd := make([]byte, 2*cfg.ValueSize)
	for i := range rnd {
		rnd[i] = byte('a' + rand.IntN(26))
	}
	pool := string(rnd)
	val := func(i, round int) string {
		o := (i*7 + round*13) % cfg.ValueSize
		return pool[o : o+cfg.ValueSize]
	}
	settle := func() (heap, anon uint64, err error) {
		time.Sleep(cfg.Settle)
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		anon, err = rssAnon()
		return ms.HeapInuse, anon, err
	}

	// 1-2. Load, then memory.
	t0 := time.Now()
	if _, err := writeAll(ctx, st, keys, func(i int) string { return val(i, 0) }); err != nil {
		return r, fmt.Errorf("load: %w", err)
	}
	r.LoadRate = float64(cfg.Keys) / time.Since(t0).Seconds()
	logf("loaded %d keys, %.0f keys/s", cfg.Keys, r.LoadRate)
	if r.HeapAfterLoad, r.RssAnonAfterLoad, err = settle(); err != nil {
		return r, err
	}

	// 3. Overwrite, then memory.
	t0 = time.Now()
	compactRev, err := writeAll(ctx, st, keys, func(i int) string { return val(i, 1) })
	if err != nil {
		return r, fmt.Errorf("overwrite: %w", err)
	}
	r.OverwriteRate = float64(cfg.Keys) / time.Since(t0).Seconds()
	logf("overwrote %d keys, %.0f keys/s", cfg.Keys, r.OverwriteRate)
	if r.HeapAfterOverwrite, r.RssAnonAfterOverwrite, err = settle(); err != nil {
		return r, err
	}

	// 4. Steady puts.
	if r.SteadyRate, err = steadyPuts(ctx, st, keys, val(0, 2), cfg.Duration); err != nil {
		return r, fmt.Errorf("steady puts: %w", err)
	}
	logf("steady puts %.0f/s", r.SteadyRate)

	// 5. Compact with a putter and a getter beside it.
	run, err := compactUnderLoad(ctx, st, compactRev, keys[0], val(0, 3), false)
	if err != nil {
		return r, fmt.Errorf("compact: %w", err)
	}
	r.CompactTime, r.CompactMaxPut, r.CompactMaxGet, r.CompactPuts, r.CompactGets = run.Time, run.MaxPut, run.MaxGet, run.Puts, run.Gets
	r.CompactRuns = append(r.CompactRuns, run)
	logf("compacted at %d in %v; longest put %v, get %v", compactRev, run.Time, run.MaxPut, run.MaxGet)

	// 6. Paginated LIST.
	t0 = time.Now()
	end := clientv3.GetPrefixRangeEnd(scalePrefix)
	n, last, rev, more, err := st.page(ctx, scalePrefix, end, 0, scalePage)
	for err == nil && more {
		var k int
		k, last, _, more, err = st.page(ctx, last+"\x00", end, rev, scalePage)
		n += k
	}
	if err != nil {
		return r, fmt.Errorf("list: %w", err)
	}
	if n != cfg.Keys {
		return r, fmt.Errorf("list: %d keys, want %d", n, cfg.Keys)
	}
	r.ListRate = float64(n) / time.Since(t0).Seconds()
	logf("listed %d keys, %.0f keys/s", n, r.ListRate)

	// 7. Close and restart.
	t0 = time.Now()
	err = st.close()
	st = nil
	if err != nil {
		return r, fmt.Errorf("close: %w", err)
	}
	r.CloseTime = time.Since(t0)
	t0 = time.Now()
	if st, err = open(ctx); err != nil {
		return r, fmt.Errorf("reopen: %w", err)
	}
	for {
		if err = st.get(ctx, keys[0]); err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err != nil {
		return r, fmt.Errorf("first read after restart: %w", err)
	}
	r.RestartTime = time.Since(t0)
	logf("closed in %v, first read %v after reopening", r.CloseTime, r.RestartTime)
	if r.HeapAfterRestart, r.RssAnonAfterRestart, err = settle(); err != nil {
		return r, err
	}

	// 8. The compaction cell's further rounds, closed then paced, each after an overwrite that
	// gives it as many old versions to remove.
	for round := 2; round <= cfg.CompactRounds+cfg.PacedRounds; round++ {
		rev, err := writeAll(ctx, st, keys, func(i int) string { return val(i, 4+round) })
		if err != nil {
			return r, fmt.Errorf("overwrite before compaction round %d: %w", round, err)
		}
		paced := round > cfg.CompactRounds
		run, err := compactUnderLoad(ctx, st, rev, keys[0], val(0, 3), paced)
		if err != nil {
			return r, fmt.Errorf("compaction round %d: %w", round, err)
		}
		r.CompactRuns = append(r.CompactRuns, run)
		logf("compaction round %d (paced %v) at %d in %v; longest put %v, get %v; %d puts, %d gets", round, paced, rev, run.Time, run.MaxPut, run.MaxGet, run.Puts, run.Gets)
	}

	// 9. A follower wiped and added back under writes. Last, so that the cells above are as in
	// runs without it, and on the compacted state that a restart left.
	if cfg.Members > 1 {
		if err := scaleWipe(ctx, st.(scaleReplacer), keys, val(0, 4), cfg.Duration, &r, logf); err != nil {
			return r, fmt.Errorf("wipe: %w", err)
		}
	}
	return r, nil
}

// writeAll puts every key once from scaleLoaders writers and returns the highest revision
// acknowledged, the store's revision once all are done.
func writeAll(ctx context.Context, st scaleStore, keys []string, val func(i int) string) (int64, error) {
	var next, maxRev atomic.Int64
	errs := make(chan error, scaleLoaders)
	for range scaleLoaders {
		go func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(keys) {
					errs <- nil
					return
				}
				rev, err := st.put(ctx, keys[i], val(i))
				if err != nil {
					errs <- err
					return
				}
				for {
					m := maxRev.Load()
					if rev <= m || maxRev.CompareAndSwap(m, rev) {
						break
					}
				}
			}
		}()
	}
	var err error
	for range scaleLoaders {
		err = errors.Join(err, <-errs)
	}
	return maxRev.Load(), err
}

// steadyPuts returns the put rate of scaleSteady writers putting random loaded keys for d.
func steadyPuts(ctx context.Context, st scaleStore, keys []string, val string, d time.Duration) (float64, error) {
	var ops atomic.Int64
	var stop atomic.Bool
	errs := make(chan error, scaleSteady)
	t0 := time.Now()
	for range scaleSteady {
		go func() {
			for !stop.Load() {
				if _, err := st.put(ctx, keys[rand.IntN(len(keys))], val); err != nil {
					errs <- err
					return
				}
				ops.Add(1)
			}
			errs <- nil
		}()
	}
	time.Sleep(d)
	// Puts in flight at the end are not counted, nor is the time they take to finish.
	n, elapsed := ops.Load(), time.Since(t0)
	stop.Store(true)
	var err error
	for range scaleSteady {
		err = errors.Join(err, <-errs)
	}
	return float64(n) / elapsed.Seconds(), err
}

// The paced compaction rounds' load: a busy host's reads and writes, far below what either
// system serves, so that a long wait is the store stalling and not a queue the load built.
const (
	scalePacedGetEvery = time.Millisecond      // 1,000 linearizable gets/s
	scalePacedPutEvery = 10 * time.Millisecond // 100 puts/s
)

// compactUnderLoad compacts at rev while a putter and a linearizable getter run, and returns the
// round's figures (see scaleResult's Compact figures).
//
// Closed (paced false): each loop starts its next op when the last returns, and a wait runs from
// one completion to the next. The loops take all the CPU they can, so on a machine with few
// cores the waits also measure how the system shares the CPU between them and its own work: an
// in-process client that answers in microseconds competes harder than one behind gRPC.
//
// Paced: each op starts on a fixed schedule (scalePaced*Every), and a wait runs from the time
// the op was due to its completion, so that an op started late because the one before stalled
// counts that stall too (no coordinated omission).
func compactUnderLoad(ctx context.Context, st scaleStore, rev int64, getKey, val string, paced bool) (compactRun, error) {
	type wait struct{ from, to time.Time }
	var stop atomic.Bool
	var wg sync.WaitGroup
	waits := make([][]wait, 2)
	errs := make([]error, 2)
	warm := make(chan struct{}, 2)
	for i, op := range []struct {
		do    func() error
		every time.Duration
	}{
		{func() error { _, err := st.put(ctx, scaleBgKey, val); return err }, scalePacedPutEvery},
		{func() error { return st.get(ctx, getKey) }, scalePacedGetEvery},
	} {
		if !paced {
			op.every = 0
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Three unmeasured ops first, so that the window starts with both loops running
			// and after a completion of each. The loop ends with an op started after the
			// window, so that the waits cover the window whatever the scheduling.
			var from time.Time // the last completion (closed), the time the op is due (paced)
			for n := 0; ; n++ {
				last := stop.Load()
				if op.every > 0 {
					if n == 0 {
						from = time.Now()
					} else {
						from = from.Add(op.every)
					}
					time.Sleep(time.Until(from))
				}
				if errs[i] = op.do(); errs[i] != nil {
					if n < 3 {
						warm <- struct{}{}
					}
					return
				}
				now := time.Now()
				if n >= 3 {
					waits[i] = append(waits[i], wait{from, now})
				} else if n == 2 {
					warm <- struct{}{}
				}
				if op.every == 0 {
					from = now
				}
				if last {
					return
				}
			}
		}()
	}
	<-warm
	<-warm
	t0 := time.Now()
	err := st.compact(ctx, rev)
	t1 := time.Now()
	stop.Store(true)
	wg.Wait()
	if err = errors.Join(err, errs[0], errs[1]); err != nil {
		return compactRun{}, err
	}
	run := compactRun{Paced: paced, Time: t1.Sub(t0)}
	for i, ws := range waits {
		for _, w := range ws {
			if w.from.After(t1) || w.to.Before(t0) {
				continue
			}
			if i == 0 {
				run.Puts++
				run.MaxPut = max(run.MaxPut, w.to.Sub(w.from))
			} else {
				run.Gets++
				run.MaxGet = max(run.MaxGet, w.to.Sub(w.from))
			}
		}
	}
	return run, nil
}

// rssAnon returns RssAnon of /proc/self/status: resident anonymous memory, without file-backed
// pages such as an mmapped database file.
func rssAnon() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.Join(sc.Err(), errors.New("no RssAnon in /proc/self/status"))
}

// printScale writes the scale tables, one per member count: one row per figure, ember and etcd
// side by side.
func printScale(w io.Writer, rs []scaleResult) {
	var counts []int
	bySys := map[int]map[string]scaleResult{}
	for _, r := range rs {
		if bySys[r.Members] == nil {
			bySys[r.Members] = map[string]scaleResult{}
			counts = append(counts, r.Members)
		}
		bySys[r.Members][r.System] = r
	}
	cell := func(r scaleResult, ok bool, row scaleRow) string {
		switch {
		case !ok:
			return "—"
		case r.Err != "":
			return "error"
		}
		return row.format(row.val(r))
	}
	for _, m := range counts {
		e, eok := bySys[m]["ember"]
		d, dok := bySys[m]["etcd"]
		rounds, paced := 0, 0
		for _, r := range []scaleResult{e, d} {
			n := 0
			for _, c := range r.CompactRuns {
				if c.Paced {
					n++
				}
			}
			rounds, paced = max(rounds, len(r.CompactRuns)-n), max(paced, n)
		}
		what := "1 member"
		if m > 1 {
			what = fmt.Sprintf("%d members in one process (memory: their sum)", m)
		}
		fmt.Fprintf(w, "| scale, %s, %s keys of %d B | ember | etcd | ember/etcd |\n", what, thousands(float64(rs[0].Keys)), rs[0].ValueSize)
		fmt.Fprintln(w, "|---|---:|---:|---:|")
		both := eok && dok && e.Err == "" && d.Err == ""
		for _, row := range scaleRows {
			if row.multi && m == 1 || row.rounds && rounds < 2 || row.paced && paced == 0 {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", row.name, cell(e, eok, row), cell(d, dok, row), ratio(row.val(e), row.val(d), both))
		}
		for _, r := range []scaleResult{e, d} {
			if r.Err != "" {
				fmt.Fprintf(w, "\n%s error: %s\n", r.System, r.Err)
			}
		}
		fmt.Fprintln(w)
	}
}
