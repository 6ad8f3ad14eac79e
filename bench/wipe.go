package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ember-kv/ember"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// The wipe cell (issue #13): a 3-member cluster whose follower is wiped and added back catches
// up by a snapshot install while writes go on at no less than half their rate.

// scaleReplacer is what the wipe cell needs of a system of more than one member.
type scaleReplacer interface {
	scaleStore
	// removeFollower stops a follower, removes it from the cluster through the leader and
	// deletes its data dir.
	removeFollower(ctx context.Context) error
	// addBack adds the removed member back as a new member, under its old name and address
	// with an empty data dir, and starts it. It returns once the member runs, not once it has
	// caught up.
	addBack(ctx context.Context) error
	// rev returns the revision of a serializable read on the leader, or on the member added
	// back: the revision that member has applied.
	rev(ctx context.Context, added bool) (int64, error)
	// snapshots returns how many snapshots the member added back has installed, once those
	// it has been sent are done: it may be caught up before the install is recorded.
	snapshots() (int, error)
}

const (
	scaleWipeWarm    = time.Second      // writes before the rate before the wipe is measured
	scaleWipePut     = 10 * time.Second // each put of the wipe cell; a longer one fails
	scaleWipeLimit   = 30 * time.Minute // a catch-up not done by then fails the cell
	scaleWipeLogging = 5 * time.Second  // progress of a catch-up is logged this often
)

// scaleWipe runs the wipe cell and fills in r's Wipe figures (see scaleResult): scaleSteady
// writers put val under random keys on the leader throughout; their rate is measured over d
// before a follower is removed, and then over the catch-up of the member added back.
func scaleWipe(ctx context.Context, st scaleReplacer, keys []string, val string, d time.Duration, r *scaleResult, logf func(string, ...any)) error {
	var ops, fails atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range scaleSteady {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				pctx, cancel := context.WithTimeout(ctx, scaleWipePut)
				_, err := st.put(pctx, keys[rand.IntN(len(keys))], val)
				cancel()
				if err != nil {
					if fails.Add(1) <= 5 {
						logf("wipe: put failed: %v", err)
					}
					time.Sleep(10 * time.Millisecond) // no busy loop while a cluster cannot write
					continue
				}
				ops.Add(1)
			}
		}()
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()

	time.Sleep(scaleWipeWarm)
	n0, t0 := ops.Load(), time.Now()
	time.Sleep(d)
	r.WipeRateBefore = float64(ops.Load()-n0) / time.Since(t0).Seconds()
	failsBefore := fails.Load()

	t0 = time.Now()
	if err := st.removeFollower(ctx); err != nil {
		return fmt.Errorf("remove a follower: %w", err)
	}
	logf("wipe: a follower stopped, removed and its data dir deleted in %v", time.Since(t0))
	target, err := st.rev(ctx, false)
	if err != nil {
		return fmt.Errorf("leader's revision: %w", err)
	}
	n0, t0 = ops.Load(), time.Now()
	if err := st.addBack(ctx); err != nil {
		return fmt.Errorf("add the member back: %w", err)
	}
	logf("wipe: member added back and started in %v; catching up to revision %d", time.Since(t0), target)
	var rev int64
	for lastLog := t0; ; {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		rev, err = st.rev(rctx, true)
		cancel()
		if err == nil && rev >= target {
			break
		}
		if since := time.Since(t0); since > scaleWipeLimit {
			return fmt.Errorf("not caught up %v after the add: at revision %d of %d (last read error: %v), %d puts since the add, %d failed",
				since, rev, target, err, ops.Load()-n0, fails.Load()-failsBefore)
		}
		if time.Since(lastLog) >= scaleWipeLogging {
			lastLog = time.Now()
			logf("wipe: %v after the add, the new member is at revision %d of %d (read error: %v); %d puts since the add",
				time.Since(t0).Round(time.Millisecond), rev, target, err, ops.Load()-n0)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.WipeCatchUp = time.Since(t0)
	r.WipeRateDuring = float64(ops.Load()-n0) / r.WipeCatchUp.Seconds()
	r.WipePutErrors = fails.Load() - failsBefore
	if r.WipeSnapshots, err = st.snapshots(); err != nil {
		return fmt.Errorf("count snapshot installs: %w", err)
	}
	logf("wipe: caught up to revision %d (now %d) in %v by %d snapshot installs; puts/s %.0f before, %.0f during (%.2f), %d failed",
		target, rev, r.WipeCatchUp, r.WipeSnapshots, r.WipeRateBefore, r.WipeRateDuring, r.WipeRateDuring/r.WipeRateBefore, r.WipePutErrors)
	return nil
}

func (e *emberScale) removeFollower(ctx context.Context) error {
	e.wiped = slices.IndexFunc(e.all, func(s *ember.Store) bool { return s != e.s })
	if e.wiped < 0 {
		return errors.New("ember: no follower")
	}
	id := memberName(e.wiped)
	if err := e.all[e.wiped].Close(); err != nil {
		return err
	}
	if err := e.s.RemoveMember(ctx, id); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(e.root, id))
}

