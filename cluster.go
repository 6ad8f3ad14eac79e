package ember

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
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
	resp, err := s.onLeader(ctx, mMembers, nil)
	if err != nil {
		return nil, err
	}
	leader, servers, err := decodeMembers(resp)
	if err != nil {
		return nil, err
	}
	out := make([]Member, len(servers))
	for i, srv := range servers {
		out[i] = Member{ID: string(srv.ID), Addr: string(srv.Address), IsLearner: srv.Suffrage != raft.Voter,
			IsLeader: string(srv.ID) == leader}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// AddMember adds a member that will start with WithJoin (or is starting): it enters as a
// non-voter and becomes a voter once it has caught up with the leader, so adding a member never
// costs the cluster its quorum while the new member copies the log. As etcd's strict
// reconfiguration check, it fails with ErrUnhealthy when the voters that are up would not be a
// quorum of the voters once the new member is one.
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
	e := wire.Encoder{}
	e.String(id)
	e.String(addr)
	e.Bool(learner)
	return s.changeMembership(ctx, mJoin, e.B)
}

// PromoteMember makes a learner a voter. It fails with ErrLearnerNotReady until the learner has
// applied at least 90% of the leader's committed log, as etcd, and with ErrUnhealthy when the
// voters that are up, the learner included, would not be a quorum of the new voters.
func (s *Store) PromoteMember(ctx context.Context, id string) error {
	return s.changeMembership(ctx, mPromote, encodeString(id))
}

// RemoveMember removes a member. Removing the leader makes it step down. As etcd's strict
// reconfiguration check, removing a voter that is up fails with ErrUnhealthy when the other
// voters that are up would not be a quorum of the voters left; a voter that is down can always
// be removed (that is how a dead member is replaced).
func (s *Store) RemoveMember(ctx context.Context, id string) error {
	return s.changeMembership(ctx, mRemove, encodeString(id))
}

// UpdateMember changes a member's peer address, as etcd's MemberUpdate changes its peer URLs; a
// learner stays a learner and a voter a voter. It fails with ErrMemberNotFound for an unknown
// ID and with ErrMemberExists when another member has the address; giving the address the
// member already has changes nothing. The member must listen on the new address (WithBindAddr,
// or WithAdvertiseAddr) for the others to reach it there.
func (s *Store) UpdateMember(ctx context.Context, id, addr string) error {
	if id == "" || addr == "" {
		return fmt.Errorf("ember: UpdateMember: empty ID or address")
	}
	e := wire.Encoder{}
	e.String(id)
	e.String(addr)
	return s.changeMembership(ctx, mUpdate, e.B)
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

// memberChange is a decoded mJoin, mPromote, mRemove or mUpdate request.
type memberChange struct {
	id, addr string
	learner  bool
}

func decodeMemberChange(method uint8, req []byte) (memberChange, error) {
	d := wire.NewDecoder(req)
	var c memberChange
	c.id = d.String()
	switch method {
	case mJoin:
		c.addr, c.learner = d.String(), d.Bool()
	case mUpdate:
		c.addr = d.String()
	}
	if err := d.Finish(); err != nil {
		return c, err
	}
	if (method == mJoin || method == mUpdate) && (c.id == "" || c.addr == "") {
		return c, fmt.Errorf("%w: empty member ID or address", wire.ErrMalformed)
	}
	return c, nil
}

// changeMembership runs a membership change on the leader, here or over the peer RPC, retrying
// through leader changes and leadership transfers with the same policy as writes: once ctx ends
// it fails with ErrNoLeader if no attempt can have taken effect, else with ErrTimeout. Every
// change is idempotent, so a retry of one that may have taken effect finds it done.
func (s *Store) changeMembership(ctx context.Context, method uint8, req []byte) error {
	change, err := decodeMemberChange(method, req)
	if err != nil {
		return err
	}
	maybeApplied := false
	for attempt := 0; ; attempt++ {
		if s.stopped() {
			return unknownIfMaybeApplied(maybeApplied, s.stoppedErr())
		}
		_, err := s.attemptOnLeader(ctx, method, req, func() ([]byte, error) {
			return nil, s.changeLocal(ctx, method, change)
		})
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrMemberNotFound) && method == mRemove && maybeApplied {
			return nil // an earlier attempt removed it
		}
		// Unlike a write, a change whose wait was abandoned or ended unknown (ErrTimeout, here
		// or on the leader) is retried: it is idempotent. A context error goes to the ctx check
		// below, which retries it while ctx lasts.
		switch classifyAttempt(err, memberChangeMaybe, nil) {
		case attemptMaybeApplied:
			maybeApplied = true
		case attemptFailed:
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				return err // definite: ErrMemberExists, ErrUnhealthy, ...
			}
		}
		if ctx.Err() != nil {
			if maybeApplied {
				return outcomeUnknown(ctx.Err())
			}
			return fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
		}
		if err := s.waitLeaderChange(ctx, attempt); err != nil {
			return unknownIfMaybeApplied(maybeApplied, noLeader(err))
		}
	}
}

