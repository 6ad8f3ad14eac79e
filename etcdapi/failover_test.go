package etcdapi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ember-kv/ember/embertest"
)

// gwOutcome is what a clientv3 caller learns of a write's effect from its error.
type gwOutcome uint8

const (
	gwOK       gwOutcome = iota
	gwDefinite           // an etcd error that promises no effect ("no leader", "server stopped"...)
	gwUnknown            // a timeout, the caller's deadline, a broken connection: it may have applied
)

// gwUnknownErrors are the etcd errors that leave a write's outcome open.
var gwUnknownErrors = []error{
	rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost,
	rpctypes.ErrTimeoutWaitAppliedIndex,
}

// classifyGateway classifies the error clientv3 returned for a write. clientv3 converts every
// status etcd defines into an rpctypes.EtcdError; those promise no effect unless they are a
// timeout. Anything else (a context error, a transport status) leaves the outcome open.
func classifyGateway(err error) gwOutcome {
	if err == nil {
		return gwOK
	}
	for _, u := range gwUnknownErrors {
		if errors.Is(err, u) {
			return gwUnknown
		}
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return gwDefinite
	}
	return gwUnknown
}

// gwWrite is one put or CAS a gateway client ran, with a value no other write uses.
type gwWrite struct {
	member   string
	key, val string
	cas      bool
	expRev   int64 // CAS: If ModRevision(key) = expRev
	outcome  gwOutcome
	err      error
	rev      int64 // acknowledged: the response's revision
	swapped  bool  // acknowledged CAS: Succeeded
}

// gwRun is the state of one gateway failover run: per-member clients that are replaced when a
// member restarts, and every write's record.
type gwRun struct {
	c *embertest.Cluster

	mu      sync.Mutex
	clients map[string]*clientv3.Client // member ID → gateway client; absent while stopped
	writes  []*gwWrite
}

func (r *gwRun) client(id string) *clientv3.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clients[id]
}

// connect serves member id's current store through a new in-process gateway client.
func (r *gwRun) connect(id string) {
	cli := NewClient(r.c.Member(id).Store())
	r.mu.Lock()
	r.clients[id] = cli
	r.mu.Unlock()
}

// detach takes member id's client from the workers and returns it: writes in flight on it go
// on, and no new ones start.
func (r *gwRun) detach(id string) *clientv3.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	cli := r.clients[id]
	delete(r.clients, id)
	return cli
}

// disconnect detaches member id's client and closes it.
func (r *gwRun) disconnect(id string) {
	if cli := r.detach(id); cli != nil {
		cli.Close()
	}
}

func (r *gwRun) record(w *gwWrite) {
	r.mu.Lock()
	r.writes = append(r.writes, w)
	r.mu.Unlock()
}

// worker writes through member's gateway until stop closes: puts of unique values and CAS
// transactions (If ModRevision(k) = last seen Then Put Else Get) on a few keys.
func (r *gwRun) worker(id int, member string, stop <-chan struct{}) {
	seen := map[string]int64{} // key → last mod revision this worker learned
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		cli := r.client(member)
		if cli == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		w := &gwWrite{member: member, key: fmt.Sprintf("g/%d", seq%8), val: fmt.Sprintf("w%d-%d", id, seq), cas: seq%3 == 2}
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		if w.cas {
			w.expRev = seen[w.key]
			var resp *clientv3.TxnResponse
			resp, w.err = cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(w.key), "=", w.expRev)).
				Then(clientv3.OpPut(w.key, w.val)).Else(clientv3.OpGet(w.key)).Commit()
			if w.err == nil {
				w.rev, w.swapped = resp.Header.Revision, resp.Succeeded
				seen[w.key] = w.rev
				if !resp.Succeeded {
					seen[w.key] = 0
					if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
						seen[w.key] = kvs[0].ModRevision
					}
				}
			}
		} else {
			var resp *clientv3.PutResponse
			resp, w.err = cli.Put(ctx, w.key, w.val)
			if w.err == nil {
				w.rev = resp.Header.Revision
				seen[w.key] = w.rev
			}
		}
		cancel()
		w.outcome = classifyGateway(w.err)
		r.record(w)
		if w.err != nil {
			time.Sleep(10 * time.Millisecond) // no busy loop on a member that cannot serve
		}
	}
}

