package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"go.etcd.io/bbolt"

	"github.com/ember-kv/ember"
)

// The raw raft cluster is hashicorp/raft with a no-op FSM, configured as ember configures it
// (same log store, log cache, transport settings and timings), so that its put rate is the
// ceiling of what ember's replication layer allows.

type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) any                 { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }
func (nopFSM) Restore(r io.ReadCloser) error       { return r.Close() }

type nopSnapshot struct{}

func (nopSnapshot) Persist(s raft.SnapshotSink) error { return s.Close() }
func (nopSnapshot) Release()                          {}

type raftNode struct {
	r      *raft.Raft
	trans  *raft.NetworkTransport
	stores io.Closer
}

type raftCluster struct{ nodes []*raftNode }

func startRaft(ctx context.Context, members int, root string) (cluster, error) {
	var servers []raft.Server
	addrs := make([]string, members)
	for i := range members {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
		servers = append(servers, raft.Server{ID: raft.ServerID(memberName(i)), Address: raft.ServerAddress(a)})
	}
	c := &raftCluster{}
	for i := range members {
		n, err := startRaftNode(memberName(i), addrs[i], filepath.Join(root, memberName(i)), raft.Configuration{Servers: servers})
		if err != nil {
			c.close()
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}
	for c.leader() == nil {
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			c.close()
			return nil, fmt.Errorf("raft: no leader: %w", err)
		}
	}
	return c, nil
}

func startRaftNode(id, addr, dir string, conf raft.Configuration) (*raftNode, error) {
	log := hclog.NewNullLogger()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logs, stable, stores, err := openRawStores(dir)
	if err != nil {
		return nil, err
	}

	cache, err := raft.NewLogCache(512, logs)
	if err != nil {
		stores.Close()
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, log)
	if err != nil {
		stores.Close()
		return nil, err
	}
	trans, err := raft.NewTCPTransportWithConfig(addr, nil, &raft.NetworkTransportConfig{
		MaxPool: 3, Timeout: 10 * time.Second, Logger: log, MaxRPCsInFlight: 1,
	})
	if err != nil {
		stores.Close()
		return nil, err
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.Logger = log
	rc.HeartbeatTimeout, rc.ElectionTimeout = time.Second, time.Second
	rc.LeaderLeaseTimeout = 500 * time.Millisecond
	rc.CommitTimeout = 15 * time.Millisecond
	rc.MaxAppendEntries = 128
	rc.SnapshotThreshold = 16384
	rc.TrailingLogs = 10240
	rc.NoLegacyTelemetry = true
	if err := raft.BootstrapCluster(rc, cache, stable, snaps, trans, conf); err != nil {
		trans.Close()
		stores.Close()
		return nil, err
	}
	r, err := raft.NewRaft(rc, nopFSM{}, cache, stable, snaps, trans)
	if err != nil {
		trans.Close()
		stores.Close()
		return nil, err
	}
	return &raftNode{r: r, trans: trans, stores: stores}, nil
}

// openRawStores opens the log and stable stores -log-store names, as ember opens them.
func openRawStores(dir string) (raft.LogStore, raft.StableStore, io.Closer, error) {
	if logStore == ember.LogStoreWAL {
		walDir := filepath.Join(dir, "wal")
		if err := os.MkdirAll(walDir, 0o755); err != nil {
			return nil, nil, nil, err
		}
		w, err := wal.Open(walDir, wal.WithLogger(hclog.NewNullLogger()))
		if err != nil {
			return nil, nil, nil, err
		}
		return w, w, w, nil
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(dir, "raft.db"),
		BoltOptions: &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType},
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return bolt, bolt, bolt, nil
}

func (c *raftCluster) leader() *raftNode {
	for _, n := range c.nodes {
		if n.r.State() == raft.Leader {
			return n
		}
	}
	return nil
}

// client serves puts only, on the leader: raft has no follower forwarding. Each put goes to
// whichever node leads at the time, so a cell survives a leader change.
func (c *raftCluster) client(bool) client { return raftClient{c} }

func (c *raftCluster) close() error {
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.r.Shutdown().Error(), n.trans.Close(), n.stores.Close())
	}
	return errors.Join(errs...)
}

type raftClient struct{ c *raftCluster }

var (
	errUnsupported = errors.New("raw raft serves puts only")
	errNoLeader    = errors.New("raw raft: no leader")
)

// put appends key and value as one log entry and waits until it is applied.
func (c raftClient) put(_ context.Context, key, val string) (int64, error) {
	n := c.c.leader()
	if n == nil {
		return 0, errNoLeader
	}
	f := n.r.Apply([]byte(key+val), 0)
	if err := f.Error(); err != nil {
		return 0, err
	}
	return int64(f.Index()), nil
}

func (raftClient) get(context.Context, string, bool) error { return errUnsupported }
func (raftClient) cas(context.Context, string, int64, string) (bool, int64, error) {
	return false, 0, errUnsupported
}
func (raftClient) leasePut(context.Context, string, string, int64, bool) error {
	return errUnsupported
}
func (raftClient) watch(context.Context, string, bool, func([]event, error)) error {
	return errUnsupported
}
