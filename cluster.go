package ember

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/wire"
)

// Member is one member of the cluster.
type Member struct {
	ID        string
	Addr      string // peer address
	IsLearner bool   // a non-voter: it replicates the log but does not vote
	IsLeader  bool
}

// Members lists the cluster's members, voters and learners, as of a linearizable point: a member
// added or removed before the call is reflected.
func (s *Store) Members(ctx context.Context) ([]Member, error) {
	if _, err := s.linearizableView(ctx); err != nil {
		return nil, err
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("ember: read configuration: %w", err)
	}
	_, leader := s.raft.LeaderWithID()
	var out []Member
	for _, srv := range f.Configuration().Servers {
		out = append(out, Member{
			ID: string(srv.ID), Addr: string(srv.Address),
			IsLearner: srv.Suffrage != raft.Voter, IsLeader: srv.ID == leader,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// AddMember adds a member that will start with WithJoin (or is starting): it enters as a
// non-voter and becomes a voter once it has caught up with the leader, so adding a member never
// costs the cluster its quorum while the new member copies the log.
func (s *Store) AddMember(ctx context.Context, id, addr string) error {
	return s.addMember(ctx, id, addr, false)
}

// AddLearner adds a non-voting member; PromoteMember makes it a voter once it has caught up.
func (s *Store) AddLearner(ctx context.Context, id, addr string) error {
	return s.addMember(ctx, id, addr, true)
}

func (s *Store) addMember(ctx context.Context, id, addr string, learner bool) error {
	if id == "" || addr == "" {
		return fmt.Errorf("ember: AddMember: empty ID or address")
	}
	if !s.IsLeader() {
		e := wire.Encoder{}
		e.String(id)
		e.String(addr)
		e.Bool(learner)
		// A join may reach a member that does not lead; it is forwarded, not refused.
		_, err := s.onLeader(ctx, mJoin, e.B)
		return err
	}
	conf, err := s.configuration()
	if err != nil {
		return err
	}
	for _, srv := range conf.Servers {
		if string(srv.ID) == id {
			if string(srv.Address) == addr {
				return nil // the same member asking again, e.g. after a restart
			}
			return fmt.Errorf("%w: %s", ErrMemberExists, id)
		}
		if string(srv.Address) == addr {
			return fmt.Errorf("%w: address %s is used by %s", ErrMemberExists, addr, srv.ID)
		}
	}
	return s.configChange(ctx, s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0))
}

// PromoteMember makes a learner a voter. It fails with ErrLearnerNotReady until the learner has
// applied at least 90% of the leader's committed log, as etcd.
func (s *Store) PromoteMember(ctx context.Context, id string) error {
	_, err := s.onLeader(ctx, mPromote, encodeString(id))
	return err
}

// RemoveMember removes a member. Removing the leader makes it step down.
func (s *Store) RemoveMember(ctx context.Context, id string) error {
	_, err := s.onLeader(ctx, mRemove, encodeString(id))
	return err
}

// TransferLeadership asks the leader to hand leadership to toID ("" = the most caught-up voter)
// and waits for the transfer.
func (s *Store) TransferLeadership(ctx context.Context, toID string) error {
	_, err := s.onLeader(ctx, mTransfer, encodeString(toID))
	return err
}

func encodeString(v string) []byte {
	e := wire.Encoder{}
	e.String(v)
	return e.B
}

func (s *Store) configuration() (raft.Configuration, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, fmt.Errorf("ember: read configuration: %w", err)
	}
	return f.Configuration(), nil
}

func (s *Store) configChange(ctx context.Context, f raft.Future) error {
	if err := s.waitFuture(ctx, f); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return errNotLeader
		case errors.Is(err, raft.ErrLeadershipLost):
			return errLeadershipLost
		case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, ErrStopped), ctx.Err() != nil:
			// In flight when the member stopped or the caller gave up: it may yet commit.
			return outcomeUnknown(err)
		}
		return fmt.Errorf("ember: configuration change: %w", err)
	}
	return nil
}

func (s *Store) findServer(id string) (raft.Server, error) {
	conf, err := s.configuration()
	if err != nil {
		return raft.Server{}, err
	}
	for _, srv := range conf.Servers {
		if string(srv.ID) == id {
			return srv, nil
		}
	}
	return raft.Server{}, fmt.Errorf("%w: %s", ErrMemberNotFound, id)
}

