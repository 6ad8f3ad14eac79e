package ember

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ember-kv/ember/internal/raftlog"
	"github.com/ember-kv/ember/internal/syncbuf"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// G5 (RELIABILITY_NOTES.md §8): disk-full and I/O errors from raft's log and stable stores, and
// damaged data dirs. Faults that can kill the process (raft and bbolt panic in their own
// goroutines, a truncated mmap raises SIGBUS) are provoked in a child process that re-executes
// this test binary, so that the test can report the crash instead of dying of it.

// dfFault makes the raft stores of one member fail on demand. Reads always work: the faults
// model a full or failing disk under writes, which is what ENOSPC and EIO report.
type dfFault struct {
	mu         sync.Mutex
	logErr     error // returned by StoreLog and StoreLogs while set
	writeFirst bool  // the next failing log write reaches the store before it fails
	stableErr  error // returned by Set and SetUint64 while set

	logHits    atomic.Int64 // log writes that failed
	stableHits atomic.Int64 // stable-store writes that failed
}

var (
	// ENOSPC as the os package reports it, and EIO bare, as a store might pass it on: both
	// shapes must be handled.
	dfErrNoSpace = &os.PathError{Op: "write", Path: "raft.db", Err: syscall.ENOSPC}
	dfErrIO      = syscall.EIO
)

// failLogs makes every log write fail with err, before it reaches the store, as when bbolt
// cannot grow its file: nothing of a refused batch is on disk. nil ends the fault.
func (f *dfFault) failLogs(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logErr, f.writeFirst = err, false
}

// failLogsAfterWrite makes the next log write reach the store and then fail with err, as when
// the data went out but fsync reported EIO; the writes after it fail as with failLogs.
func (f *dfFault) failLogsAfterWrite(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logErr, f.writeFirst = err, true
}

func (f *dfFault) failStable(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stableErr = err
}

// logFault returns the error for a log write, and whether the write goes to the store first.
func (f *dfFault) logFault() (err error, writeFirst bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.logErr == nil {
		return nil, false
	}
	f.logHits.Add(1)
	writeFirst, f.writeFirst = f.writeFirst, false
	return f.logErr, writeFirst
}

func (f *dfFault) stableFault() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stableErr != nil {
		f.stableHits.Add(1)
	}
	return f.stableErr
}

// option installs f around the member's stores.
func (f *dfFault) option() Option {
	return func(c *config) error {
		c.wrapStores = func(l raft.LogStore, s raft.StableStore) (raft.LogStore, raft.StableStore) {
			return &dfLogStore{LogStore: l, f: f}, &dfStableStore{StableStore: s, f: f}
		}
		return nil
	}
}

type dfLogStore struct {
	raft.LogStore
	f *dfFault
}

func (s *dfLogStore) IsMonotonic() bool { return raftlog.IsMonotonic(s.LogStore) }

func (s *dfLogStore) StoreLog(l *raft.Log) error {
	return s.StoreLogs([]*raft.Log{l})
}

func (s *dfLogStore) StoreLogs(ls []*raft.Log) error {
	err, writeFirst := s.f.logFault()
	if err == nil {
		return s.LogStore.StoreLogs(ls)
	}
	if writeFirst {
		if werr := s.LogStore.StoreLogs(ls); werr != nil {
			return werr
		}
	}
	return err
}

type dfStableStore struct {
	raft.StableStore
	f *dfFault
}

func (s *dfStableStore) Set(k, v []byte) error {
	if err := s.f.stableFault(); err != nil {
		return err
	}
	return s.StableStore.Set(k, v)
}

func (s *dfStableStore) SetUint64(k []byte, v uint64) error {
	if err := s.f.stableFault(); err != nil {
		return err
	}
	return s.StableStore.SetUint64(k, v)
}

// dfCtx returns a context that ends after d or with the test.
func dfCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// dfOpenSingle opens a single-member store on a real data dir with faults injectable.
func dfOpenSingle(t testing.TB, dir string, f *dfFault, opts ...Option) *Store {
	t.Helper()
	s, err := Open(dir, append([]Option{f.option()}, opts...)...)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.WaitReady(dfCtx(t, 30*time.Second)); err != nil {
		t.Fatalf("wait ready: %v", err)
	}
	return s
}

// dfMember is one member of a dfCluster, with its own faults, dialer and raft log.
type dfMember struct {
	id    string
	dir   string
	peers map[string]string
	fault *dfFault
	dial  *dfDialer
	logs  *dfLogBuffer
	store *Store
	// mu guards store against reopen while dfWriteLoad's goroutines read it through current;
	// the test goroutine itself uses store directly.
	mu sync.Mutex
}

func (m *dfMember) current() *Store {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.store
}

// reopenIfStopped reopens the member if its storage guard stopped it, as a host would, and
// reports whether it did.
func (m *dfMember) reopenIfStopped(t testing.TB) bool {
	t.Helper()
	if !m.store.stopped() {
		return false
	}
	m.store.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open(t)
	return true
}

