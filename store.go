package ember

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/peer"
	"github.com/ember-kv/ember/internal/planted"
	"github.com/ember-kv/ember/internal/readindex"
	"github.com/ember-kv/ember/internal/wire"
)

// Store is one member of an ember cluster: a raft node whose state machine is a revisioned
// key-value store. All methods are safe for concurrent use by any number of goroutines.
//
// Writes may be called on any member; a follower forwards them to the leader. Reads are
// linearizable by default on every member; WithSerializable reads local state instead.
type Store struct {
	cfg config
	id  string
	log hclog.Logger

	raft   *raft.Raft
	fsm    *fsm
	watch  *watchHub
	lessor *lessor
	stores *raftStores
	net    *network // nil for a node without a listener

	metrics *metrics // nil without WithMetricsRegisterer

	clientID uint64        // this member's request ID space, random per process
	seq      atomic.Uint64 // last request ID sequence used

	readIndex *readindex.Batcher
	reconfig  reconfigLock  // held by the leader through each membership change
	readyTerm atomic.Uint64 // term whose LeaderStart this node applied as leader; 0 if not leader
	readySig  signal        // fired when readyTerm changes
	leaderSig signal        // fired on every leader change this node observes

	confirmRound atomic.Uint64 // last leadership confirmation round this member started

	leaderSubs leaderSubs    // LeaderChanges subscribers; closed on Close
	term       atomic.Uint64 // term of the last observed leader change

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	spawnMu   sync.Mutex // guards closing and the Adds of wg and futures, so nothing starts after Close waits
	closing   bool
	wg        sync.WaitGroup
	futures   sync.WaitGroup // goroutines blocked on raft futures
	closeOnce sync.Once
	closeErr  error

	guard   *failStop
	failure atomic.Pointer[error] // why the member stopped by itself (storage failure), if it did
}

// spawn runs fn in a goroutine that Close waits for; it returns false, and runs nothing, once
// the store is closing.
func (s *Store) spawn(fn func()) bool {
	s.spawnMu.Lock()
	defer s.spawnMu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}

// LeaderChange reports that a member became leader (ID "" while no leader is known).
type LeaderChange struct {
	ID     string
	IsSelf bool
	Term   uint64
}

// Open starts a member whose data lives under dir. Open("data") with no options is a
// single-member cluster that bootstraps itself and needs no network listener; Open("") keeps
// everything in memory. Call WaitReady before the first request if the caller needs to know the
// member can serve.
func Open(dir string, opts ...Option) (*Store, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.bindAddr == "" && (len(cfg.initialCluster) > 0 || len(cfg.join) > 0) {
		return nil, errors.New("ember: WithInitialCluster and WithJoin need WithBindAddr")
	}
	if cfg.advertiseAddr == "" {
		cfg.advertiseAddr = cfg.bindAddr
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("ember: create data dir: %w", err)
		}
	}
	existing := dir != "" && fileExists(filepath.Join(dir, "member-id"))
	id, err := memberID(dir, cfg.nodeID)
	if err != nil {
		return nil, err
	}
	log := cfg.log().With("member", id)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{cfg: cfg, id: id, log: log, ctx: ctx, cancel: cancel, clientID: randomUint64()}
	if err := s.open(dir, existing); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) open(dir string, memberExisted bool) error {
	var err error
	if s.stores, err = openRaftStores(dir, s.cfg.logStore, s.cfg.snapshotRetain, s.cfg.walVFS, s.log, memberExisted); err != nil {
		return err
	}
	if s.cfg.wrapStores != nil {
		s.stores.log, s.stores.stable = s.cfg.wrapStores(s.stores.log, s.stores.stable)
	}
	s.watch = newWatchHub(s)
	s.lessor = newLessor(s)
	s.fsm = newFSM(s.log.Named("fsm"), s.watch, s.lessor)
	s.fsm.dedupBudget = s.cfg.dedupResultBytes
	s.readIndex = readindex.New(s.fetchReadIndex)
	if err := s.instrument(); err != nil {
		return err
	}

	var trans raft.Transport
	if s.cfg.bindAddr == "" {
		_, trans = raft.NewInmemTransport("")
	} else {
		if s.net, err = listen(s); err != nil {
			return err
		}
		trans = s.net.transport
	}

	notifyCh := make(chan bool, 4)
	rc := s.raftConfig(notifyCh)
	existing, err := raft.HasExistingState(s.stores.log, s.stores.stable, s.stores.snaps)
	if err != nil {
		return fmt.Errorf("ember: read raft state: %w", err)
	}
	if !existing && len(s.cfg.join) == 0 {
		if err := s.bootstrap(rc, trans); err != nil {
			return err
		}
	}
	s.guard = &failStop{s: s}
	s.fsm.corrupt = s.guard.damagedEntry
	logs, stable := raft.LogStore(guardedLog{s.stores.log, s.guard, new(atomic.Bool)}), raft.StableStore(guardedStable{s.stores.stable, s.guard})
	s.raft, err = newRaftGuarded(rc, s.fsm, logs, stable, s.stores.snaps, trans)
	if err != nil {
		return fmt.Errorf("ember: start raft: %w", err)
	}
	s.guard.armed.Store(true)
	s.metrics.raftStarted(s.raft)
	if s.net != nil {
		s.net.serve()
	}
	obsCh := make(chan raft.Observation, 64)
	s.raft.RegisterObserver(raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	}))
	s.spawn(s.watch.dispatch)
	s.spawn(func() { s.watchLeadership(notifyCh) })
	s.spawn(func() { s.observeLeaders(obsCh) })
	s.spawn(s.lessor.run)
	s.spawn(func() { s.fsm.runCompactor(s.ctx) })
	if len(s.cfg.join) > 0 {
		s.spawn(func() { s.joinLoop(!existing) })
	}
	if s.cfg.autoCompactMode != "" {
		s.spawn(s.runAutoCompaction)
	}
	return nil
}