// changeLocal makes a membership change on this member, which leads.
func (s *Store) changeLocal(ctx context.Context, method uint8, c memberChange) error {
	switch method {
	case mJoin:
		return s.addLocal(ctx, c.id, c.addr, c.learner)
	case mPromote:
		return s.promoteLocal(ctx, c.id)
	case mUpdate:
		return s.updateLocal(ctx, c.id, c.addr)
	}
	return s.removeLocal(ctx, c.id)
}

// leaderConfiguration returns the configuration as this leader sees it once every change
// acknowledged before the call is in it, and no change it shows may still be lost. A follower's
// own copy cannot serve Members: hashicorp/raft updates it after the state machine has restored
// a snapshot, so a read waiting for that state sees the configuration from before it.
func (s *Store) leaderConfiguration(ctx context.Context) (raft.Configuration, error) {
	if err := s.reconfig.lock(ctx); err != nil {
		return raft.Configuration{}, err
	}
	defer s.reconfig.unlock()
	return s.confirmedConfiguration(ctx)
}

// confirmedConfiguration is leaderConfiguration for a caller holding s.reconfig. Once this term
// is ready, every change of an earlier term in the log is committed; then the configuration
// read is confirmed current by a round of voter acks (a deposed leader that has not noticed
// yet holds an old one), and every entry appended before the read is waited for, so that a
// change whose wait was abandoned is committed before it is shown.
func (s *Store) confirmedConfiguration(ctx context.Context) (raft.Configuration, error) {
	term, err := s.readyLeaderTerm(ctx)
	if err != nil {
		return raft.Configuration{}, err
	}
	conf, err := s.configuration()
	if err != nil {
		return raft.Configuration{}, err
	}
	last := s.raft.LastIndex()
	if err := s.confirmLeadership(ctx, term); err != nil {
		return raft.Configuration{}, fmt.Errorf("%w: %w", errNotLeader, err)
	}
	if err := s.fsm.waitApplied(ctx, last); err != nil {
		return raft.Configuration{}, err
	}
	if s.raft.CurrentTerm() != term {
		return raft.Configuration{}, errNotLeader
	}
	return conf, nil
}

// encodeConfiguration is mMembers' answer: the leader's ID, then each server's ID, address and
// whether it votes.
func (s *Store) encodeConfiguration(conf raft.Configuration) []byte {
	e := wire.Encoder{}
	e.String(s.id)
	e.Uvarint(uint64(len(conf.Servers)))
	for _, srv := range conf.Servers {
		e.String(string(srv.ID))
		e.String(string(srv.Address))
		e.Bool(srv.Suffrage == raft.Voter)
	}
	return e.B
}

func decodeMembers(b []byte) (leader string, servers []raft.Server, err error) {
	d := wire.NewDecoder(b)
	leader = d.String()
	n := d.Len(len(b))
	for i := 0; i < n && d.Err() == nil; i++ {
		srv := raft.Server{ID: raft.ServerID(d.String()), Address: raft.ServerAddress(d.String()), Suffrage: raft.Nonvoter}
		if d.Bool() {
			srv.Suffrage = raft.Voter
		}
		servers = append(servers, srv)
	}
	if err := d.Finish(); err != nil {
		return "", nil, err
	}
	return leader, servers, nil
}

// configuration returns this member's latest configuration.
func (s *Store) configuration() (raft.Configuration, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, fmt.Errorf("ember: read configuration: %w", err)
	}
	return f.Configuration(), nil
}

// otherVoters counts the voters of conf besides self, and says whether self is one.
func otherVoters(conf raft.Configuration, self string) (others int, selfVotes bool) {
	for _, srv := range conf.Servers {
		switch {
		case srv.Suffrage != raft.Voter:
		case string(srv.ID) == self:
			selfVotes = true
		default:
			others++
		}
	}
	return others, selfVotes
}

// reconfigLock serializes membership changes on the leader, so that a change and the check that
// allowed it (no duplicate ID or address, a quorum up) happen as one. hashicorp/raft v1.7.3
// cannot do it with prevIndex: GetConfiguration no longer reports the configuration's index
// (Index() is always 0). A change made by an earlier leader is in the log, hence in the
// configuration this one checks.
type reconfigLock struct {
	once sync.Once
	ch   chan struct{}
}

