package reliability

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/internal/syncbuf"
)

// TestWatch_SnapshotInstallRacesCatchUp is G2 with snapshot installs: a follower is kept behind
// by a partition while the leader snapshots and truncates its log, then healed, so that it
// installs a snapshot, in several rounds. Watchers on it are opened before, during and around
// each heal, most from old revisions with slow readers, so that they are catching up from
// history, or have just registered as synced, when the snapshot replaces the state under them.
// Every stream is checked with watchcheck (no skip, no repeat, order, atomic revisions) against
// the history a recorder on the leader received.
func TestWatch_SnapshotInstallRacesCatchUp(t *testing.T) {
	tr := loadTier(t)
	rounds := 2
	if tr.soak {
		rounds = 20
	}
	rng := rand.New(rand.NewSource(tr.seed))
	logs := &syncbuf.Buffer{}
	c := newCluster(t, 3, append(append([]ember.Option(nil), snapshotOptions...), ember.WithLogger(installLogger(logs)))...)
	clk := newClock()
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		bg.Wait()
	})
	leader, lagger := c.Leader(), c.Followers()[0]
	traffic := make(chan struct{})

	rec := newWatcher(watchSpec{name: "recorder", end: "\x00", start: startNow, prevKV: true}, leader, clk, traffic)
	bg.Add(1)
	go func() { defer bg.Done(); rec.run(ctx) }()
	waitFor(t, 10*time.Second, "the recorder's watch", func() bool { return rec.reached.Load() > 0 })

	var writers sync.WaitGroup
	for i := range 4 {
		wrng := rand.New(rand.NewSource(rng.Int63()))
		writers.Add(1)
		go func() {
			defer writers.Done()
			snapWriter(ctx, leader.Store(), wrng, i, traffic)
		}()
	}

	var watchers []*watcher
	open := func(sp watchSpec) {
		w := newWatcher(sp, lagger, clk, traffic)
		watchers = append(watchers, w)
		bg.Add(1)
		go func() { defer bg.Done(); w.run(ctx) }()
	}
	// Catching up from far back, slowly: still reading history when the snapshot comes.
	catchUp := func(when string) {
		open(watchSpec{name: "prefix k/ from 1, prevKV, slow, " + when, key: "k/", prefix: true, start: startPast,
			delta: 1 << 40, prevKV: true, slow: 20 * time.Millisecond})
		open(watchSpec{name: "k/3 from 300 back, " + when, key: "k/3", start: startPast, delta: 300})
		open(watchSpec{name: "range [k/2, k/6) from 1000 back, deletes filtered, slow, " + when, key: "k/2", end: "k/6",
			start: startPast, delta: 1000, filterDelete: true, slow: 5 * time.Millisecond})
	}
	open(watchSpec{name: "all keys now, prevKV", end: "\x00", start: startNow, prevKV: true})
	open(watchSpec{name: "prefix k/ 100 ahead, puts filtered", key: "k/", prefix: true, start: startFuture, delta: 100, filterPut: true})
	installs := 0
	for round := range rounds {
		catchUp(fmt.Sprintf("round %d, before the partition", round))
		time.Sleep(500 * time.Millisecond)
		from := appliedIndex(t, leader.Store())
		isolate(c, lagger.ID)
		time.Sleep(time.Second)
		// Far enough ahead that the leader's log no longer reaches back to the lagger.
		waitFor(t, 30*time.Second, "the leader to apply 200 entries during the partition", func() bool {
			return appliedIndex(t, leader.Store()) >= from+200
		})
		catchUp(fmt.Sprintf("round %d, during the partition", round))
		time.Sleep(500 * time.Millisecond)
		catchUp(fmt.Sprintf("round %d, just before the heal", round))
		time.Sleep(20 * time.Millisecond)
		c.Network().HealAll()
		for _, d := range []time.Duration{0, 20 * time.Millisecond, 100 * time.Millisecond} {
			time.Sleep(d)
			catchUp(fmt.Sprintf("round %d, %v after the heal", round, d))
		}
		waitFor(t, 30*time.Second, fmt.Sprintf("a snapshot install in round %d", round), func() bool {
			return snapshotInstalls(logs) > installs
		})
		installs = snapshotInstalls(logs)
		time.Sleep(500 * time.Millisecond)
	}
	close(traffic)
	writers.Wait()

	final := finalWrite(t, c, "final")
	rev := converge(t, c, final)
	if !rec.awaitReached(rev, time.Now().Add(30*time.Second)) {
		t.Fatalf("the recorder did not reach revision %d (reached %d)", rev, rec.reached.Load())
	}
	hist := recordedHistory(t, rec, rev)
	st := checkWatchers(t, watchers, hist, rev, 0)
	t.Logf("%d rounds, %d snapshot installs on %s, %d revisions; G2: %d watches, %d events, %d violations",
		rounds, installsBy(logs, lagger.ID), lagger.ID, rev, st.watches, st.events, st.violations)
}

func appliedIndex(t testing.TB, s *ember.Store) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st.AppliedIndex
}

// installsBy counts the snapshots member id installed.
func installsBy(buf *syncbuf.Buffer, id string) int {
	n := 0
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.Contains(line, "Installed remote snapshot") && strings.Contains(line, "member="+id) {
			n++
		}
	}
	return n
}

// snapWriter writes until traffic closes: puts, deletes, and transactions that change several
// keys at one revision (for the atomicity check). Errors are ignored: only the watch streams
// are checked, against what the recorder received.
func snapWriter(ctx context.Context, s *ember.Store, rng *rand.Rand, id int, traffic <-chan struct{}) {
	for i := 0; !closed(traffic) && ctx.Err() == nil; i++ {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		key := fmt.Sprintf("k/%d", rng.Intn(10))
		val := fmt.Sprintf("w%d-%d", id, i)
		switch rng.Intn(10) {
		case 0:
			s.Delete(wctx, key)
		case 1, 2:
			other := fmt.Sprintf("k/%d", (rng.Intn(9)+1+int(key[2]-'0'))%10)
			s.Txn(wctx).Then(ember.OpPut(key, val), ember.OpPut(other, val)).Commit()
		default:
			s.Put(wctx, key, val)
		}
		cancel()
	}
}