func (s *Store) raftConfig(notifyCh chan bool) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.id)
	rc.Logger = s.log.Named("raft")
	rc.HeartbeatTimeout = s.cfg.heartbeatTimeout
	rc.ElectionTimeout = s.cfg.electionTimeout
	rc.LeaderLeaseTimeout = min(500*time.Millisecond, s.cfg.heartbeatTimeout)
	// Followers learn the commit index from the next append; this bounds how long a follower's
	// linearizable read waits when the cluster is idle.
	rc.CommitTimeout = 15 * time.Millisecond
	rc.MaxAppendEntries = 128
	rc.SnapshotThreshold = s.cfg.snapshotThreshold
	rc.SnapshotInterval = s.cfg.snapshotInterval
	rc.TrailingLogs = 10240
	rc.NoLegacyTelemetry = true
	if s.cfg.raftConfig != nil {
		s.cfg.raftConfig(rc)
	}
	if s.cfg.bindAddr == "" {
		// Without a listener this node is alone forever: no peer needs the timeouts, so elect
		// at once instead of waiting a heartbeat timeout on every start.
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 20*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond
	}
	// ember handles removal and leadership itself; these are not negotiable.
	rc.ShutdownOnRemove = false
	rc.NotifyCh = notifyCh
	rc.LocalID = raft.ServerID(s.id)
	return rc
}

// bootstrap writes the founding configuration into a fresh data dir.
func (s *Store) bootstrap(rc *raft.Config, trans raft.Transport) error {
	var conf raft.Configuration
	if len(s.cfg.initialCluster) > 0 {
		if _, ok := s.cfg.initialCluster[s.id]; !ok {
			return fmt.Errorf("ember: WithInitialCluster does not name this member %q", s.id)
		}
		for id, addr := range s.cfg.initialCluster {
			conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(addr), Suffrage: raft.Voter})
		}
	} else {
		conf.Servers = []raft.Server{{ID: raft.ServerID(s.id), Address: trans.LocalAddr(), Suffrage: raft.Voter}}
	}
	err := raft.BootstrapCluster(rc, s.stores.log, s.stores.stable, s.stores.snaps, trans, conf)
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("ember: bootstrap: %w", err)
	}
	return nil
}

// memberID returns the configured ID, or the one kept in dir, or a new one (kept in dir).
func memberID(dir, configured string) (string, error) {
	if dir == "" {
		if configured != "" {
			return configured, nil
		}
		return newID(), nil
	}
	path := filepath.Join(dir, "member-id")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		stored := strings.TrimSpace(string(b))
		if configured != "" && configured != stored {
			return "", fmt.Errorf("ember: data dir %s belongs to member %q, not %q", dir, stored, configured)
		}
		return stored, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("ember: read member ID: %w", err)
	}
	id := configured
	if id == "" {
		id = newID()
	}
	if err := writeFileSync(path, []byte(id+"\n")); err != nil {
		return "", fmt.Errorf("ember: write member ID: %w", err)
	}
	return id, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func randomUint64() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1 // never 0: a zero request ID means "no dedup"
}