// addBack opens the member with WithJoin through the others: it asks the leader to add it (as
// a learner, which it promotes itself once caught up), as a host adds a member.
func (e *emberScale) addBack(ctx context.Context) error {
	var seeds []string
	for i := range e.all {
		if i != e.wiped {
			seeds = append(seeds, e.peers[memberName(i)])
		}
	}
	opts := append(e.memberOptions(e.wiped), ember.WithJoin(seeds...), ember.WithSlog(slog.New(&e.installs)))
	s, err := ember.Open(filepath.Join(e.root, memberName(e.wiped)), opts...)
	if err != nil {
		return err
	}
	e.all[e.wiped] = s
	return nil
}

func (e *emberScale) rev(ctx context.Context, added bool) (int64, error) {
	s := e.s
	if added {
		s = e.all[e.wiped]
	}
	r, err := s.Get(ctx, scaleBgKey, ember.WithSerializable(), ember.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return r.Header.Revision, nil
}

func (e *emberScale) snapshots() (int, error) {
	return e.installs.done(scaleSnapshotWait)
}

// scaleSnapshotWait bounds the wait for a snapshot install to be recorded once the member is
// caught up: the new state is served before raft records the install.
const scaleSnapshotWait = 10 * time.Second

// snapshotCounter is the log of a member added back: it counts raft's records of a snapshot
// received and installed, and writes those about snapshots, warnings and errors to stderr.
type snapshotCounter struct {
	received, installed atomic.Int64
}

// hashicorp/raft's records of a snapshot received and installed, at Info.
const (
	raftReceivedSnapshot  = "copied to local snapshot"
	raftInstalledSnapshot = "Installed remote snapshot"
)

var snapshotLog = slog.NewTextHandler(os.Stderr, nil)

// done returns the snapshots installed once every one received is, or wait has passed.
func (c *snapshotCounter) done(wait time.Duration) (int, error) {
	for t0 := time.Now(); c.installed.Load() < c.received.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Since(t0) > wait {
			return 0, fmt.Errorf("ember: %d snapshots received, %d installed after %v", c.received.Load(), c.installed.Load(), wait)
		}
	}
	return int(c.installed.Load()), nil
}

func (c *snapshotCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (c *snapshotCounter) Handle(ctx context.Context, r slog.Record) error {
	switch r.Message {
	case raftReceivedSnapshot:
		c.received.Add(1)
	case raftInstalledSnapshot:
		c.installed.Add(1)
	}
	if r.Level >= slog.LevelWarn || strings.Contains(strings.ToLower(r.Message), "snapshot") {
		return snapshotLog.Handle(ctx, r)
	}
	return nil
}

func (c *snapshotCounter) WithAttrs([]slog.Attr) slog.Handler { return c } // ember passes none
func (c *snapshotCounter) WithGroup(string) slog.Handler      { return c }

func (e *etcdScale) removeFollower(ctx context.Context) error {
	e.wiped = slices.IndexFunc(e.cs, func(c *clientv3.Client) bool { return c != e.c })
	if e.wiped < 0 {
		return errors.New("etcd: no follower")
	}
	m := e.es[e.wiped]
	id := uint64(m.Server.MemberID())
	e.cs[e.wiped].Close()
	m.Close()
	e.es[e.wiped], e.cs[e.wiped] = nil, nil
	if _, err := e.c.MemberRemove(ctx, id); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(e.root, memberName(e.wiped)))
}

// addBack adds the member with MemberAdd, as a voter, then starts it with
// --initial-cluster-state existing, as etcd's documentation replaces a member. etcd refuses
// the add while a voter has been connected to the leader for less than 5 s (as after a
// restart): the add is retried then, as its error asks.
func (e *etcdScale) addBack(ctx context.Context) error {
	r, err := e.c.MemberAdd(ctx, []string{e.peers[e.wiped].String()})
	for errors.Is(err, rpctypes.ErrUnhealthy) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		r, err = e.c.MemberAdd(ctx, []string{e.peers[e.wiped].String()})
	}
	if err != nil {
		return err
	}
	e.wipedID = r.Member.ID
	cfg := e.memberConfig(e.wiped)
	cfg.ClusterState = embed.ClusterStateFlagExisting
	m, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	e.es[e.wiped], e.cs[e.wiped] = m, v3client.New(m.Server)
	return nil
}

func (e *etcdScale) rev(ctx context.Context, added bool) (int64, error) {
	c := e.c
	if added {
		c = e.cs[e.wiped]
	}
	r, err := c.Get(ctx, scaleBgKey, clientv3.WithSerializable(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return r.Header.Revision, nil
}

// snapshots reads the leader's count of snapshots sent to the new member, once none is in
// flight; the members of this process register their metrics in the default registry, labeled
// by peer.
func (e *etcdScale) snapshots() (int, error) {
	to := strconv.FormatUint(e.wipedID, 16) // types.ID's String
	for t0 := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		mfs, err := prometheus.DefaultGatherer.Gather()
		if err != nil {
			return 0, err
		}
		var sent, inflight float64
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == "To" && l.GetValue() == to }) {
					continue
				}
				switch mf.GetName() {
				case "etcd_network_snapshot_send_success":
					sent += m.GetCounter().GetValue()
				case "etcd_network_snapshot_send_inflights_total":
					inflight += m.GetGauge().GetValue()
				}
			}
		}
		if inflight == 0 {
			return int(sent), nil
		}
		if time.Since(t0) > scaleSnapshotWait {
			return 0, fmt.Errorf("etcd: %v snapshots still in flight after %v", inflight, scaleSnapshotWait)
		}
	}
}
