package ember

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/peer"
	"github.com/ember-kv/ember/internal/planted"
	"github.com/ember-kv/ember/internal/readindex"
	"github.com/ember-kv/ember/internal/wire"
)

// Peer RPC methods. Each request and answer is encoded with wire.Encoder.
const (
	mForward    uint8 = 1 // encoded wire.Command → encoded wire.Result; leader only
	mReadIndex  uint8 = 2 // → uvarint commit index confirmed by a quorum; leader only
	mJoin       uint8 = 3 // id, addr, learner → nothing; any member (forwards to the leader)
	mPromote    uint8 = 4 // id → nothing; leader only
	mRemove     uint8 = 5 // id → nothing; leader only
	mStatus     uint8 = 6 // → uvarint applied index of the answering member
	mKeepAlive  uint8 = 7 // varint lease ID → varint remaining TTL; leader only
	mTimeToLive uint8 = 8 // varint lease ID, bool keys → lease state; leader only
	mTransfer   uint8 = 9 // target member ID → nothing; leader only

	// leader ID, term, round → round; any voter, whose ack confirms the leader for a read.
	mConfirm uint8 = 10
)

// joinForwardTimeout bounds a join that a member which does not lead forwards to the leader.
const joinForwardTimeout = 10 * time.Second

// handleRPC serves a peer's request. Every input is validated: a malformed request gets
// CodeMalformed and the member keeps serving.
func (s *Store) handleRPC(ctx context.Context, method uint8, req []byte) ([]byte, error) {
	resp, err := s.dispatchRPC(ctx, method, req)
	return resp, peerError(err)
}

func (s *Store) dispatchRPC(ctx context.Context, method uint8, req []byte) ([]byte, error) {
	if s.stopped() {
		return nil, ErrStopped
	}
	d := wire.NewDecoder(req)
	switch method {
	case mForward:
		cmd, err := s.checkForwarded(req)
		if err != nil {
			return nil, err
		}
		res, err := s.submit(ctx, cmd, req, false)
		if err != nil {
			return nil, err
		}
		return res.Marshal(nil), nil
	case mReadIndex:
		if err := d.Finish(); err != nil {
			return nil, err
		}
		if !s.IsLeader() {
			return nil, errNotLeader
		}
		idx, err := s.readIndex.Get(ctx)
		if err != nil {
			return nil, err
		}
		e := wire.Encoder{}
		e.Uvarint(idx)
		return e.B, nil
	case mJoin, mPromote, mRemove:
		c, err := decodeMemberChange(method, req)
		if err != nil {
			return nil, err
		}
		if s.IsLeader() {
			return nil, s.changeLocal(ctx, method, c)
		}
		if method == mJoin {
			// A join may reach a member that does not lead; it is forwarded, not refused. The
			// joiner cannot cancel it (ctx ends only with the connection), so it is bounded.
			ctx, cancel := context.WithTimeout(ctx, joinForwardTimeout)
			defer cancel()
			return nil, s.changeMembership(ctx, method, req)
		}
		return nil, errNotLeader
	case mTransfer:
		id := d.String()
		if err := d.Finish(); err != nil {
			return nil, err
		}
		if !s.IsLeader() {
			return nil, errNotLeader
		}
		return nil, s.transferLocal(ctx, id)
	case mConfirm:
		leader, term, round := d.String(), d.Uvarint(), d.Uvarint()
		if err := d.Finish(); err != nil {
			return nil, err
		}
		if err := s.follows(leader, term); err != nil {
			return nil, err
		}
		e := wire.Encoder{}
		e.Uvarint(round)
		return e.B, nil
	case mStatus:
		if err := d.Finish(); err != nil {
			return nil, err
		}
		e := wire.Encoder{}
		e.Uvarint(s.fsm.applied.Load())
		return e.B, nil
	case mKeepAlive, mTimeToLive:
		return s.lessor.handleRPC(ctx, method, d)
	}
	return nil, fmt.Errorf("%w: unknown method %d", wire.ErrMalformed, method)
}