// ID returns this member's ID.
func (s *Store) ID() string { return s.id }

// Close stops the member: a leader first hands leadership to another voter, then the member
// stops serving, shuts raft down and closes the data dir. Watch and keepalive channels close.
// Close is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.raft != nil && s.IsLeader() {
			s.handOffLeadership()
		}
		s.cancel()
		s.spawnMu.Lock()
		s.closing = true
		s.spawnMu.Unlock()
		var errs []error
		if s.raft != nil {
			s.drainFutures()
			if err := s.raft.Shutdown().Error(); err != nil {
				errs = append(errs, err)
			}
		}
		if s.net != nil {
			errs = append(errs, s.net.close())
		}
		s.wg.Wait()
		if s.stores != nil {
			errs = append(errs, s.stores.close())
		}
		s.leaderSubs.close()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// handOffLeadership transfers leadership to another voter before a leader stops, so that the
// cluster does not wait an election timeout to notice. A transfer can fail (the target was
// behind, an election raced it); like Consul and Nomad, try a few times, then stop anyway.
func (s *Store) handOffLeadership() {
	conf, err := s.configuration()
	if err != nil {
		return
	}
	others := 0
	for _, srv := range conf.Servers {
		if srv.Suffrage == raft.Voter && string(srv.ID) != s.id {
			others++
		}
	}
	if others == 0 {
		return
	}
	for attempt := 0; attempt < 3 && s.IsLeader(); attempt++ {
		ctx, cancel := context.WithTimeout(s.ctx, 2*s.cfg.electionTimeout)
		err := s.waitFuture(ctx, s.raft.LeadershipTransfer())
		cancel()
		if err == nil {
			return
		}
		s.log.Warn("leadership transfer before shutdown failed", "attempt", attempt+1, "error", err)
	}
}

// stoppedErr is what calls on a stopped store return: ErrStopped, wrapped with the storage
// failure that made the member stop itself, if one did.
func (s *Store) stoppedErr() error {
	if f := s.failure.Load(); f != nil {
		return *f
	}
	return ErrStopped
}

// stopped reports whether Close has been called.
func (s *Store) stopped() bool { return s.ctx.Err() != nil }

// watchLeadership reacts to this node gaining and losing leadership. raft blocks until each
// notification is read, so the work runs elsewhere.
func (s *Store) watchLeadership(notifyCh chan bool) {
	var stopTerm context.CancelFunc = func() {}
	for {
		select {
		case isLeader := <-notifyCh:
			stopTerm()
			s.readyTerm.Store(0)
			s.readySig.fire()
			s.lessor.demote()
			if !isLeader {
				stopTerm = func() {}
				continue
			}
			ctx, cancel := context.WithCancel(s.ctx)
			stopTerm = cancel
			term := s.raft.CurrentTerm()
			s.spawn(func() { s.startTerm(ctx, term) })
		case <-s.ctx.Done():
			stopTerm()
			return
		}
	}
}

