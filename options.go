package ember

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/hashicorp/raft-wal/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ember-kv/ember/internal/peer"
)

// Option configures Open.
type Option func(*config) error

type config struct {
	nodeID         string
	bindAddr       string
	advertiseAddr  string
	initialCluster map[string]string
	join           []string
	learner        bool
	serverTLS      *tls.Config
	clientTLS      *tls.Config
	admission      *peer.Admission // WithClusterToken; holds a key derived from the token, not the token
	insecurePeers  bool
	logger         hclog.Logger

	electionTimeout  time.Duration
	heartbeatTimeout time.Duration

	snapshotThreshold uint64
	snapshotInterval  time.Duration
	snapshotRetain    int

	logStore LogStore // 0: what the data dir holds, the WAL for a new one

	maxRequestBytes int
	maxTxnOps       int

	progressInterval time.Duration

	quotaBytes int64

	dedupResultBytes int64

	autoCompactMode      string
	autoCompactRetention time.Duration // periodic
	autoCompactRevisions int64         // revision
	autoCompactInterval  time.Duration // how often the compactor runs; 0 = as etcd (tests shorten it)

	corruptCheckInterval time.Duration // 0: no periodic hash check

	metrics prometheus.Registerer

	raftConfig func(*raft.Config)

	// dial replaces the TCP dialer for peer connections; tests use it to inject faults.
	dial peer.DialFunc
	// wrapStores wraps raft's log and stable stores; tests use it to inject disk faults.
	wrapStores func(raft.LogStore, raft.StableStore) (raft.LogStore, raft.StableStore)
	// walVFS, if set, is what raft-wal opens its segment files through; tests inject faults.
	walVFS types.VFS
}

func defaultConfig() config {
	return config{
		electionTimeout:   time.Second,
		heartbeatTimeout:  time.Second,
		snapshotThreshold: 16384,
		snapshotInterval:  0, // raftConfig picks it: see WithSnapshotInterval
		snapshotRetain:    2,
		maxRequestBytes:   defaultMaxRequestBytes,
		maxTxnOps:         defaultMaxTxnOps,
		progressInterval:  defaultProgressInterval,
		quotaBytes:        defaultQuotaBytes,
		dedupResultBytes:  defaultDedupResultBytes,
	}
}

const (
	defaultMaxRequestBytes = 3 << 19 // 1.5 MiB, as etcd
	defaultMaxTxnOps       = 128
	defaultQuotaBytes      = 2 << 30 // 2 GiB, as etcd

	// defaultDedupResultBytes: a retry comes within seconds of its first attempt, so only the
	// writes in flight at a leader change or a lost reply need their results. 8 MiB holds five
	// results of the largest request (a put of a 1.5 MiB value WithPrevKV returns the previous
	// value, itself at most 1.5 MiB), while a table that every member keeps in memory and writes
	// into every snapshot stays small next to the data. Short results are held apart from it.
	defaultDedupResultBytes = 8 << 20
)

// WithNodeID sets this member's stable ID. By default an ID is generated on first start and kept
// in the data dir.
func WithNodeID(id string) Option {
	return func(c *config) error {
		if id == "" {
			return fmt.Errorf("ember: WithNodeID: empty ID")
		}
		c.nodeID = id
		return nil
	}
}

// WithBindAddr sets host:port of the peer listener that carries raft and forwarding traffic.
// Without it the node has no listener and can only be a single-member cluster.
func WithBindAddr(addr string) Option {
	return func(c *config) error { c.bindAddr = addr; return nil }
}

// WithAdvertiseAddr sets the address peers dial; it defaults to the bind address.
func WithAdvertiseAddr(addr string) Option {
	return func(c *config) error { c.advertiseAddr = addr; return nil }
}

