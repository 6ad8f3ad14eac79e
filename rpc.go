package ember

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/peer"
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
)

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
	case mJoin:
		id, addr, learner := d.String(), d.String(), d.Bool()
		if err := d.Finish(); err != nil {
			return nil, err
		}
		if id == "" || addr == "" {
			return nil, fmt.Errorf("%w: empty member ID or address", wire.ErrMalformed)
		}
		return nil, s.addMember(ctx, id, addr, learner)
	case mPromote, mRemove, mTransfer:
		id := d.String()
		if err := d.Finish(); err != nil {
			return nil, err
		}
		if !s.IsLeader() {
			return nil, errNotLeader
		}
		switch method {
		case mPromote:
			return nil, s.promoteLocal(ctx, id)
		case mRemove:
			return nil, s.removeLocal(ctx, id)
		}
		return nil, s.transferLocal(ctx, id)
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

// leaderReadIndex implements ReadIndex on hashicorp/raft: the commit index, captured after this
// term's first entry is applied (before that it may be stale) and confirmed by a quorum
// heartbeat round (VerifyLeader) in the same term.
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
	if err := s.waitFuture(ctx, s.raft.VerifyLeader()); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, errNotLeader
	}
	if s.raft.CurrentTerm() != term {
		return 0, errNotLeader
	}
	return idx, nil
}

// linearizableView returns a read view that reflects every write acknowledged before the call.
func (s *Store) linearizableView(ctx context.Context) (*readView, error) {
	if plantedBug() == "local-reads" {
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
	// A membership change carries no request ID for the leader to deduplicate: once an attempt
	// may have been applied, no later failure shows that nothing was (a retried remove finds
	// its member gone), so the outcome is unknown.
	change := method == mJoin || method == mPromote || method == mRemove
	maybeApplied := false
	for attempt := 0; ; attempt++ {
		if s.stopped() {
			return nil, unknownIfMaybeApplied(maybeApplied, s.stoppedErr())
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
		maybeApplied = maybeApplied || change && (errors.Is(err, errLeadershipLost) ||
			errors.Is(err, peer.ErrOutcomeUnknown) || errors.Is(err, ErrTimeout))
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
		}
		if !retryable(err) {
			return nil, unknownIfMaybeApplied(maybeApplied, err)
		}
		if err := s.waitLeaderChange(ctx, attempt); err != nil {
			return nil, unknownIfMaybeApplied(maybeApplied, noLeader(err))
		}
	}
}
