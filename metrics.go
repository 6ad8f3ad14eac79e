package ember

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds one store's Prometheus collectors, named like etcd's so that dashboards carry
// over (docs/METRICS.md). A store opened without WithMetricsRegisterer has a nil *metrics: every
// method is a no-op on nil, so a hook on a hot path costs one nil check and nothing is created.
type metrics struct {
	// raft is set once raft runs; the gauges that read it report 0 until then. It is separate
	// from Store.raft, which open assigns while a scrape may already be reading.
	raft atomic.Pointer[raft.Raft]

	leaderChanges prometheus.Counter
	pending       prometheus.Gauge
	failed        prometheus.Counter
	walFsync      prometheus.Histogram
	backendCommit prometheus.Histogram
	snapSave      prometheus.Histogram
	readIndexWait prometheus.Histogram
	forwarded     map[uint8]prometheus.Counter // by peer RPC method

	all []prometheus.Collector // every collector, in registration order
}

// diskBuckets are etcd's buckets for its disk latency histograms: 1ms to about 8s.
var diskBuckets = prometheus.ExponentialBuckets(0.001, 2, 14)

// forwardedMethods names the leader-only RPCs a member sends on, as the label of
// ember_forwarded_requests_total.
var forwardedMethods = map[uint8]string{
	mForward:      "write",
	mForwardBatch: "write_batch",
	mReadIndex:    "read_index",
	mKeepAlive:    "keepalive",
	mTimeToLive:   "time_to_live",
	mJoin:         "join",
	mPromote:      "promote",
	mRemove:       "remove",
	mTransfer:     "transfer",
	mMembers:      "members",
	mUpdate:       "update",
}

func newMetrics(s *Store) *metrics {
	m := &metrics{
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_server_leader_changes_seen_total",
			Help: "The number of leader changes seen.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcd_server_proposals_pending",
			Help: "The number of proposals this member submitted that are not yet committed or failed.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_server_proposals_failed_total",
			Help: "The number of proposals this member submitted that failed to commit (no leader, timeout, store closing).",
		}),
		walFsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "etcd_disk_wal_fsync_duration_seconds",
			Help:    "The latency distribution of raft log appends to disk (bbolt commit or WAL write, and fsync).",
			Buckets: diskBuckets,
		}),
		backendCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "etcd_disk_backend_commit_duration_seconds",
			Help:    "The latency distribution of applying a batch of committed entries to the state.",
			Buckets: diskBuckets,
		}),
		snapSave: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "etcd_debugging_snap_save_total_duration_seconds",
			Help:    "The latency distribution of writing a raft snapshot to the snapshot store.",
			Buckets: diskBuckets,
		}),
		readIndexWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ember_read_index_wait_seconds",
			Help:    "The time a linearizable read waits for its read index and for this member to apply up to it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17), // 100µs to about 6.5s
		}),
		forwarded: map[uint8]prometheus.Counter{},
	}
	fwd := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ember_forwarded_requests_total",
		Help: "Requests this member sent on to the leader, by method; every attempt counts.",
	}, []string{"method"})
	for method, name := range forwardedMethods {
		// Created up front so that every series exists from the start and rate() sees its zero.
		m.forwarded[method] = fwd.WithLabelValues(name)
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.all = []prometheus.Collector{
		gauge("etcd_server_has_leader", "Whether a leader is known to this member: 1 or 0.", func() float64 {
			if r := m.raft.Load(); r != nil {
				if _, id := r.LeaderWithID(); id != "" {
					return 1
				}
			}
			return 0
		}),
		m.leaderChanges,
		// etcd's two "totals" are gauges of the raft commit and apply indexes; so are these, and
		// they count every log entry (configuration changes and leader markers too), as etcd's do.
		gauge("etcd_server_proposals_committed_total", "The raft commit index known to this member.", func() float64 {
			if r := m.raft.Load(); r != nil {
				return float64(r.CommitIndex())
			}
			return 0
		}),
		gauge("etcd_server_proposals_applied_total", "The raft index this member's state has applied.", func() float64 {
			return float64(s.fsm.applied.Load())
		}),
		m.pending,
		m.failed,
		gauge("etcd_mvcc_db_total_size_in_bytes", "Size of the raft log on disk (raft.db, or the wal dir) in bytes; the logical size of the state in memory mode.", func() float64 {
			return float64(dbSize(s))
		}),
		gauge("etcd_mvcc_db_total_size_in_use_in_bytes", "Logical size of the state in bytes: every kept version of every key, as the space quota counts it.", func() float64 {
			return float64(s.fsm.sizeInUse.Load())
		}),
		gauge("ember_dedup_bytes", "Size in bytes of the table of recent request IDs and their results that answers retried writes, as Status.DedupBytes.", func() float64 {
			return float64(s.fsm.dedupSize.Load())
		}),
		m.walFsync,
		m.backendCommit,
		m.snapSave,
		gauge("ember_watchers", "The number of open watches on this member.", func() float64 {
			return float64(s.watch.count())
		}),
		gauge("ember_leases", "The number of leases in the state.", func() float64 {
			return float64(s.fsm.view().st.LeaseCount())
		}),
		m.readIndexWait,
		fwd,
	}
	return m
}