// WithInitialCluster names every founding voter (member ID → peer address), like etcd's
// --initial-cluster. Give every founder the same map. It bootstraps only a data dir that holds no
// state; afterwards it is ignored.
func WithInitialCluster(peers map[string]string) Option {
	return func(c *config) error {
		if len(peers) == 0 {
			return fmt.Errorf("ember: WithInitialCluster: no peers")
		}
		c.initialCluster = make(map[string]string, len(peers))
		for id, addr := range peers {
			if id == "" || addr == "" {
				return fmt.Errorf("ember: WithInitialCluster: empty ID or address")
			}
			c.initialCluster[id] = addr
		}
		return nil
	}
}

// WithJoin joins an existing cluster through any of addrs (peer addresses of members). The node
// is added as a non-voter and promoted to voter once it has caught up (unless WithLearner).
func WithJoin(addrs ...string) Option {
	return func(c *config) error {
		if len(addrs) == 0 {
			return fmt.Errorf("ember: WithJoin: no addresses")
		}
		c.join = append([]string(nil), addrs...)
		return nil
	}
}

// WithLearner makes a joining node stay a non-voting learner until PromoteMember.
func WithLearner() Option {
	return func(c *config) error { c.learner = true; return nil }
}

// WithTLS secures all peer traffic with TLS: server for the listener, client for dialing peers.
// For mutual TLS set server.ClientAuth = tls.RequireAndVerifyClientCert and give both configs
// the cluster's CA. A refused peer is logged at Warn by the member that refused it; note that a
// peer whose certificate comes from another CA usually sends no certificate at all (crypto/tls
// only offers one the server's CA list accepts), so the log says "didn't provide a certificate".
func WithTLS(server, client *tls.Config) Option {
	return func(c *config) error {
		if server == nil || client == nil {
			return fmt.Errorf("ember: WithTLS: both configs are required")
		}
		c.serverTLS, c.clientTLS = server, client
		return nil
	}
}

// WithClusterToken admits only peers that know token. Every peer connection (raft traffic,
// forwarded writes, read index, lease keepalives, membership changes, joins, status probes) is
// encrypted with TLS 1.3, and before either end acts on anything the other sends, both prove
// knowledge of the token with an HMAC bound to that TLS session, so a proof cannot be replayed
// on another connection. A peer that fails is disconnected and logged at Warn by the member
// that refused it; nothing it sent is acted on. Give every member the same token: a long random
// secret (say 32 bytes from crypto/rand, hex-encoded), since a member that is made to dial an
// impostor hands it a proof that a short token could be guessed back from. The token is kept
// out of logs, errors and metrics.
//
// Without WithTLS, each member makes a self-signed certificate at Open and does not check its
// peers' certificates: the token proof does that job. With WithTLS the host's configurations
// carry the connection (they must allow TLS 1.3 or 1.2 with the extended master secret, as Go's
// defaults do) and the token is proved on top, so a peer needs both.
//
// Members of one cluster must agree: a member with a different token, or without one, cannot
// connect to it, nor it to them. Changing the token means restarting every member with the
// new one; members with different tokens do not talk, so a cluster restarted one member at a
// time loses its quorum halfway. See docs/OPERATIONS.md.
func WithClusterToken(token string) Option {
	return func(c *config) error {
		if token == "" {
			return fmt.Errorf("ember: WithClusterToken: empty token")
		}
		c.admission = peer.NewAdmission(token)
		return nil
	}
}

// WithInsecurePeers lets a member bind its peer listener (WithBindAddr) to an address other
// hosts can reach without WithTLS or WithClusterToken, which Open otherwise refuses with
// ErrInsecurePeers. Anyone who can reach the port can then join the cluster and read every
// key, write, and change its membership: only for networks where every host is trusted. A
// listener on a loopback address needs no option; it is reachable from this host only.
func WithInsecurePeers() Option {
	return func(c *config) error { c.insecurePeers = true; return nil }
}

// WithDialer replaces the TCP dialer used for every connection to a peer (raft and RPC). The
// dialer gets the peer address and must return a connection to it; ember writes its protocol
// byte and, with WithTLS or WithClusterToken, the TLS handshake and token proof on top. Tests use it to inject network faults
// (package embertest does); hosts can use it to route peer traffic.
func WithDialer(dial func(ctx context.Context, addr string) (net.Conn, error)) Option {
	return func(c *config) error { c.dial = dial; return nil }
}