// checkForwarded decodes and validates a command a follower forwarded, with this member's
// limits.
func (s *Store) checkForwarded(req []byte) (*wire.Command, error) {
	if len(req) > s.cfg.maxRequestBytes {
		return nil, ErrRequestTooLarge
	}
	cmd, err := wire.UnmarshalCommand(req)
	if err != nil {
		return nil, err
	}
	switch cmd.Kind {
	case wire.KindTxn:
		err = codeError(validateTxn(cmd.Txn, s.cfg.maxTxnOps))
	case wire.KindLeaderStart:
		err = fmt.Errorf("%w: leader start from a peer", wire.ErrMalformed)
	}
	if err != nil {
		return nil, err
	}
	return cmd, nil
}

// forward sends an encoded command to the leader.
func (s *Store) forward(ctx context.Context, data []byte) (*wire.Result, error) {
	addr, err := s.leaderAddr()
	if err != nil {
		return nil, err
	}
	s.metrics.forwardedToLeader(mForward)
	resp, err := s.call(ctx, addr, mForward, data)
	if err != nil {
		return nil, err
	}
	return wire.UnmarshalResult(resp)
}

// fetchReadIndex obtains a read index: from this member if it leads, else from the leader.
// readindex.Batcher calls it once for all reads waiting at the same time.
func (s *Store) fetchReadIndex(ctx context.Context) (uint64, error) {
	// A partitioned leader answers nothing; give up after a few election timeouts and retry.
	ctx, cancel := context.WithTimeout(ctx, 3*s.cfg.electionTimeout+time.Second)
	defer cancel()
	if s.raft.State() == raft.Leader {
		return s.leaderReadIndex(ctx)
	}
	addr, err := s.leaderAddr()
	if err != nil {
		return 0, err
	}
	s.metrics.forwardedToLeader(mReadIndex)
	resp, err := s.call(ctx, addr, mReadIndex, nil)
	if err != nil {
		return 0, err
	}
	d := wire.NewDecoder(resp)
	idx := d.Uvarint()
	return idx, d.Finish()
}

// leaderReadIndex implements ReadIndex: the commit index, captured after this term's first
// entry is applied (before that it may be stale), then confirmed by a round of acks from a
// majority of the voters that starts after the capture (confirmLeadership).
//
// hashicorp/raft's VerifyLeader is not used: it counts heartbeat acks from learners too, while
// its quorum counts voters only, so a leader cut off from every voter but holding a learner
// passes it; and an ack to a heartbeat sent before the read began counts as well.
func (s *Store) leaderReadIndex(ctx context.Context) (uint64, error) {
	var term uint64
	for {
		ch := s.readySig.wait()
		term = s.raft.CurrentTerm()
		if s.readyTerm.Load() == term {
			break
		}
		if s.raft.State() != raft.Leader {
			return 0, errNotLeader
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, errNotReady
		}
	}
	idx := s.raft.CommitIndex()
	if err := s.confirmLeadership(ctx, term); err != nil {
		// Coded as not-leader, deadline included, so that a follower waiting on this
		// answer retries (possibly with a new leader) instead of failing its read.
		return 0, fmt.Errorf("%w: %w", errNotLeader, err)
	}
	if s.raft.CurrentTerm() != term {
		return 0, errNotLeader
	}
	return idx, nil
}