func (s *Store) promoteLocal(ctx context.Context, id string) error {
	srv, err := s.findServer(id)
	if err != nil {
		return err
	}
	if srv.Suffrage == raft.Voter {
		return nil
	}
	resp, err := s.call(ctx, string(srv.Address), mStatus, nil)
	if err != nil {
		return fmt.Errorf("%w: %s does not answer: %v", ErrLearnerNotReady, id, err)
	}
	d := wire.NewDecoder(resp)
	applied := d.Uvarint()
	if err := d.Finish(); err != nil {
		return err
	}
	if commit := s.raft.CommitIndex(); applied*10 < commit*9 {
		return fmt.Errorf("%w: %s applied %d of %d", ErrLearnerNotReady, id, applied, commit)
	}
	return s.configChange(ctx, s.raft.AddVoter(srv.ID, srv.Address, 0, 0))
}

func (s *Store) removeLocal(ctx context.Context, id string) error {
	if _, err := s.findServer(id); err != nil {
		return err
	}
	return s.configChange(ctx, s.raft.RemoveServer(raft.ServerID(id), 0, 0))
}

func (s *Store) transferLocal(ctx context.Context, id string) error {
	var f raft.Future
	if id == "" {
		f = s.raft.LeadershipTransfer()
	} else {
		srv, err := s.findServer(id)
		if err != nil {
			return err
		}
		if srv.Suffrage != raft.Voter {
			return fmt.Errorf("ember: cannot transfer leadership to learner %s", id)
		}
		if id == s.id {
			return nil
		}
		f = s.raft.LeadershipTransferToServer(srv.ID, srv.Address)
	}
	if err := s.waitFuture(ctx, f); err != nil {
		return fmt.Errorf("ember: leadership transfer: %w", err)
	}
	return nil
}

// joinLoop adds this member to the cluster through the seeds given to WithJoin (if its data dir
// is fresh), then, unless it is a learner, asks for promotion once it has caught up.
func (s *Store) joinLoop(fresh bool) {
	ctx := s.ctx
	if fresh {
		e := wire.Encoder{}
		e.String(s.id)
		e.String(s.cfg.advertiseAddr)
		e.Bool(s.cfg.learner)
		for attempt := 0; ; attempt++ {
			if s.tryJoin(ctx, e.B) {
				break
			}
			if !sleepCtx(ctx, 200*time.Millisecond) {
				return
			}
		}
	}
	if s.cfg.learner {
		return
	}
	for {
		if srv, err := s.findServer(s.id); err == nil && srv.Suffrage == raft.Voter {
			return
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.WaitReady(wctx)
		if err == nil {
			err = s.PromoteMember(wctx, s.id)
		}
		cancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("promotion not done yet", "error", err)
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return
		}
	}
}

func (s *Store) tryJoin(ctx context.Context, req []byte) bool {
	for _, seed := range s.cfg.join {
		if seed == s.cfg.advertiseAddr {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.call(cctx, seed, mJoin, req)
		cancel()
		if err == nil {
			return true
		}
		s.log.Warn("join through seed failed", "seed", seed, "error", err)
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Status describes this member.
type Status struct {
	ID, Leader      string
	RaftTerm        uint64
	RaftIndex       uint64 // last index in this member's raft log
	AppliedIndex    uint64 // last index applied to this member's state
	Revision        int64
	CompactRevision int64
	DBSize          int64 // bytes on disk of the raft log (logical size of the state in memory mode)
	DBSizeInUse     int64 // logical size of the state: every version of every key kept
	DBSizeQuota     int64 // the space quota DBSizeInUse is held to (WithQuotaBackendBytes); 0 if disabled
	Keys            int64 // live keys
	Leases          int64
	Watchers        int64
}

// Status reports this member's view of the cluster. It is served locally.
func (s *Store) Status(ctx context.Context) (*Status, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.stopped() {
		return nil, ErrStopped
	}
	v := s.fsm.view()
	_, leader := s.raft.LeaderWithID()
	st := &Status{
		ID: s.id, Leader: string(leader),
		RaftTerm: s.raft.CurrentTerm(), RaftIndex: s.raft.LastIndex(), AppliedIndex: v.applied,
		Revision: v.st.rev, CompactRevision: v.st.compactRev,
		DBSizeInUse: v.st.size, DBSizeQuota: s.cfg.quotaBytes, Keys: int64(v.st.latest.Len()), Leases: int64(v.st.leases.Len()),
		Watchers: int64(s.watch.count()),
	}
	st.DBSize = st.DBSizeInUse
	if n := s.stores.diskSize(); n >= 0 {
		st.DBSize = n
	}
	return st, nil
}