// WithLogger sends ember's and raft's logs to l. By default nothing is logged.
func WithLogger(l hclog.Logger) Option {
	return func(c *config) error { c.logger = l; return nil }
}

// WithSlog sends ember's and raft's logs to l. By default nothing is logged.
func WithSlog(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return nil
		}
		c.logger = newSlogAdapter(l)
		return nil
	}
}

// WithElectionTimeout sets raft's election timeout (default 1s). It also sets the minimum lease
// TTL, ceil(1.5 × election timeout), as etcd.
func WithElectionTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("ember: WithElectionTimeout: %v", d)
		}
		c.electionTimeout = d
		return nil
	}
}

// WithHeartbeatTimeout sets how long a follower waits for the leader before it starts an
// election (default 1s).
func WithHeartbeatTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("ember: WithHeartbeatTimeout: %v", d)
		}
		c.heartbeatTimeout = d
		return nil
	}
}

// WithSnapshotThreshold sets how many log entries since the last snapshot trigger a new one
// (default 16384).
func WithSnapshotThreshold(n uint64) Option {
	return func(c *config) error { c.snapshotThreshold = n; return nil }
}

// WithSnapshotInterval sets how often raft checks whether to snapshot (default 2s for a member
// with a data dir, whose snapshots are markers of its committed backend and cost a commit; 30s
// for one without, whose snapshots copy the whole state).
func WithSnapshotInterval(d time.Duration) Option {
	return func(c *config) error { c.snapshotInterval = d; return nil }
}

// WithLogStore selects the raft log store of a new data dir (default LogStoreWAL); an existing
// dir keeps the one it was created with, and Open refuses one that differs from k. See
// [LogStoreWAL] for the trade-off.
func WithLogStore(k LogStore) Option {
	return func(c *config) error {
		if k != LogStoreBolt && k != LogStoreWAL {
			return fmt.Errorf("ember: WithLogStore: unknown log store %v", k)
		}
		c.logStore = k
		return nil
	}
}

// WithSnapshotRetain sets how many snapshots are kept on disk (default 2).
func WithSnapshotRetain(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("ember: WithSnapshotRetain: %d < 1", n)
		}
		c.snapshotRetain = n
		return nil
	}
}

// WithMaxRequestBytes caps the encoded size of one write request (default 1.5 MiB).
func WithMaxRequestBytes(n int) Option {
	return func(c *config) error {
		if n <= 0 {
			return fmt.Errorf("ember: WithMaxRequestBytes: %d", n)
		}
		c.maxRequestBytes = n
		return nil
	}
}

// WithMaxTxnOps caps the compares and the ops per branch of a transaction (default 128).
func WithMaxTxnOps(n int) Option {
	return func(c *config) error {
		if n <= 0 {
			return fmt.Errorf("ember: WithMaxTxnOps: %d", n)
		}
		c.maxTxnOps = n
		return nil
	}
}

// WithCorruptCheckInterval makes the leader check, every d, that the members' states agree, as
// etcd's --experimental-corrupt-check-time: it asks every other member for its HashKV at the
// leader's revision, and raises a CORRUPT alarm (through the log) for a member whose hash differs
// at the same compact revision, or whose revision or compact revision is ahead of the leader's.
// While CORRUPT is raised the cluster refuses writes (puts, deletes, transactions that write,
// compactions, lease grants and revokes) with ErrCorrupt; reads are served. AlarmDisarm clears
// it. 0 (the default, as etcd) turns the check off. Each check hashes the whole history once on
// the leader and once on every member, so d is minutes, not seconds, on a large store.
func WithCorruptCheckInterval(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("ember: WithCorruptCheckInterval: %v", d)
		}
		c.corruptCheckInterval = d
		return nil
	}
}

// WithWatchProgressNotifyInterval sets how often a watch made WithProgressNotify reports
// progress when it has had no events (default 10 minutes, as etcd).
func WithWatchProgressNotifyInterval(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("ember: WithWatchProgressNotifyInterval: %v", d)
		}
		c.progressInterval = d
		return nil
	}
}