// confirmLeadership runs one confirmation round of this leader's term: every voter of the
// latest configuration is asked whether it still follows this member in term, and the round
// succeeds once a majority of the voters (this member included) said yes. Only requests sent now,
// after the caller captured its commit index, are asked, so only acks given after that count.
//
// Why that makes the captured index safe to read at: suppose a write W was acknowledged before
// the read began but is not covered by the index. Entries of terms up to this one are covered
// (the index was captured after the read began and after this term's first entry was applied,
// and only this leader commits in its term), so W was committed by a leader of a later term T', elected before the
// read began by a majority of the voters, each of which had moved to term T' or beyond by then.
// Any two voter majorities share a voter (raft changes one voter at a time; the majority here is
// of the latest configuration, as hashicorp/raft counts its own quorums), and that voter was in
// this term when it acked, after the read began, which terms never decreasing rules out. Learners
// take no part in elections, so their acks cannot stand for a voter's and are not asked for.
func (s *Store) confirmLeadership(ctx context.Context, term uint64) error {
	conf, err := s.configuration()
	if err != nil {
		return err
	}
	members := make([]readindex.Member, 0, len(conf.Servers))
	for _, srv := range conf.Servers {
		members = append(members, readindex.Member{ID: string(srv.ID), Addr: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
	}
	round := s.confirmRound.Add(1)
	e := wire.Encoder{}
	e.String(s.id)
	e.Uvarint(term)
	e.Uvarint(round)
	req := e.B
	return readindex.Confirm(ctx, s.id, members, round, func(ctx context.Context, m readindex.Member, round uint64) (uint64, error) {
		resp, err := s.call(ctx, m.Addr, mConfirm, req)
		if err != nil {
			return 0, err
		}
		d := wire.NewDecoder(resp)
		acked := d.Uvarint()
		return acked, d.Finish()
	})
}

// follows answers a confirmation request: nil only if this member is in term and knows leader as
// its leader. The term is read first; seeing it equal to term after the request was sent is what
// the leader's safety argument needs (confirmLeadership).
func (s *Store) follows(leader string, term uint64) error {
	cur := s.raft.CurrentTerm()
	_, id := s.raft.LeaderWithID()
	if cur != term || string(id) != leader {
		return fmt.Errorf("%w: member %s follows %q in term %d, not %q in term %d", errNotLeader, s.id, id, cur, leader, term)
	}
	return nil
}

// linearizableView returns a read view that reflects every write acknowledged before the call.
func (s *Store) linearizableView(ctx context.Context) (*readView, error) {
	if planted.Enabled(planted.LocalReads) {
		return s.fsm.view(), nil
	}
	start := s.metrics.start()
	for attempt := 0; ; attempt++ {
		if s.stopped() {
			return nil, s.stoppedErr()
		}
		idx, err := s.readIndex.Get(ctx)
		if err == nil {
			if err := s.fsm.waitApplied(ctx, idx); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrTimeout, err)
			}
			s.metrics.readIndexWaited(start)
			return s.fsm.view(), nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
		}
		if !retryable(err) {
			return nil, err
		}
		if err := s.waitLeaderChange(ctx, attempt); err != nil {
			return nil, noLeader(err)
		}
	}
}

// retryable reports whether an operation that is safe to repeat should be tried again.
func retryable(err error) bool {
	return errors.Is(err, errNotLeader) || errors.Is(err, errNotReady) || errors.Is(err, ErrNoLeader) ||
		errors.Is(err, errLeadershipLost) || errors.Is(err, peer.ErrNotSent) ||
		errors.Is(err, peer.ErrOutcomeUnknown) || errors.Is(err, context.DeadlineExceeded)
}

// onLeader runs an idempotent leader-only request: locally if this member leads, else on the
// leader, retrying through leader changes until ctx ends.
func (s *Store) onLeader(ctx context.Context, method uint8, req []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		if s.stopped() {
			return nil, s.stoppedErr()
		}
		var resp []byte
		var err error
		if s.IsLeader() {
			resp, err = s.dispatchRPC(ctx, method, req)
		} else if addr, aerr := s.leaderAddr(); aerr != nil {
			err = aerr
		} else {
			s.metrics.forwardedToLeader(method)
			resp, err = s.call(ctx, addr, method, req)
		}
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
		}
		if !retryable(err) {
			return nil, err
		}
		if err := s.waitLeaderChange(ctx, attempt); err != nil {
			return nil, noLeader(err)
		}
	}
}