func (l *reconfigLock) lock(ctx context.Context) error {
	l.once.Do(func() { l.ch = make(chan struct{}, 1) })
	select {
	case l.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *reconfigLock) unlock() { <-l.ch }

// reconfigure makes one membership change on the leader. plan checks it against the latest
// configuration and returns the raft call that makes it, or nil if there is nothing to do.
func (s *Store) reconfigure(ctx context.Context, plan func(raft.Configuration) (func() raft.Future, error)) error {
	if err := s.reconfig.lock(ctx); err != nil {
		return err
	}
	defer s.reconfig.unlock()
	if !s.IsLeader() {
		return errNotLeader
	}
	// Checked against a confirmed configuration: a deposed leader's own would refuse a change,
	// or accept it as already made, on what the cluster has since changed.
	conf, err := s.confirmedConfiguration(ctx)
	if err != nil {
		return err
	}
	change, err := plan(conf)
	if ctx.Err() != nil {
		return ctx.Err() // the checks could not finish; say so rather than what they found
	}
	if err != nil || change == nil {
		return err
	}
	switch err := s.waitFuture(ctx, change()); {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress),
		errors.Is(err, raft.ErrEnqueueTimeout):
		return errNotLeader // never appended
	case errors.Is(err, raft.ErrLeadershipLost):
		return errLeadershipLost
	case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, ErrStopped):
		// It may have been appended, and may yet commit.
		return outcomeUnknown(s.stoppedErr())
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", errWaitAbandoned, ctx.Err())
	default:
		return fmt.Errorf("ember: configuration change: %w", err)
	}
}

func findServer(conf raft.Configuration, id string) (raft.Server, error) {
	for _, srv := range conf.Servers {
		if string(srv.ID) == id {
			return srv, nil
		}
	}
	return raft.Server{}, fmt.Errorf("%w: %s", ErrMemberNotFound, id)
}

func (s *Store) addLocal(ctx context.Context, id, addr string, learner bool) error {
	return s.reconfigure(ctx, func(conf raft.Configuration) (func() raft.Future, error) {
		for _, srv := range conf.Servers {
			if string(srv.ID) == id {
				if string(srv.Address) == addr {
					return nil, nil // the same member asking again, e.g. after a restart
				}
				return nil, fmt.Errorf("%w: %s", ErrMemberExists, id)
			}
			if string(srv.Address) == addr {
				return nil, fmt.Errorf("%w: address %s is used by %s", ErrMemberExists, addr, srv.ID)
			}
		}
		if !learner {
			// It will be promoted: count it as a voter that is not up yet.
			up, voters := s.votersUp(ctx, conf)
			if err := quorumAfter(len(up), voters+1, "adding voter "+id); err != nil {
				return nil, err
			}
		}
		return func() raft.Future { return s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0) }, nil
	})
}

func (s *Store) promoteLocal(ctx context.Context, id string) error {
	return s.reconfigure(ctx, func(conf raft.Configuration) (func() raft.Future, error) {
		srv, err := findServer(conf, id)
		if err != nil || srv.Suffrage == raft.Voter {
			return nil, err
		}
		applied, err := s.memberApplied(ctx, string(srv.Address))
		if err != nil {
			return nil, fmt.Errorf("%w: %s does not answer: %v", ErrLearnerNotReady, id, err)
		}
		if commit := s.raft.CommitIndex(); applied*10 < commit*9 {
			return nil, fmt.Errorf("%w: %s applied %d of %d", ErrLearnerNotReady, id, applied, commit)
		}
		up, voters := s.votersUp(ctx, conf)
		if err := quorumAfter(len(up)+1, voters+1, "promoting "+id); err != nil { // +1: the learner just answered
			return nil, err
		}
		return func() raft.Future { return s.raft.AddVoter(srv.ID, srv.Address, 0, 0) }, nil
	})
}

func (s *Store) updateLocal(ctx context.Context, id, addr string) error {
	return s.reconfigure(ctx, func(conf raft.Configuration) (func() raft.Future, error) {
		srv, err := findServer(conf, id)
		if err != nil {
			return nil, err
		}
		for _, other := range conf.Servers {
			if other.ID != srv.ID && string(other.Address) == addr {
				return nil, fmt.Errorf("%w: address %s is used by %s", ErrMemberExists, addr, other.ID)
			}
		}
		if string(srv.Address) == addr {
			return nil, nil // unchanged, or an earlier attempt changed it
		}
		// hashicorp/raft's AddNonvoter for a server it has changes only its address: a voter
		// stays a voter (AddVoter would promote a learner).
		return func() raft.Future { return s.raft.AddNonvoter(srv.ID, raft.ServerAddress(addr), 0, 0) }, nil
	})
}