// WithQuotaBackendBytes sets the space quota on the logical size of the store (every version of
// every key kept, see Status.DBSizeInUse). Over it, requests that add data (puts, transactions
// with a put, lease grants) fail with ErrNoSpace, while reads, deletes, compaction, revokes and
// keepalives go on. The first refusal raises the NOSPACE alarm (AlarmList), as etcd: writes work
// again once compaction has brought the size under the quota and the alarm is disarmed
// (AlarmDisarm).
// 0 means the default, 2 GiB; a negative value disables the quota.
func WithQuotaBackendBytes(n int64) Option {
	return func(c *config) error {
		switch {
		case n == 0:
			c.quotaBytes = defaultQuotaBytes
		case n < 0:
			c.quotaBytes = 0
		default:
			c.quotaBytes = n
		}
		return nil
	}
}

// WithDedupResultBytes caps the bytes of write results the state machine holds to answer
// retried writes (default 8 MiB). A write whose outcome was unknown to the member that sent it
// (a lost reply, a leader change) is retried with its request ID, and the retry is answered with
// the first attempt's result instead of being applied twice. Results of up to 32 bytes (a put
// or delete without WithPrevKV, a lease grant, any failure) are always held; larger ones
// (previous values, ranges inside a transaction) are dropped oldest first to stay within n
// bytes. A retry of a write whose result was dropped is not applied again and fails with an
// error that wraps ErrTimeout. Status.DedupBytes reports the table's logical size. 0 means
// the default. Give every member the same value: members that differ still agree on every
// write, but answer a retry with its result, or without it, differently.
func WithDedupResultBytes(n int64) Option {
	return func(c *config) error {
		switch {
		case n < 0:
			return fmt.Errorf("ember: WithDedupResultBytes: %d", n)
		case n == 0:
			c.dedupResultBytes = defaultDedupResultBytes
		default:
			c.dedupResultBytes = n
		}
		return nil
	}
}

// WithAutoCompaction makes the leader compact history on its own, as etcd's
// --auto-compaction-mode/--auto-compaction-retention: mode "periodic" keeps retention (a Go
// duration such as "1h", or a bare number of hours) of history; mode "revision" keeps the last
// retention revisions (a number such as "1000"). Retention "0" disables it, the default.
func WithAutoCompaction(mode, retention string) Option {
	return func(c *config) error {
		switch mode {
		case "periodic":
			d, err := time.ParseDuration(retention)
			if err != nil {
				h, herr := strconv.ParseInt(retention, 10, 64)
				if herr != nil || h < 0 {
					return fmt.Errorf("ember: WithAutoCompaction: bad periodic retention %q", retention)
				}
				d = time.Duration(h) * time.Hour
			}
			if d < 0 {
				return fmt.Errorf("ember: WithAutoCompaction: negative retention %q", retention)
			}
			c.autoCompactMode, c.autoCompactRetention = mode, d
		case "revision":
			n, err := strconv.ParseInt(retention, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("ember: WithAutoCompaction: bad revision retention %q", retention)
			}
			c.autoCompactMode, c.autoCompactRevisions = mode, n
		default:
			return fmt.Errorf("ember: WithAutoCompaction: unknown mode %q (want periodic or revision)", mode)
		}
		return nil
	}
}

// WithMetricsRegisterer registers ember's Prometheus collectors on reg, named like etcd's so
// that existing dashboards carry over (docs/METRICS.md). Without it nothing is registered
// anywhere.
func WithMetricsRegisterer(reg prometheus.Registerer) Option {
	return func(c *config) error { c.metrics = reg; return nil }
}

// WithRaftConfig lets fn change raft's configuration after ember has set it up. It is an escape
// hatch: settings that break ember's assumptions (ShutdownOnRemove, NotifyCh) are set back.
func WithRaftConfig(fn func(*raft.Config)) Option {
	return func(c *config) error { c.raftConfig = fn; return nil }
}

func (c *config) log() hclog.Logger {
	if c.logger == nil {
		return hclog.NewNullLogger()
	}
	return c.logger
}