// startTerm commits this leader's first command. Once it is applied, every entry of earlier terms
// is applied too, so the commit index is safe to serve reads at and lease state is complete.
func (s *Store) startTerm(ctx context.Context, term uint64) {
	data := (&wire.Command{Kind: wire.KindLeaderStart, Term: term, NodeID: s.id}).Marshal(nil)
	for ctx.Err() == nil {
		err := s.waitFuture(ctx, s.raft.Apply(data, 0))
		if err == nil {
			if s.raft.CurrentTerm() != term || s.raft.State() != raft.Leader {
				return
			}
			s.readyTerm.Store(term)
			s.readySig.fire()
			s.lessor.promote(ctx)
			return
		}
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrRaftShutdown) || ctx.Err() != nil || errors.Is(err, ErrStopped) {
			return
		}
		s.log.Warn("leader start entry failed; retrying", "error", err)
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// observeLeaders tracks who leads, for forwarding and LeaderChanges.
func (s *Store) observeLeaders(obsCh chan raft.Observation) {
	for {
		select {
		case o := <-obsCh:
			lo := o.Data.(raft.LeaderObservation)
			s.metrics.leaderObserved(string(lo.LeaderID))
			s.leaderSig.fire()
			term := s.raft.CurrentTerm()
			s.term.Store(term)
			s.leaderSubs.publish(LeaderChange{ID: string(lo.LeaderID), IsSelf: string(lo.LeaderID) == s.id, Term: term})
		case <-s.ctx.Done():
			return
		}
	}
}

// LeaderChanges returns a channel that receives every leader change this member observes,
// starting with the current leader. A subscriber that falls behind loses older changes, never the
// latest: the channel holds at most 16, so one that is never read costs constant memory. The
// channel closes when the store closes. There is nothing to unsubscribe: a channel the host no
// longer holds is garbage-collected and its subscription dropped (the store keeps only a weak
// reference), so calling LeaderChanges often does not accumulate subscriptions.
func (s *Store) LeaderChanges() <-chan LeaderChange {
	return s.leaderSubs.subscribe(s.stopped(), func() LeaderChange {
		_, id := s.raft.LeaderWithID()
		return LeaderChange{ID: string(id), IsSelf: string(id) == s.id, Term: s.raft.CurrentTerm()}
	})
}

// IsLeader reports whether this member is the raft leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the current leader's ID and peer address, or empty strings if none is known.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// header builds a response header at revision rev.
func (s *Store) header(rev int64) ResponseHeader {
	return ResponseHeader{Revision: rev, RaftTerm: s.raft.CurrentTerm(), MemberID: s.id}
}

// WaitReady returns once a leader is known and this member has applied everything the leader had
// committed when WaitReady was called (or later). A cancelled ctx abandons the wait.
func (s *Store) WaitReady(ctx context.Context) error {
	_, err := s.linearizableView(ctx)
	return err
}

// nextID returns a fresh request ID for deduplication.
func (s *Store) nextID() wire.RequestID {
	return wire.RequestID{Client: s.clientID, Seq: s.seq.Add(1)}
}

// propose commits cmd through raft, on this member if it leads or through the leader otherwise,
// and returns the state machine's result. A write whose outcome is unknown (leadership lost,
// connection lost) is retried with the same request ID; the state machine drops the duplicate.
func (s *Store) propose(ctx context.Context, cmd *wire.Command) (*wire.Result, error) {
	cmd.ID = s.nextID()
	data := cmd.Marshal(nil)
	if len(data) > s.cfg.maxRequestBytes {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrRequestTooLarge, len(data), s.cfg.maxRequestBytes)
	}
	res, err := s.submitOwn(ctx, cmd, data, true)
	if err != nil {
		return nil, err
	}
	if res.Code == wire.CodeResultNotHeld {
		return nil, fmt.Errorf("%w (applied at revision %d)", errResultNotHeld, res.Revision)
	}
	if err := codeError(res.Code); err != nil {
		return res, err
	}
	return res, nil
}

// submit retries until the command is committed, fails for good, or ctx ends. data is cmd's
// encoding. Once an attempt may have been applied, retries carry a RetryFloor so that the state
// machine can tell a duplicate it no longer remembers from a new command.
func (s *Store) submit(ctx context.Context, cmd *wire.Command, data []byte, forward bool) (*wire.Result, error) {
	floor := max(s.fsm.applied.Load(), 1)
	maybeApplied := false
	for attempt := 0; ; attempt++ {
		if maybeApplied && cmd.RetryFloor == 0 {
			cmd.RetryFloor = floor
			data = cmd.Marshal(nil)
		}
		if s.stopped() {
			return nil, unknownIfMaybeApplied(maybeApplied, s.stoppedErr())
		}
		var res *wire.Result
		var err error
		forwarded := false
		if s.raft.State() == raft.Leader {
			// The leader enforces the quota for the whole cluster, forwarded writes included.
			if err := s.checkQuota(cmd, len(data)); err != nil {
				return nil, unknownIfMaybeApplied(maybeApplied, err)
			}
			res, err = s.applyLocal(ctx, data)
		} else if forward {
			res, err = s.forward(ctx, data)
			forwarded = true
		} else {
			return nil, errNotLeader
		}
		if err == nil {
			return res, nil
		}
		switch {
		case errors.Is(err, errLeadershipLost), errors.Is(err, peer.ErrOutcomeUnknown),
			forwarded && errors.Is(err, ErrTimeout):
			// The leader may have applied it. A retry carries the same request ID, so the state
			// machine answers it from the first attempt's result if that one was applied.
			maybeApplied = true
		case errors.Is(err, errNotLeader), errors.Is(err, errNotReady), errors.Is(err, ErrNoLeader),
			errors.Is(err, peer.ErrNotSent), forwarded && errors.Is(err, ErrStopped):
			// Not applied. A leader that answers ErrStopped is closing: another will lead.
		default:
			return nil, giveUp(ctx, err, maybeApplied)
		}
		if !forward {
			return nil, err
		}
		if err := s.waitLeaderChange(ctx, attempt); err != nil {
			return nil, unknownIfMaybeApplied(maybeApplied, noLeader(err))
		}
	}
}