// dbSize is the raft log file's size, or the logical size of the state in memory mode, as
// Status.DBSize.
func dbSize(s *Store) int64 {
	if n := s.stores.DiskSize(); n >= 0 {
		return n
	}
	return s.fsm.sizeInUse.Load()
}

// instrument creates the store's collectors (the raft log's append timing observes into one, see
// logOptions) and registers them on the WithMetricsRegisterer registerer. open runs it before
// raft starts, so a registerer that already serves an open store fails Open before the data dir
// is bootstrapped. The collectors are unregistered when the store closes, so a store reopened in
// the same process can use the same registerer again.
func (s *Store) instrument() error {
	reg := s.cfg.metrics
	if reg == nil {
		return nil
	}
	m := newMetrics(s)
	for i, c := range m.all {
		if err := reg.Register(c); err != nil {
			for _, done := range m.all[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("ember: register metrics: %w (a registerer serves one open store; give "+
				"each store its own, or wrap it for each with prometheus.WrapRegistererWith and a distinct label)", err)
		}
	}
	s.spawn(func() {
		<-s.ctx.Done()
		for _, c := range m.all {
			reg.Unregister(c)
		}
	})
	s.fsm.metrics = m
	s.metrics = m
	return nil
}

// raftStarted lets the raft gauges read r.
func (m *metrics) raftStarted(r *raft.Raft) {
	if m == nil {
		return
	}
	m.raft.Store(r)
}

// start returns the start time of a timed operation; without metrics it skips the clock read.
func (m *metrics) start() time.Time {
	if m == nil {
		return time.Time{}
	}
	return time.Now()
}

func observeSince(h prometheus.Histogram, start time.Time) {
	h.Observe(time.Since(start).Seconds())
}

// leaderObserved counts a change to a known leader; as in etcd, losing the leader is not a
// change, and regaining the same one after a gap is.
func (m *metrics) leaderObserved(id string) {
	if m == nil || id == "" {
		return
	}
	m.leaderChanges.Inc()
}

func (m *metrics) proposalStarted() {
	if m == nil {
		return
	}
	m.pending.Inc()
}

// proposalDone resolves a pending proposal. As in etcd, a proposal fails when it is not committed
// for a reason outside the request itself: no leader, a wait for the commit that timed out or lost
// leadership, or the store closing. A state machine result, even an error such as
// ErrLeaseNotFound, belongs to a committed proposal; a request the leader refused before raft
// (ErrNoSpace, ErrTooManyOps) was never proposed.
func (m *metrics) proposalDone(err error) {
	if m == nil {
		return
	}
	m.pending.Dec()
	if errors.Is(err, ErrNoLeader) || errors.Is(err, ErrTimeout) || errors.Is(err, ErrStopped) ||
		errors.Is(err, errLeadershipLost) {
		m.failed.Inc()
	}
}

// appliedBatch times one FSM apply batch, ember's counterpart of etcd's backend commit.
func (m *metrics) appliedBatch(start time.Time) {
	if m == nil {
		return
	}
	observeSince(m.backendCommit, start)
}

// snapshotPersisted times one raft snapshot written to the snapshot store.
func (m *metrics) snapshotPersisted(start time.Time) {
	if m == nil {
		return
	}
	observeSince(m.snapSave, start)
}

// readIndexWaited times one linearizable read, from its call until this member applied its read
// index.
func (m *metrics) readIndexWaited(start time.Time) {
	if m == nil {
		return
	}
	observeSince(m.readIndexWait, start)
}

// forwardedToLeader counts one leader-only RPC this member sends on to the leader.
func (m *metrics) forwardedToLeader(method uint8) {
	if m == nil {
		return
	}
	if c, ok := m.forwarded[method]; ok {
		c.Inc()
	}
}

// logAppended observes one append to the raft log on disk, ember's counterpart of etcd's WAL
// fsync (internal/raftlog times it; see logOptions).
func (m *metrics) logAppended(d time.Duration) {
	if m == nil {
		return
	}
	m.walFsync.Observe(d.Seconds())
}