// dfCluster starts n members on loopback with a static initial cluster and real data dirs.
// embertest cannot be used here: it imports ember, and these tests need ember's internals.
func dfCluster(t testing.TB, n int) []*dfMember {
	t.Helper()
	peers := map[string]string{}
	var ms []*dfMember
	for i := 1; i <= n; i++ {
		m := &dfMember{id: fmt.Sprintf("m%d", i), dir: t.TempDir(), peers: peers}
		peers[m.id] = freeAddr(t)
		ms = append(ms, m)
	}
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			var wg sync.WaitGroup
			for _, m := range ms {
				if m.store != nil {
					wg.Add(1)
					go func() {
						defer wg.Done()
						m.store.Close()
					}()
				}
			}
			wg.Wait()
		}()
		// A raft that deadlocked never finishes Shutdown; report it instead of hanging the
		// whole package until the test binary's timeout.
		wait := 10 * time.Second
		if len(dfStuckLeaders(ms)) > 0 {
			wait = time.Second
		}
		select {
		case <-done:
		case <-time.After(wait):
			t.Errorf("Close did not return within %v%s", wait, dfDiagnose(ms))
		}
	})
	for _, m := range ms {
		m.open(t)
	}
	for _, m := range ms {
		if err := m.store.WaitReady(dfCtx(t, 30*time.Second)); err != nil {
			t.Fatalf("%s not ready: %v", m.id, err)
		}
	}
	return ms
}

// open starts m from its data dir, with no faults, a working network and an empty log.
func (m *dfMember) open(t testing.TB) {
	t.Helper()
	m.fault, m.dial, m.logs = &dfFault{}, &dfDialer{}, &dfLogBuffer{}
	s, err := Open(m.dir, WithNodeID(m.id), WithBindAddr(m.peers[m.id]), WithInitialCluster(m.peers),
		// Tight enough that a lost leader is replaced within about a second; loose enough
		// for two loaded cores under -race.
		WithHeartbeatTimeout(500*time.Millisecond), WithElectionTimeout(500*time.Millisecond),
		WithDialer(m.dial.dial), m.fault.option(),
		WithLogger(hclog.New(&hclog.LoggerOptions{Name: m.id, Level: hclog.Warn, Output: m.logs})))
	if err != nil {
		t.Fatalf("open %s: %v", m.id, err)
	}
	m.store = s
}

// dfLogBuffer keeps a member's log, to recognize known raft failure modes in it.
type dfLogBuffer struct{ syncbuf.Buffer }

// tail returns the last n bytes of the log.
func (l *dfLogBuffer) tail(n int) string {
	s := l.String()
	return s[max(0, len(s)-n):]
}

// dfDialer is a member's way out to its peers, which a test can cut: new dials fail and the
// connections it made close. Peers can still dial the member.
type dfDialer struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (d *dfDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cut {
		c.Close()
		return nil, errors.New("dfDialer: cut")
	}
	d.conns = append(d.conns, c)
	return c, nil
}

func (d *dfDialer) setCut(cut bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cut = cut
	if cut {
		for _, c := range d.conns {
			c.Close()
		}
		d.conns = nil
	}
}