func (s *Store) removeLocal(ctx context.Context, id string) error {
	return s.reconfigure(ctx, func(conf raft.Configuration) (func() raft.Future, error) {
		srv, err := findServer(conf, id)
		if err != nil {
			return nil, err
		}
		// As etcd: removing a learner cannot cost the quorum, nor removing a voter that is down,
		// since it is not part of the quorum that is up. The leader is always up.
		if srv.Suffrage == raft.Voter {
			up, voters := s.votersUp(ctx, conf)
			if up[srv.ID] {
				if err := quorumAfter(len(up)-1, voters-1, "removing "+id); err != nil {
					return nil, err
				}
			}
		}
		return func() raft.Future { return s.raft.RemoveServer(srv.ID, 0, 0) }, nil
	})
}

// quorumAfter checks etcd's strict reconfiguration rule: of the voters a change leaves, those
// up must be a quorum.
func quorumAfter(up, voters int, what string) error {
	if up < voters/2+1 {
		return fmt.Errorf("%w: %s would leave %d of %d voters up, fewer than a quorum", ErrUnhealthy, what, up, voters)
	}
	return nil
}

// votersUp returns the voters of conf that are up, and how many voters conf has. The leader is
// up; another voter is up if it answers a status request now, within probeTimeout.
// hashicorp/raft keeps each follower's last contact to itself, so ember asks over its
// own peer RPC, served by the same process and port as raft: a member that answers has started
// and is reachable, as etcd's "active" peers are.
func (s *Store) votersUp(ctx context.Context, conf raft.Configuration) (map[raft.ServerID]bool, int) {
	pctx, cancel := context.WithTimeout(ctx, s.probeTimeout())
	defer cancel()
	var mu sync.Mutex
	up := map[raft.ServerID]bool{raft.ServerID(s.id): true}
	voters := 0
	var wg sync.WaitGroup
	for _, srv := range conf.Servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		voters++
		if string(srv.ID) == s.id {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.call(pctx, string(srv.Address), mStatus, nil); err == nil {
				mu.Lock()
				up[srv.ID] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return up, voters
}

// memberApplied asks the member at addr for its applied index, within probeTimeout.
func (s *Store) memberApplied(ctx context.Context, addr string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.probeTimeout())
	defer cancel()
	resp, err := s.call(ctx, addr, mStatus, nil)
	if err != nil {
		return 0, err
	}
	d := wire.NewDecoder(resp)
	applied := d.Uvarint()
	return applied, d.Finish()
}

// probeTimeout bounds the status requests of membership checks: a member that does not answer
// within an election timeout (or a second, on a loaded host) counts as down.
func (s *Store) probeTimeout() time.Duration { return max(s.cfg.electionTimeout, time.Second) }

func (s *Store) transferLocal(ctx context.Context, id string) error {
	var f raft.Future
	if id == "" {
		f = s.raft.LeadershipTransfer()
	} else {
		conf, err := s.configuration()
		if err != nil {
			return err
		}
		srv, err := findServer(conf, id)
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
	// Done only once the leader's configuration lists this member as a voter (PromoteMember
	// succeeds at once then). Its own configuration cannot tell: while it replays the log it is
	// an old one, which lists this ID as a voter if a member of that ID was removed before this
	// one joined in its place.
	for {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.WaitReady(wctx)
		if err == nil {
			err = s.PromoteMember(wctx, s.id)
		}
		cancel()
		if err == nil || ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrMemberNotFound) {
			s.log.Warn("this member is not in the cluster's configuration; not asking for promotion")
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
	DBSize          int64 // bytes on disk of the raft log and the backend (logical size of the state in memory mode)
	DBSizeInUse     int64 // logical size of the state: every version of every key kept
	DBSizeQuota     int64 // the space quota DBSizeInUse is held to (WithQuotaBackendBytes); 0 if disabled
	Keys            int64 // live keys
	Leases          int64
	Watchers        int64
	// DedupBytes is the logical size of the table of recent request IDs and their results that
	// lets a retried write be answered instead of applied twice: about what it adds to each
	// snapshot (in memory it takes somewhat more). It is outside DBSizeInUse and the quota:
	// WithDedupResultBytes bounds it instead.
	DedupBytes int64
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
		Revision: v.st.Rev(), CompactRevision: v.st.CompactRev(),
		DBSizeInUse: v.st.Size(), DBSizeQuota: s.cfg.quotaBytes, Keys: int64(v.st.Keys()), Leases: int64(v.st.LeaseCount()),
		Watchers: int64(s.watch.count()), DedupBytes: s.fsm.dedupSize.Load(),
	}
	st.DBSize = st.DBSizeInUse
	if n := s.stores.DiskSize(); n >= 0 {
		st.DBSize = n + s.fsm.backendSize()
	}
	return st, nil
}
