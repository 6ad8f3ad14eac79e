package ember_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/internal/syncbuf"
)

// A member that needs a snapshot catches up although the writes add more entries while the
// snapshot is sent and installed than raft keeps behind a snapshot: the leader keeps its log
// until the member has caught up. Without that, every install is followed by another, for as
// long as the writes go on.
func TestCluster_SnapshotCatchUp_WritesOutpaceTrailingLogs(t *testing.T) {
	// The bolt log store: the WAL still serves truncated entries from its open segment (64 MiB),
	// far more than this test writes.
	c := embertest.NewCluster(t, 3, ember.WithLogStore(ember.LogStoreBolt), ember.WithSnapshotThreshold(32), ember.WithRaftConfig(func(rc *raft.Config) {
		rc.TrailingLogs = 32
		rc.SnapshotInterval = 50 * time.Millisecond
	}))
	ctx := ctxFor(t, 2*time.Minute)
	l := c.Leader()
	// A state of 3 MB, which the slowed link below takes seconds to carry.
	value := strings.Repeat("v", 8<<10)
	for i := range 384 {
		if _, err := l.Store().Put(ctx, fmt.Sprintf("big/%03d", i), value); err != nil {
			t.Fatal(err)
		}
	}
	victim := c.Followers()[0]
	c.Remove(victim.ID)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // writes at a few hundred a second, through the catch-up
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			l.Store().Put(wctx, fmt.Sprintf("during/%d", i%100), "v")
			cancel()
		}
	}()
	var once sync.Once
	stopWrites := func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
		})
	}
	defer stopWrites()
	c.Network().SetFault(l.ID, victim.ID, embertest.Fault{Delay: 50 * time.Millisecond})
	var logs syncbuf.Buffer
	s := c.Rejoin(victim.ID, ember.WithLogger(hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})))
	installs := func() int { return strings.Count(logs.String(), "Installed remote snapshot") }
	caughtUp := false
	for deadline := time.Now().Add(45 * time.Second); !caughtUp && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		lead, err := l.Store().Get(ctx, "big/000", ember.WithSerializable())
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "big/000", ember.WithSerializable())
		caughtUp = err == nil && got.Header.Revision+64 >= lead.Header.Revision && installs() > 0
	}
	t.Logf("%d snapshot installs", installs())
	if !caughtUp {
		lines := strings.Split(logs.String(), "\n")
		t.Logf("first lines of %s's log:\n%s", victim.ID, strings.Join(lines[:min(len(lines), 40)], "\n"))
		for _, l := range lines {
			if strings.Contains(strings.ToLower(l), "install") || strings.Contains(l, "restor") {
				t.Log(l)
			}
		}
		t.Fatalf("%s not caught up after 45 s of writes and %d snapshot installs", victim.ID, installs())
	}
	if n := installs(); n > 2 {
		t.Errorf("%d snapshot installs, want 1 or 2", n)
	}
	// The hold ends once the member has caught up: raft truncates the leader's log again.
	stopWrites()
	c.Network().SetFault(l.ID, victim.ID, embertest.Fault{})
	waitFor(t, 10*time.Second, "the leader's log hold to end", func() bool { return ember.TrailingLogs(l.Store()) == 32 })
}
