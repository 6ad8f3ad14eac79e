package ember

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/planted"
	"github.com/ember-kv/ember/internal/readindex"
	"github.com/ember-kv/ember/internal/wire"
)

// readView returns a view to read from: this member's latest for a serializable read, one
// that reflects every write acknowledged before the call otherwise.
func (s *Store) readView(ctx context.Context, serializable bool) (*readView, error) {
	if !serializable {
		return s.linearizableView(ctx)
	}
	if s.stopped() {
		return nil, s.stoppedErr()
	}
	return s.fsm.view(), nil
}

// read serves a transaction that writes nothing from a read view.
func (s *Store) read(ctx context.Context, t *wire.Txn, serializable bool) (*wire.Result, error) {
	v, err := s.readView(ctx, serializable)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		res, code := v.st.ReadTxn(t)
		if code == wire.CodeOK {
			return res, nil
		}
		if v, err = s.reread(v, code, attempt); err != nil {
			return nil, err
		}
	}
}

// maxViewAttempts bounds how often a read moves to a newer view because compactions keep
// removing values from under it; the last attempt's ErrCompacted is then the answer.
const maxViewAttempts = 3

// reread decides what a read that failed with code on v, at its attempt-th view, does next: read
// again from a newer view when a value it needs was compacted after v was cloned
// (mvcc.State.Value reports that as CodeCompacted; the newer view answers ErrCompacted itself if
// the revision asked for is below its compaction revision now), else fail with code's error.
func (s *Store) reread(v *readView, code wire.Code, attempt int) (*readView, error) {
	if code == wire.CodeCompacted && s.stopped() {
		return nil, s.stoppedErr() // the backend closed under the read
	}
	if nv := s.fsm.view(); code == wire.CodeCompacted && nv != v && attempt < maxViewAttempts {
		return nv, nil
	}
	return nil, codeError(code)
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
	term, err := s.readyLeaderTerm(ctx)
	if err != nil {
		return 0, err
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

// readyLeaderTerm waits until this leader's term has its first entry applied, and returns the
// term: from then on, every entry of earlier terms in the log is committed.
func (s *Store) readyLeaderTerm(ctx context.Context) (uint64, error) {
	for {
		ch := s.readySig.wait()
		term := s.raft.CurrentTerm()
		if s.readyTerm.Load() == term {
			return term, nil
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
	if others, self := otherVoters(conf, s.id); others == 0 && self {
		return nil // the majority is this member, in term (the caller checks that after)
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
		if err := s.retryIdempotent(ctx, err, attempt); err != nil {
			return nil, err
		}
	}
}