// killLeader stops the leader while followers' writes are forwarded to it, in one of three ways,
// and returns its ID once the others have elected a new leader.
func (r *gwRun) killLeader(t *testing.T, mode int) string {
	t.Helper()
	l := r.c.Leader()
	net := r.c.Network()
	switch mode % 3 {
	case 1:
		// The leader applies forwarded writes, and its answers vanish: the followers only learn
		// the outcome by retrying on the next leader.
		for _, f := range r.c.Followers() {
			net.SetFault(f.ID, l.ID, embertest.Fault{LostReplies: true})
		}
	case 2:
		// The followers' acknowledgements vanish: forwarded writes wait in the leader's raft
		// log, appended and replicated but not known to be committed, when it stops.
		for _, f := range r.c.Followers() {
			net.SetFault(l.ID, f.ID, embertest.Fault{LostReplies: true})
		}
	}
	time.Sleep(150 * time.Millisecond)
	// The leader's own clients stop sending; their writes in flight meet the stop.
	cli := r.detach(l.ID)
	start := time.Now()
	var stopped time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.c.Stop(l.ID)
		stopped = time.Since(start)
	}()
	// Heal while the leader stops: raft's shutdown would otherwise wait out its transport's
	// I/O timeout for the acknowledgements that mode 2 discards.
	select {
	case <-done:
	case <-time.After(400 * time.Millisecond):
	}
	r.c.Heal()
	<-done
	cli.Close()
	nl := r.c.Leader()
	t.Logf("kill %d: leader %s stopped in %v, %s leads after %v", mode, l.ID, stopped.Round(time.Millisecond),
		nl.ID, time.Since(start).Round(time.Millisecond))
	return l.ID
}

// TestGateway_G1LeaderKilledMidForward is G1 through the etcd gateway: clientv3 clients on every
// member put unique values and run CAS transactions while the leader is killed mid-forward and
// restarted, several times. Afterwards, from the full history of every key (a watch from
// revision 1): no write reported as a definite failure is visible, every acknowledged write is
// at the revision its response gave, an acknowledged failed CAS wrote nothing, and every CAS
// that took effect, acknowledged or not, found the mod revision it compared against.
// EMBER_SOAK=1 runs it longer, with more kills.
func TestGateway_G1LeaderKilledMidForward(t *testing.T) {
	kills, workersPer, traffic := 6, 2, 500*time.Millisecond
	if os.Getenv("EMBER_SOAK") != "" {
		kills, workersPer, traffic = 30, 3, 2*time.Second
	}
	c := embertest.NewCluster(t, 3)
	r := &gwRun{c: c, clients: map[string]*clientv3.Client{}}
	for _, m := range c.Members() {
		r.connect(m.ID)
	}
	t.Cleanup(func() {
		for _, m := range c.Members() {
			r.disconnect(m.ID)
		}
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	workers := 0
	for _, m := range c.Members() {
		for range workersPer {
			workers++
			id := workers
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.worker(id, m.ID, stop)
			}()
		}
	}
	start := time.Now()
	for k := range kills {
		time.Sleep(traffic)
		id := r.killLeader(t, k)
		time.Sleep(traffic / 2)
		start := time.Now()
		c.Restart(id)
		r.connect(id)
		t.Logf("restart of %s: %v", id, time.Since(start).Round(time.Millisecond))
	}
	time.Sleep(traffic)
	close(stop)
	wg.Wait()
	c.WaitReady()
	elapsed := time.Since(start)

	history := gwHistory(t, r.client(c.Leader().ID))
	checkGatewayWrites(t, r.writes, history)
	counts := map[gwOutcome]int{}
	applied := 0
	for _, w := range r.writes {
		counts[w.outcome]++
		if _, ok := history[w.val]; ok && w.outcome == gwUnknown {
			applied++
		}
	}
	t.Logf("%d writes through the gateway in %v with %d leader kills: %d acknowledged, %d definite failures, %d unknown outcomes (%d of them applied)",
		len(r.writes), elapsed.Round(time.Millisecond), kills, counts[gwOK], counts[gwDefinite], counts[gwUnknown], applied)
	logErrors(t, r.writes)
	if counts[gwOK] == 0 {
		t.Fatal("no write was acknowledged: the run proves nothing")
	}
}

// gwEvent is one version of a key in the history: the put that wrote a value, and the mod
// revision of the key's version before it (0: the key did not exist).
type gwEvent struct {
	kv      *mvccpb.KeyValue
	prevMod int64
}

// gwHistory reads every put under g/ since revision 1, by value.
func gwHistory(t *testing.T, cli *clientv3.Client) map[string]gwEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	last, err := cli.Get(ctx, "g/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("final revision: %v", err)
	}
	out := map[string]gwEvent{}
	if last.Header.Revision <= 1 {
		return out
	}
	prevMod := map[string]int64{}
	wc := cli.Watch(ctx, "g/", clientv3.WithPrefix(), clientv3.WithRev(1))
	for resp := range wc {
		if err := resp.Err(); err != nil {
			t.Fatalf("history watch: %v", err)
		}
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			if ev.Type == clientv3.EventTypePut {
				out[string(ev.Kv.Value)] = gwEvent{kv: ev.Kv, prevMod: prevMod[key]}
				prevMod[key] = ev.Kv.ModRevision
			} else {
				prevMod[key] = 0
			}
		}
		if n := len(resp.Events); n > 0 && resp.Events[n-1].Kv.ModRevision >= last.Header.Revision {
			return out
		}
	}
	t.Fatalf("history watch ended before revision %d", last.Header.Revision)
	return nil
}