// dfLeader waits for a member that leads, other than not (nil: any).
func dfLeader(t testing.TB, ms []*dfMember, not *dfMember, within time.Duration) *dfMember {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, m := range ms {
			if m != not && m.store.IsLeader() {
				return m
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// dfAckLog records acknowledged writes: key → value. Every key is written once.
type dfAckLog struct {
	mu   sync.Mutex
	acks map[string]string
}

func (a *dfAckLog) add(k, v string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.acks == nil {
		a.acks = map[string]string{}
	}
	a.acks[k] = v
}

func (a *dfAckLog) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.acks)
}

// check asserts that every acknowledged write is visible in s, read locally (s must have caught
// up), and that no key in refused — writes that failed with an error that is not ErrTimeout,
// that is, writes reported as not done — is present.
func (a *dfAckLog) check(t testing.TB, s *Store, refused []string) {
	t.Helper()
	resp, err := s.Get(dfCtx(t, 10*time.Second), "", WithPrefix(), WithSerializable())
	if err != nil {
		t.Fatalf("read back on %s: %v", s.ID(), err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	lost := 0
	for k, v := range a.acks {
		if got[k] != v {
			lost++
			if lost <= 5 {
				t.Errorf("%s: acknowledged %s=%q, read %q", s.ID(), k, v, got[k])
			}
		}
	}
	if lost > 0 {
		t.Errorf("%s: %d of %d acknowledged writes lost", s.ID(), lost, len(a.acks))
	}
	for _, k := range refused {
		if v, ok := got[k]; ok {
			t.Errorf("%s: write of %s failed with a definite error, yet it was applied (value %q)", s.ID(), k, v)
		}
	}
}

// dfDefiniteFailure reports whether err tells the caller the write was not done. ErrTimeout is
// ember's only "outcome unknown" error (errors.go).
func dfDefiniteFailure(err error) bool { return err != nil && !errors.Is(err, ErrTimeout) }

// dfWaitCaughtUp waits until every member has applied what the leader had when it was called,
// and returns those that did. Each that did not fails the test, with a diagnosis: after 20s, or
// after 5s once a known raft failure mode shows.
func dfWaitCaughtUp(t testing.TB, ms []*dfMember) []*dfMember {
	t.Helper()
	l := dfLeader(t, ms, nil, 20*time.Second)
	if l == nil {
		t.Fatalf("no leader within 20s%s%s", dfStatuses(ms), dfDiagnose(ms))
	}
	st, err := l.store.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	lastDiagnosis := start
	var up []*dfMember
	for _, m := range ms {
		for {
			s, err := m.store.Status(context.Background())
			if err != nil {
				t.Fatalf("%s: %v", m.id, err)
			}
			if s.Revision >= st.Revision {
				up = append(up, m)
				break
			}
			waited := time.Since(start)
			if waited > 20*time.Second {
				t.Errorf("%s stuck below revision %d, which leader %s had, for 20s%s%s; the end of %s's log:\n%s",
					m.id, st.Revision, l.id, dfStatuses(ms), dfDiagnose(ms), m.id, m.logs.tail(2000))
				break
			}
			if waited > 5*time.Second && time.Since(lastDiagnosis) > time.Second {
				lastDiagnosis = time.Now()
				if d := dfDiagnose(ms); d != "" {
					t.Errorf("%s stuck below revision %d, which leader %s had, for %v%s%s",
						m.id, st.Revision, l.id, waited.Round(time.Second), dfStatuses(ms), d)
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return up
}

// dfStatuses describes each member's raft and MVCC progress, for failure messages.
func dfStatuses(ms []*dfMember) string {
	var b strings.Builder
	for _, m := range ms {
		s, err := m.store.Status(context.Background())
		if err != nil {
			fmt.Fprintf(&b, "; %s: %v", m.id, err)
			continue
		}
		fmt.Fprintf(&b, "; %s: leader %q term %d last index %d applied %d revision %d",
			m.id, s.Leader, s.RaftTerm, s.RaftIndex, s.AppliedIndex, s.Revision)
	}
	return b.String()
}

// dfStuckLeaders returns the members whose raft, in two goroutine dumps half a second apart, has
// a pipelined send parked handing its future to the decoder (net_transport.go:885) while that
// pipeline's decoder is parked handing the previous one on (net_transport.go:852). Goroutines
// are matched through the pointers in their stack frames, so that a deadlock left behind by an
// earlier test is not blamed on this one.
func dfStuckLeaders(ms []*dfMember) []string {
	stuck := dfStuckPipelines(ms)
	if len(stuck) == 0 {
		return nil
	}
	time.Sleep(500 * time.Millisecond)
	var out []string
	for id := range dfStuckPipelines(ms) {
		if stuck[id] {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func dfStuckPipelines(ms []*dfMember) map[string]bool {
	buf := make([]byte, 16<<20)
	goroutines := strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
	// firstArg returns the first argument printed for the frame of fn in g.
	firstArg := func(g, fn string) string {
		i := strings.Index(g, fn+"(")
		if i < 0 {
			return ""
		}
		rest := g[i+len(fn)+1:]
		return rest[:strings.IndexAny(rest, ",)")]
	}
	parked := map[string]bool{} // pipelines whose decoder waits on doneCh
	for _, g := range goroutines {
		if strings.Contains(g, "hashicorp/raft@v1.7.3/net_transport.go:852") {
			parked[firstArg(g, "raft.(*netPipeline).decodeResponses")] = true
		}
	}
	out := map[string]bool{}
	for _, g := range goroutines {
		if !strings.Contains(g, "hashicorp/raft@v1.7.3/net_transport.go:885") ||
			!parked[firstArg(g, "raft.(*netPipeline).AppendEntries")] {
			continue
		}
		for _, m := range ms {
			if m.store != nil && firstArg(g, "raft.(*Raft).pipelineSend") == fmt.Sprintf("%p", m.store.raft) {
				out[m.id] = true
			}
		}
	}
	return out
}

// dfDiagnose names the hashicorp/raft v1.7.3 failure modes, seen in these tests, that leave a
// member behind for good, when the goroutine dump or a member's log shows one.
func dfDiagnose(ms []*dfMember) string {
	var b strings.Builder
	// Pipeline deadlock: a follower answered a pipelined append with Success=false (here: its
	// log store failed), pipelineDecode returned (replication.go:545), and the leader's next
	// pipelined send parked for good in netPipeline.AppendEntries (net_transport.go:885) while
	// decodeResponses parks on doneCh (net_transport.go:852). The leader never replicates to
	// that follower again, and its Shutdown never returns.
	for _, id := range dfStuckLeaders(ms) {
		fmt.Fprintf(&b, "; %s's replication to a follower is parked in raft.(*netPipeline).AppendEntries while "+
			"its decodeResponses waits on doneCh for a pipelineDecode that has returned: the hashicorp/raft "+
			"pipeline deadlock (net_transport.go:885 and :852, replication.go:545)", id)
	}
	// Truncation then failed append: appendEntries deleted a conflicting suffix (raft.go:1524),
	// StoreLogs failed (raft.go:1539), and raft kept the deleted entries' last index ("TODO:
	// leaving r.getLastLog() in the wrong state", raft.go:1541). Every later append then fails
	// looking up an entry the member no longer has (raft.go:1518).
	for _, m := range ms {
		l := m.logs.String()
		i := strings.Index(l, "clearing log suffix")
		if i >= 0 && strings.Contains(l[i:], "failed to append to logs") && strings.Contains(l[i:], "failed to get log entry") {
			fmt.Fprintf(&b, "; %s truncated a log suffix, failed to store the replacement, and kept the old last "+
				"index: hashicorp/raft raft.go:1539-1544 (the TODO), every later append fails at raft.go:1518 until it restarts", m.id)
		}
	}
	return b.String()
}

// dfCheckHashes asserts that every member has the same history at one revision.
func dfCheckHashes(t testing.TB, ms []*dfMember) {
	t.Helper()
	ctx := dfCtx(t, 10*time.Second)
	st, err := ms[0].store.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var first *HashKVResponse
	for _, m := range ms {
		h, err := m.store.HashKV(ctx, st.Revision)
		if err != nil {
			t.Fatalf("%s: HashKV(%d): %v", m.id, st.Revision, err)
		}
		if first == nil {
			first = h
		} else if h.Hash != first.Hash {
			t.Errorf("%s: HashKV(%d) = %08x, %s has %08x", m.id, st.Revision, h.Hash, ms[0].id, first.Hash)
		}
	}
}

// (a) A single member whose log store refuses writes fails the writes, keeps running, and
// serves again, with nothing acknowledged lost, once the disk works again.
func TestDiskFault_SingleMemberLogStore(t *testing.T) {
	for _, fault := range []error{dfErrNoSpace, dfErrIO} {
		t.Run(fault.Error(), func(t *testing.T) {
			f := &dfFault{}
			dir := t.TempDir()
			s := dfOpenSingle(t, dir, f)
			var acks dfAckLog
			put := func(k string, d time.Duration) error {
				v := "v-" + k
				_, err := s.Put(dfCtx(t, d), k, v)
				if err == nil {
					acks.add(k, v)
				}
				return err
			}
			for i := 0; i < 20; i++ {
				if err := put(fmt.Sprintf("before/%02d", i), 10*time.Second); err != nil {
					t.Fatal(err)
				}
			}

			f.failLogs(fault)
			var refused []string
			sawStorageErr := false
			for i := 0; i < 3; i++ {
				k := fmt.Sprintf("during/%02d", i)
				err := put(k, 500*time.Millisecond)
				if err == nil {
					t.Errorf("put %s succeeded while every log write fails", k)
					continue
				}
				t.Logf("put during the fault: %v", err)
				sawStorageErr = sawStorageErr || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EIO)
				if dfDefiniteFailure(err) {
					refused = append(refused, k)
				}
			}
			if f.logHits.Load() == 0 {
				t.Fatal("the fault was never hit")
			}
			if !sawStorageErr {
				t.Logf("no put reported the storage error itself, only leadership loss or timeouts")
			}
			if _, err := s.Status(dfCtx(t, time.Second)); err != nil {
				t.Errorf("status during the fault: %v", err)
			}

			f.failLogs(nil)
			if err := s.WaitReady(dfCtx(t, 30*time.Second)); err != nil {
				t.Fatalf("not ready after the fault cleared: %v", err)
			}
			for i := 0; i < 20; i++ {
				if err := put(fmt.Sprintf("after/%02d", i), 10*time.Second); err != nil {
					t.Fatalf("put after the fault cleared: %v", err)
				}
			}
			acks.check(t, s, refused)

			// What was acknowledged is on disk, not only in memory.
			s.Close()
			s2 := dfOpenSingle(t, dir, &dfFault{})
			acks.check(t, s2, refused)
		})
	}
}

// dfWriteLoad runs one writer per member, each write with a fresh key, until the returned stop
// is called (or the test ends); stop returns the keys whose write failed with a definite error.
func dfWriteLoad(t testing.TB, ms []*dfMember, acks *dfAckLog) (stop func() []string) {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		refused []string
		once    sync.Once
	)
	done := make(chan struct{})
	for _, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-done:
					return
				default:
				}
				k := fmt.Sprintf("w/%s/%05d", m.id, seq)
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_, err := m.current().Put(ctx, k, "v-"+k)
				cancel()
				switch {
				case err == nil:
					acks.add(k, "v-"+k)
				case dfDefiniteFailure(err):
					mu.Lock()
					refused = append(refused, k)
					mu.Unlock()
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	stop = func() []string {
		once.Do(func() { close(done) })
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), refused...)
	}
	t.Cleanup(func() { stop() })
	return stop
}

// (b) A follower whose log store fails falls behind; the other two go on committing, and the
// follower catches up once its disk works again. The outage is repeated: each one makes the
// follower answer appends with Success=false.
func TestDiskFault_FollowerLogStore(t *testing.T) {
	ms := dfCluster(t, 3)
	leader := dfLeader(t, ms, nil, 30*time.Second)
	if leader == nil {
		t.Fatal("no leader")
	}
	var follower *dfMember
	for _, m := range ms {
		if m != leader {
			follower = m
			break
		}
	}
	var acks dfAckLog
	stop := dfWriteLoad(t, ms, &acks)
	const rounds, perRound = 5, 30
	var during []int
	for round := 0; round < rounds; round++ {
		time.Sleep(300 * time.Millisecond)
		follower.fault.failLogs(dfErrIO)
		before := acks.len()
		deadline := time.Now().Add(20 * time.Second)
		for acks.len() < before+perRound && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		during = append(during, acks.len()-before)
		follower.fault.failLogs(nil)
	}
	refused := stop()
	if follower.fault.logHits.Load() == 0 {
		t.Fatal("the fault was never hit")
	}
	for i, n := range during {
		if n < perRound {
			t.Errorf("outage %d: only %d writes acknowledged in 20s while a follower's disk failed", i, n)
		}
	}
	t.Logf("%d outages of %s's log store, %d log writes refused; writes acknowledged during each: %v; %d in all",
		rounds, follower.id, follower.fault.logHits.Load(), during, acks.len())

	up := dfWaitCaughtUp(t, ms)
	for _, m := range up {
		acks.check(t, m.store, refused)
	}
	dfCheckHashes(t, up)
}

// (b) A leader whose log store fails steps down (hashicorp/raft dispatchLogs, raft.go:1266:
// the futures fail with the store's error and the node becomes a follower); another member
// takes over, no acknowledged write is lost, and the old leader catches up once its disk works
// again. Five rounds, each failing whoever leads. With hashicorp/raft v1.7.3 and ember's
// transport as it is, the old leader usually never catches up: the new leader's pipelined
// replication to it deadlocks on its first rejected append (see dfDiagnose), or, when it held an
// entry nobody else had, it falls into the state TestDiskFault_LogWriteFailsAfterTruncation
// shows. The failure message names which.
func TestDiskFault_LeaderLogStore(t *testing.T) {
	ms := dfCluster(t, 3)
	var acks dfAckLog
	stop := dfWriteLoad(t, ms, &acks)
	const rounds, perRound = 5, 30
	for round := 0; round < rounds; round++ {
		leader := dfLeader(t, ms, nil, 30*time.Second)
		if leader == nil {
			t.Fatal("no leader")
		}
		time.Sleep(300 * time.Millisecond)
		hits := leader.fault.logHits.Load()
		leader.fault.failLogs(dfErrNoSpace)
		before := acks.len()
		next := dfLeader(t, ms, leader, 20*time.Second)
		deadline := time.Now().Add(20 * time.Second)
		for acks.len() < before+perRound && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		during := acks.len() - before
		leader.fault.failLogs(nil)
		hits = leader.fault.logHits.Load() - hits
		if f := leader.store.failure.Load(); f != nil && leader.reopenIfStopped(t) {
			// The deposed leader truncated its unreplicated tail and failed the append after it.
			t.Logf("round %d: %s stopped itself (%v) and was reopened", round, leader.id, *f)
		}
		if hits == 0 {
			t.Fatalf("round %d: the fault was never hit", round)
		}
		if next == nil {
			t.Errorf("round %d: leadership stayed on %s although it cannot write its log", round, leader.id)
		}
		if during < perRound {
			t.Errorf("round %d: only %d writes acknowledged in 20s after the leader's disk failed", round, during)
		}
		t.Logf("round %d: leader %s refused %d log writes; %d writes acknowledged meanwhile", round, leader.id, hits, during)
		if len(dfWaitCaughtUp(t, ms)) < len(ms) {
			break
		}
	}
	refused := stop()
	// Whatever happened to the old leaders, the members that are up to date must hold every
	// acknowledged write, and agree.
	up := dfWaitCaughtUp(t, ms)
	for _, m := range up {
		acks.check(t, m.store, refused)
	}
	dfCheckHashes(t, up)
	t.Logf("%d writes acknowledged, checked on %d up-to-date members; %d failed with a definite error",
		acks.len(), len(up), len(refused))
}

// A follower whose log holds an entry nobody else has must drop it when a new leader fills that
// index. If its disk fails between raft's DeleteRange and StoreLogs, hashicorp/raft v1.7.3 keeps
// the dropped entry's index as its last index (raft.go:1539-1544): from then on every append
// fails looking that entry up (raft.go:1518), and the member stays behind after its disk works
// again, silently: it still follows the leader, and only a restart, which rereads the last index
// from disk, brings it back. The storage guard turns that failed append into a fail-stop: the
// member stops with the cause, the host reopens it, and it catches up.
//
// The orphan entry is made deterministic: the leader's way out is cut, so an entry it appends
// reaches only its own disk; then its log store fails before the other two elect a new leader.
func TestDiskFault_LogWriteFailsAfterTruncation(t *testing.T) {
	ms := dfCluster(t, 3)
	old := dfLeader(t, ms, nil, 30*time.Second)
	if old == nil {
		t.Fatal("no leader")
	}
	st, err := old.store.Status(dfCtx(t, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	old.dial.setCut(true)
	orphan := make(chan error, 1)
	orphanCtx := dfCtx(t, 30*time.Second)
	go func() {
		_, err := old.store.Put(orphanCtx, "orphan", "v")
		orphan <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s, err := old.store.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if s.RaftIndex > st.RaftIndex {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not append the orphan entry within 10s", old.id)
		}
	}
	old.fault.failLogs(dfErrIO)
	next := dfLeader(t, ms, old, 30*time.Second)
	if next == nil {
		t.Fatal("the other two elected no leader")
	}
	for deadline := time.Now().Add(20 * time.Second); !old.store.stopped() && !strings.Contains(old.logs.String(), "failed to append to logs"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s was never sent the new leader's entries while its disk failed", old.id)
		}
	}
	old.fault.failLogs(nil)
	old.dial.setCut(false)
	t.Logf("the orphan write through %s: %v", old.id, <-orphan)
	for i := 0; i < 20; i++ {
		if _, err := next.store.Put(dfCtx(t, 10*time.Second), fmt.Sprintf("after/%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); !old.store.stopped(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s failed an append after truncating its log and is still running (behind for good)", old.id)
		}
	}
	if _, err := old.store.Get(dfCtx(t, time.Second), "orphan"); !errors.Is(err, ErrStopped) || !errors.Is(err, dfErrIO) {
		t.Fatalf("get on the stopped member: %v, want ErrStopped wrapping the disk error", err)
	}
	old.store.Close()
	old.open(t)
	if up := dfWaitCaughtUp(t, ms); len(up) < len(ms) {
		t.Fatalf("after reopening, only %d of %d members caught up:\n%s", len(up), len(ms), dfDiagnose(ms))
	}
	dfCheckHashes(t, ms)
}

// A log write that fails may still have reached the disk: the data went out and fsync reported
// EIO, or bbolt's meta page was written before its sync failed. A caller told of such an error
// must not see the write applied later, unless the error said its outcome is unknown
// (ErrTimeout, the only such error in errors.go).
func TestDiskFault_LogWriteErrorAfterWrite(t *testing.T) {
	dir := t.TempDir()
	f := &dfFault{}
	s := dfOpenSingle(t, dir, f)
	if _, err := s.Put(dfCtx(t, 10*time.Second), "before", "v"); err != nil {
		t.Fatal(err)
	}
	f.failLogsAfterWrite(dfErrIO)
	_, putErr := s.Put(dfCtx(t, 2*time.Second), "k", "v")
	if putErr == nil {
		t.Fatal("put succeeded while its log write failed")
	}
	// Stop while the disk still fails, so that nothing overwrites the entry on disk.
	s.Close()
	f.failLogs(nil)
	s2 := dfOpenSingle(t, dir, &dfFault{})
	got, err := s2.Get(dfCtx(t, 10*time.Second), "", WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	applied := false
	for _, kv := range got.Kvs {
		applied = applied || string(kv.Key) == "k"
	}
	switch {
	case applied && dfDefiniteFailure(putErr):
		t.Errorf("put answered %q, a definite failure, yet after a restart the write is applied: a leader's "+
			"log-store error must be reported as an unknown outcome (ErrTimeout) or stop the member", putErr)
	case applied:
		t.Logf("put answered %q and the write was applied after a restart, as an unknown outcome allows", putErr)
	default:
		t.Logf("put answered %q and the write was not applied", putErr)
	}
}

// The child-process side. A test that needs a crash-prone step re-executes this binary with
// dfChildEnv set to a JSON dfChildRequest; TestDiskFaultHelperProcess performs it and prints
// one line starting with dfResultMark, or dies trying.
const (
	dfChildEnv   = "EMBER_DISKFAULT_CHILD"
	dfResultMark = "DISKFAULT-RESULT "
)

type dfChildRequest struct {
	Mode string // "open", "stable-single" or "stable-follower"
	Dir  string // for "open"
}

type dfChildResult struct {
	// The stable-store modes: Survived says the process ran to the end; StopErr is what the
	// member whose term write failed answered afterwards, Stopped and CauseKept whether that
	// matches ErrStopped and the injected EIO; AfterErr is what went wrong for the rest (the
	// reopened member, or the surviving two), if anything.
	Survived  bool
	StopErr   string
	Stopped   bool
	CauseKept bool
	AfterErr  string

	// The open mode: Open's or WaitReady's error and whether it matches ErrCorrupt, a panic
	// that reached Open's caller, and everything the opened store served.
	OpenErr string
	Corrupt bool
	Panic   string
	KVs     map[string]string
}

func TestDiskFaultHelperProcess(t *testing.T) {
	env := os.Getenv(dfChildEnv)
	if env == "" {
		t.Skip("helper for the disk fault tests; runs only as their child process")
	}
	var req dfChildRequest
	if err := json.Unmarshal([]byte(env), &req); err != nil {
		t.Fatal(err)
	}
	var res dfChildResult
	switch req.Mode {
	case "open":
		res = dfChildOpen(t, req.Dir)
	case "stable-single":
		res = dfChildStableSingle(t)
		res.Survived = true
	case "stable-follower":
		res = dfChildStableFollower(t)
		res.Survived = true
	default:
		t.Fatalf("unknown mode %q", req.Mode)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("\n%s%s\n", dfResultMark, b)
}

// dfChildOpen opens dir and reads everything it serves. A panic that reaches Open's caller is
// recovered and reported; one in another goroutine kills the process, which the parent sees.
func dfChildOpen(t testing.TB, dir string) (res dfChildResult) {
	var s *Store
	func() {
		defer func() {
			if p := recover(); p != nil {
				res.Panic = fmt.Sprint(p)
			}
		}()
		var err error
		if s, err = Open(dir); err != nil {
			res.OpenErr, res.Corrupt = err.Error(), errors.Is(err, ErrCorrupt)
		}
	}()
	if s == nil {
		return res
	}
	defer s.Close()
	ctx := dfCtx(t, 20*time.Second)
	if err := s.WaitReady(ctx); err != nil {
		res.OpenErr, res.Corrupt = "WaitReady: "+err.Error(), errors.Is(err, ErrCorrupt)
		return res
	}
	resp, err := s.Get(ctx, "", WithPrefix())
	if err != nil {
		res.OpenErr = "Get: " + err.Error()
		return res
	}
	res.KVs = map[string]string{}
	for _, kv := range resp.Kvs {
		res.KVs[string(kv.Key)] = string(kv.Value)
	}
	return res
}

// dfChildStableSingle makes a single member's leader step down (its log fails) while its term
// cannot be persisted: the election that follows must store a new term. Then it reopens the
// data dir with a working disk.
func dfChildStableSingle(t testing.TB) (res dfChildResult) {
	dir := t.TempDir()
	f := &dfFault{}
	s := dfOpenSingle(t, dir, f)
	if _, err := s.Put(dfCtx(t, 10*time.Second), "k", "v"); err != nil {
		t.Fatal(err)
	}
	f.failStable(dfErrIO)
	f.failLogs(dfErrIO)
	_, err := s.Put(dfCtx(t, time.Second), "k", "v2")
	t.Logf("put with a failing disk: %v", err)
	dfWaitStopped(t, s, &res)
	f.failStable(nil)
	f.failLogs(nil)
	s.Close()
	got, err := dfOpenSingle(t, dir, &dfFault{}).Get(dfCtx(t, 10*time.Second), "k")
	switch {
	case err != nil:
		res.AfterErr = fmt.Sprintf("read after reopening: %v", err)
	case len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v":
		res.AfterErr = fmt.Sprintf("after reopening, k = %v, want the acknowledged v", got.Kvs)
	}
	return res
}

// dfChildStableFollower moves leadership while a follower cannot persist its term: the follower
// must adopt the new leader's term. The other two must go on.
func dfChildStableFollower(t testing.TB) (res dfChildResult) {
	ms := dfCluster(t, 3)
	leader := dfLeader(t, ms, nil, 30*time.Second)
	if leader == nil {
		t.Fatal("no leader")
	}
	var followers []*dfMember
	for _, m := range ms {
		if m != leader {
			followers = append(followers, m)
		}
	}
	bad, next := followers[0], followers[1]
	bad.fault.failStable(dfErrIO)
	err := leader.store.TransferLeadership(dfCtx(t, 10*time.Second), next.id)
	t.Logf("leadership transfer to %s: %v", next.id, err)
	dfWaitStopped(t, bad.store, &res)
	bad.fault.failStable(nil)
	for _, m := range []*dfMember{leader, next} {
		if _, err := m.store.Put(dfCtx(t, 10*time.Second), "after/"+m.id, "v"); err != nil {
			res.AfterErr += fmt.Sprintf("put through %s once %s stopped: %v; ", m.id, bad.id, err)
		}
	}
	return res
}

// dfWaitStopped waits until s refuses writes as a stopped member, and records what a write
// made after that answers. (A write already in flight when the member stops may get a bare
// ErrStopped.)
func dfWaitStopped(t testing.TB, s *Store, res *dfChildResult) {
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if _, err = s.Put(dfCtx(t, 500*time.Millisecond), "probe", "x"); errors.Is(err, ErrStopped) {
			_, err = s.Put(dfCtx(t, 500*time.Millisecond), "probe", "x")
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		res.StopErr = err.Error()
	}
	res.Stopped, res.CauseKept = errors.Is(err, ErrStopped), errors.Is(err, dfErrIO)
}

// dfChild runs the helper process for req and returns its result; crash is non-empty when the
// process died without one, and summarizes why.
func dfChild(t testing.TB, req dfChildRequest) (res dfChildResult, crash string) {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx := dfCtx(t, 3*time.Minute)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestDiskFaultHelperProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), dfChildEnv+"="+string(b))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	sc := bufio.NewScanner(bytes.NewReader(stdout.Bytes()))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), dfResultMark); ok {
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				t.Fatalf("child result: %v", err)
			}
			return res, ""
		}
	}
	all := stderr.String() + stdout.String()
	return res, fmt.Sprintf("%v; %s", runErr, dfCrashSummary(all))
}

// dfCrashSummary picks the panic or fatal error line out of a dead Go process's output, and the
// first stack frame in a dependency (hashicorp/raft, raft-boltdb, bbolt) or, failing that, in
// ember.
func dfCrashSummary(out string) string {
	lines := strings.Split(out, "\n")
	var msg, frame string
	for i, l := range lines {
		if msg == "" && (strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ")) {
			msg = l
			if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "[signal") {
				msg += " " + lines[i+1]
			}
		}
		if msg != "" && frame == "" && i+1 < len(lines) && !strings.HasPrefix(l, "\t") &&
			(strings.Contains(l, "hashicorp/raft") || strings.Contains(l, "go.etcd.io/bbolt")) {
			frame = strings.TrimSpace(l) + " at " + strings.TrimSpace(lines[i+1])
		}
	}
	if msg == "" {
		tail := out
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return "no panic found; output ends: " + tail
	}
	if frame == "" {
		return msg
	}
	return msg + " (in " + frame + ")"
}

// A member that cannot persist its raft term must stop, not take its host process down:
// hashicorp/raft v1.7.3 panics in its own goroutine when StableStore.SetUint64 fails for the
// current term (raft.go:2143-2144, setCurrentTerm, reached from electSelf, appendEntries and
// requestVote), and ember's storage guard (internal/raftlog/guard.go) turns that into a fail-stop
// of the member. The child process runs the member, so that a regression shows up as a crash
// report instead of killing this test binary.
func TestDiskFault_StableStoreKeepsHostAlive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	for _, mode := range []string{"stable-single", "stable-follower"} {
		t.Run(mode, func(t *testing.T) {
			res, crash := dfChild(t, dfChildRequest{Mode: mode})
			if crash != "" {
				t.Fatalf("a failing stable store killed the host process: %s", crash)
			}
			if !res.Survived {
				t.Fatal("child did not finish")
			}
			if !res.Stopped || !res.CauseKept {
				t.Errorf("after its term write failed, the member answered %q; want ErrStopped wrapping the EIO", res.StopErr)
			}
			if res.AfterErr != "" {
				t.Error(res.AfterErr)
			}
			t.Logf("the member stopped with: %s", res.StopErr)
		})
	}
}

// dfPrepareDir builds a stopped single member's data dir: rounds of overwrites and fresh keys,
// a snapshot after each of the first snapshots rounds, and a tail of writes after the last
// snapshot, so that the newest data lives only in the log; the very last write puts
// dfLastValue. trailing is raft's TrailingLogs:
// how much log survives each snapshot. It returns what the member served when it stopped.
const dfLastValue = "the last acknowledged value"

func dfPrepareDir(t testing.TB, trailing uint64, snapshots int, opts ...Option) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	s := dfOpenSingle(t, dir, &dfFault{}, append([]Option{WithRaftConfig(func(c *raft.Config) { c.TrailingLogs = trailing })}, opts...)...)
	ctx := dfCtx(t, 30*time.Second)
	for r := 0; r <= snapshots; r++ {
		for i := 0; i < 40; i++ {
			if _, err := s.Put(ctx, fmt.Sprintf("k/%02d", i), fmt.Sprintf("round %d", r)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Put(ctx, fmt.Sprintf("r%d/%02d", r, i), "fresh"); err != nil {
				t.Fatal(err)
			}
		}
		if r < snapshots {
			if err := s.raft.Snapshot().Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.Put(ctx, "last", dfLastValue); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Get(ctx, "", WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, kv := range resp.Kvs {
		want[string(kv.Key)] = string(kv.Value)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, want
}

// dfSnapshots lists a stopped member's snapshot state files, newest first.
func dfSnapshots(t testing.TB, dir string) []string {
	t.Helper()
	store, err := raft.NewFileSnapshotStore(dir, 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	metas, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range metas {
		out = append(out, filepath.Join(dir, "snapshots", m.ID, "state.bin"))
	}
	return out
}

// dfFlipBytes inverts n bytes spread over the middle of a file.
func dfFlipBytes(t testing.TB, path string, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		b[len(b)/4+i*(len(b)/2)/n] ^= 0xff
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// dfJudgeOpen asserts that opening a damaged dir either failed with an ember error or served
// exactly what the member held before the damage; a crash or a panic fails, and so does a
// store that opened with anything else.
func dfJudgeOpen(t testing.TB, res dfChildResult, crash string, want map[string]string) {
	t.Helper()
	switch {
	case crash != "":
		t.Errorf("the process crashed opening the damaged dir: %s", crash)
	case res.Panic != "":
		t.Errorf("Open panicked instead of returning an error: %s", res.Panic)
	case res.OpenErr != "":
		if !strings.HasPrefix(res.OpenErr, "ember:") && !strings.HasPrefix(res.OpenErr, "WaitReady:") {
			t.Errorf("refused with an unclear error: %s", res.OpenErr)
		}
		t.Logf("refused (errors.Is ErrCorrupt: %v): %s", res.Corrupt, res.OpenErr)
	case !maps.Equal(res.KVs, want):
		t.Errorf("opened and served wrong data: %s", dfKVDiff(want, res.KVs))
	default:
		t.Logf("opened with all %d keys intact", len(want))
	}
}

func dfKVDiff(want, got map[string]string) string {
	var missing, wrong, extra []string
	for k, v := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case g != v:
			wrong = append(wrong, fmt.Sprintf("%s=%q (want %q)", k, g, v))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(wrong)
	sort.Strings(extra)
	short := func(s []string) []string { return s[:min(len(s), 3)] }
	return fmt.Sprintf("%d of %d keys missing %v, %d wrong %v, %d unexpected %v",
		len(missing), len(want), short(missing), len(wrong), short(wrong), len(extra), short(extra))
}

// (c) A damaged snapshot: hashicorp/raft's FileSnapshotStore verifies each state file's CRC-64
// and NewRaft falls back to the next older snapshot, replaying the log from there. That is
// correct only while the log still reaches back to the older snapshot.
func TestDiskCorruptSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	cases := []struct {
		name     string
		trailing uint64 // raft TrailingLogs when the dir was written
		damage   func(t testing.TB, snaps []string)
	}{
		{"newest damaged, log reaches the older", 10000, func(t testing.TB, snaps []string) { dfFlipBytes(t, snaps[0], 8) }},
		// ember's defaults (SnapshotThreshold 16384, TrailingLogs 10240, retain 2) leave the
		// log this short after the second snapshot.
		{"newest damaged, log compacted past the older", 5, func(t testing.TB, snaps []string) { dfFlipBytes(t, snaps[0], 8) }},
		{"every snapshot damaged", 10000, func(t testing.TB, snaps []string) {
			for _, p := range snaps {
				dfFlipBytes(t, p, 8)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, want := dfPrepareDir(t, tc.trailing, 2)
			snaps := dfSnapshots(t, dir)
			if len(snaps) != 2 {
				t.Fatalf("want 2 snapshots, have %d", len(snaps))
			}
			tc.damage(t, snaps)
			res, crash := dfChild(t, dfChildRequest{Mode: "open", Dir: dir})
			dfJudgeOpen(t, res, crash, want)
		})
	}
}

// (c) A damaged raft.db (bbolt): Open must refuse it with an error, or, where the damage cannot
// matter, serve exactly the old data; never crash, never serve something else.
func TestDiskCorruptRaftDB(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	cases := []struct {
		name   string
		damage func(t testing.TB, b []byte, page int) []byte
	}{
		{"emptied", func(t testing.TB, b []byte, page int) []byte { return nil }},
		{"cut to the two meta pages", func(t testing.TB, b []byte, page int) []byte { return b[:2*page] }},
		{"cut in half", func(t testing.TB, b []byte, page int) []byte { return b[:len(b)/2/page*page] }},
		{"both meta pages damaged", func(t testing.TB, b []byte, page int) []byte {
			// The root bucket's page ID, inside the checksummed part of each meta page.
			b[32] ^= 0xff
			b[page+32] ^= 0xff
			return b
		}},
		{"page headers damaged", func(t testing.TB, b []byte, page int) []byte {
			for off := 2 * page; off < len(b); off += page {
				b[off] ^= 0xff
			}
			return b
		}},
		{"one bit of a logged value flipped", func(t testing.TB, b []byte, page int) []byte {
			// raft-boltdb stores each entry's bytes as given: the value of the last write,
			// which lives only in the log, appears verbatim; ember's command checksum must
			// catch the change.
			i := bytes.LastIndex(b, []byte(dfLastValue))
			if i < 0 {
				t.Fatalf("%q not found in raft.db", dfLastValue)
			}
			b[i] ^= 0x20
			return b
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, want := dfPrepareDir(t, 10000, 1, WithLogStore(LogStoreBolt))
			path := filepath.Join(dir, "raft.db")
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// bbolt's meta page: a 16-byte page header, then magic, version, page size.
			page := int(binary.LittleEndian.Uint32(b[24:28]))
			if page < 512 || len(b)%page != 0 {
				t.Fatalf("unexpected bbolt page size %d for a %d-byte file", page, len(b))
			}
			if err := os.WriteFile(path, tc.damage(t, b, page), 0o600); err != nil {
				t.Fatal(err)
			}
			res, crash := dfChild(t, dfChildRequest{Mode: "open", Dir: dir})
			dfJudgeOpen(t, res, crash, want)
			if res.OpenErr != "" && !res.Corrupt {
				t.Errorf("refused, but the error does not wrap ErrCorrupt: %s", res.OpenErr)
			}
		})
	}
}