// giveUp is the error a write ends with when an attempt failed with err, an error that is not
// worth a retry, or ctx ended.
func giveUp(ctx context.Context, err error, maybeApplied bool) error {
	switch {
	case errors.Is(err, ErrTimeout):
		return err // already an unknown outcome, which the end of ctx must not make definite
	case ctx.Err() == nil:
		return unknownIfMaybeApplied(maybeApplied, err)
	case maybeApplied || errors.Is(err, errWaitAbandoned):
		return outcomeUnknown(ctx.Err())
	}
	return fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
}

// unknownIfMaybeApplied turns the error that ends a write's retries into an unknown outcome
// (ErrTimeout, and none of err's definite sentinels) when an earlier attempt may have been
// applied: a member that stops while its write is forwarded, say, cannot tell whether the leader
// committed it, and must not report a definite failure.
func unknownIfMaybeApplied(maybeApplied bool, err error) error {
	if maybeApplied {
		return outcomeUnknown(err)
	}
	return err
}

// errWaitAbandoned marks a wait on a write that was handed to raft and abandoned by ctx.
var errWaitAbandoned = errors.New("ember: wait for commit abandoned")

// applyLocal hands data to raft on the leader and waits for the state machine's result.
func (s *Store) applyLocal(ctx context.Context, data []byte) (*wire.Result, error) {
	f := s.raft.ApplyLog(raft.Log{Data: data}, 0)
	if planted.Enabled(planted.AckBeforeCommit) {
		if res := plantedEarlyAck(s, data); res != nil {
			return res, nil
		}
	}
	if err := s.waitFuture(ctx, f); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress),
			errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, errNotLeader // never appended
		case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
			return nil, errLeadershipLost
		case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, ErrStopped):
			// In flight when the member stopped: it may have been appended, and may yet commit.
			return nil, outcomeUnknown(s.stoppedErr())
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w: %w", errWaitAbandoned, ctx.Err())
		}
		// Anything else (a log store write error) may come after the entry reached the disk,
		// where a restart would apply it: the outcome is unknown, never a definite failure.
		return nil, outcomeUnknown(err)
	}
	res, ok := f.Response().(*wire.Result)
	if !ok {
		return nil, fmt.Errorf("ember: unexpected state machine response %T", f.Response())
	}
	return res, nil
}

// waitFuture waits for a raft future. A cancelled ctx or Close abandons the wait, not the
// operation.
//
// hashicorp/raft does not answer futures still queued for the state machine when it shuts down
// (hashicorp/raft#498), so the goroutine that blocks on the future is tracked, and Close lets
// in-flight futures resolve before it stops raft.
func (s *Store) waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	s.spawnMu.Lock()
	if s.closing {
		s.spawnMu.Unlock()
		return ErrStopped
	}
	s.futures.Add(1)
	s.spawnMu.Unlock()
	go func() {
		defer s.futures.Done()
		done <- f.Error()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return ErrStopped
	}
}

// drainFutures waits, bounded, for the raft futures in flight: while raft runs, each resolves
// (applied, or failed when leadership is lost).
func (s *Store) drainFutures() {
	done := make(chan struct{})
	go func() {
		s.futures.Wait()
		close(done)
	}()
	t := time.NewTimer(2*s.cfg.electionTimeout + time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("raft operations still in flight at shutdown")
	}
}

// waitLeaderChange pauses before a retry: until the leader changes, or a short backoff passes.
func (s *Store) waitLeaderChange(ctx context.Context, attempt int) error {
	backoff := time.Duration(min(attempt+1, 10)) * 10 * time.Millisecond
	t := time.NewTimer(backoff)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.leaderSig.wait():
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return s.stoppedErr()
	}
	return nil
}

// noLeader explains a wait for a leader that ended: the store closed, or ctx ended first.
func noLeader(err error) error {
	if errors.Is(err, ErrStopped) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrNoLeader, err)
}

// leaderAddr returns the leader's peer address, or errNoLeaderKnown.
func (s *Store) leaderAddr() (string, error) {
	addr, id := s.raft.LeaderWithID()
	if id == "" || addr == "" {
		return "", ErrNoLeader
	}
	if string(id) == s.id {
		return "", errNotLeader // raft still thinks it leads but State() said otherwise: retry
	}
	return string(addr), nil
}
