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

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/readindex"
)

// Store is one member of an ember cluster: a raft node whose state machine is a revisioned
// key-value store. All methods are safe for concurrent use by any number of goroutines.
//
// Writes may be called on any member; a follower forwards them to the leader. Reads are
// linearizable by default on every member; WithSerializable reads local state instead.
//
// A Store may be a namespace of another (see Namespace): it shares the member and sees only the
// keys under its prefix.
type Store struct {
	*core
	ns string // key prefix of a namespace view; "" for the member itself
}

// core is the member behind a Store and every namespace of it.
type core struct {
	cfg config
	id  string
	log hclog.Logger

	raft   *raft.Raft
	fsm    *fsm
	watch  *watchHub
	lessor *lessor
	stores *raftStores
	net    *network // nil for a node without a listener
	fwd    *forwarder

	metrics *metrics // nil without WithMetricsRegisterer

	clientID uint64        // this member's request ID space, random per process
	seq      atomic.Uint64 // last request ID sequence used

	readIndex *readindex.Batcher
	getOps    sync.Pool     // *Op reused by Get (see there)
	reconfig  reconfigLock  // held by the leader through each membership change
	readyTerm atomic.Uint64 // term whose LeaderStart this node applied as leader; 0 if not leader
	readySig  signal        // fired when readyTerm changes
	leaderSig signal        // fired on every leader change this node observes

	confirmRound atomic.Uint64 // last leadership confirmation round this member started

	logHold logHold // the raft log kept for members installing a snapshot (catchup.go)

	raisingNoSpace atomic.Bool // a proposal raising NOSPACE for this member is under way

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

// every calls fn every d until the member closes or fn returns false.
func (s *Store) every(d time.Duration, fn func() (more bool)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
		if !fn() {
			return
		}
	}
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
	s := &Store{core: &core{cfg: cfg, id: id, log: log, ctx: ctx, cancel: cancel, clientID: randomUint64()}}
	if err := s.open(dir, existing); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) open(dir string, memberExisted bool) error {
	var err error
	if s.stores, err = openRaftStores(dir, &s.cfg, s.log, s.logOptions(memberExisted)); err != nil {
		return err
	}
	s.watch = newWatchHub(s, s.cfg.progressInterval, s.cfg.electionTimeout)
	s.lessor = newLessor(s, s.log.Named("lessor"), s.cfg.electionTimeout)
	backendPath := ""
	if dir != "" {
		backendPath = filepath.Join(dir, backendFile)
	}
	if s.fsm, err = newFSM(s.log.Named("fsm"), s.watch, s.lessor, s.cfg.dedupResultBytes, backendPath, mvcc.InlineValueMax); err != nil {
		return err
	}
	if snaps, ok := s.stores.snaps.(*snapshotStore); ok {
		snaps.fsm, snaps.sending = s.fsm, s.snapshotSending
		if err := s.fsm.restoreNewerSnapshot(snaps); err != nil {
			return err
		}
	}
	s.fsm.loaded()
	s.readIndex = readindex.New(s.fetchReadIndex)
	s.fwd = newForwarder(s)
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
	existing, err := raft.HasExistingState(s.stores.Logs, s.stores.Stable, s.stores.snaps)
	if err != nil {
		return fmt.Errorf("ember: read raft state: %w", err)
	}
	if !existing && len(s.cfg.join) == 0 {
		if err := s.bootstrap(rc, trans); err != nil {
			return err
		}
	}
	s.fsm.corrupt = s.stores.Halt
	s.raft, err = newRaftGuarded(rc, s.fsm, s.stores.Logs, s.stores.Stable, s.stores.snaps, trans)
	if err != nil {
		return fmt.Errorf("ember: start raft: %w", err)
	}
	s.stores.Arm()
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
	s.spawn(func() { s.fsm.runCommitter(s.ctx) })
	if len(s.cfg.join) > 0 {
		s.spawn(func() { s.joinLoop(!existing) })
	}
	if s.cfg.autoCompactMode != "" {
		s.spawn(s.runAutoCompaction)
	}
	if s.cfg.corruptCheckInterval > 0 {
		s.spawn(s.runCorruptCheck)
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
	if rc.SnapshotInterval == 0 {
		// Frequent snapshots keep the log short, so a restart reads little of it; with a
		// backend they cost only a commit.
		rc.SnapshotInterval = 30 * time.Second
		if s.fsm.backendPath != "" {
			rc.SnapshotInterval = 2 * time.Second
		}
	}
	// With a backend the state is loaded from it (newFSM), and raft's snapshots are markers.
	rc.NoSnapshotRestoreOnStart = s.fsm.backendPath != ""
	rc.TrailingLogs = 10240
	rc.NoLegacyTelemetry = true
	if s.cfg.raftConfig != nil {
		s.cfg.raftConfig(rc)
	}
	s.logHold.trailing = rc.TrailingLogs
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
	err := raft.BootstrapCluster(rc, s.stores.Logs, s.stores.Stable, s.stores.snaps, trans, conf)
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
		if s.fsm != nil {
			s.fsm.close()
		}
		if s.stores != nil {
			errs = append(errs, s.stores.Close())
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
	if others, _ := otherVoters(conf, s.id); others == 0 {
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

// lifetime is done when the member closes or stops.
func (s *Store) lifetime() context.Context { return s.ctx }

// view returns a read view at least as new as the last applied batch: serializable reads.
func (s *Store) view() *readView { return s.fsm.view() }

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