// checkGatewayWrites holds every write's reported outcome to the history.
func checkGatewayWrites(t *testing.T, writes []*gwWrite, history map[string]gwEvent) {
	t.Helper()
	violations := 0
	fail := func(w *gwWrite, format string, args ...any) {
		violations++
		if violations <= 20 {
			t.Errorf("write %s=%s via %s (cas %v, expected rev %d): %s", w.key, w.val, w.member, w.cas, w.expRev, fmt.Sprintf(format, args...))
		}
	}
	for _, w := range writes {
		ev, visible := history[w.val]
		switch {
		case w.outcome == gwDefinite && visible:
			fail(w, "reported %q (no effect), but written at revision %d", w.err, ev.kv.ModRevision)
		case w.outcome == gwOK && w.cas && !w.swapped && visible:
			fail(w, "CAS reported not swapped, but written at revision %d", ev.kv.ModRevision)
		case w.outcome == gwOK && (!w.cas || w.swapped) && !visible:
			fail(w, "acknowledged at revision %d, missing from the history", w.rev)
		case w.outcome == gwOK && (!w.cas || w.swapped) && (ev.kv.ModRevision != w.rev || string(ev.kv.Key) != w.key):
			fail(w, "acknowledged at revision %d, history has %s at %d", w.rev, ev.kv.Key, ev.kv.ModRevision)
		}
		if visible && w.cas && ev.prevMod != w.expRev {
			fail(w, "CAS took effect at revision %d over mod revision %d, but compared against %d", ev.kv.ModRevision, ev.prevMod, w.expRev)
		}
	}
	if violations > 0 {
		t.Errorf("%d violations in %d writes", violations, len(writes))
	}
}

// logErrors logs how often each write error occurred, most frequent first.
func logErrors(t *testing.T, writes []*gwWrite) {
	n := map[string]int{}
	for _, w := range writes {
		if w.err != nil {
			n[fmt.Sprintf("%v (%s)", w.err, [...]string{"ok", "definite", "unknown"}[w.outcome])]++
		}
	}
	msgs := make([]string, 0, len(n))
	for m := range n {
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool { return n[msgs[i]] > n[msgs[j]] })
	for _, m := range msgs {
		t.Logf("%5d × %s", n[m], m)
	}
}
