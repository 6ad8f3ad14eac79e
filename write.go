package ember

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/authctx"
	"github.com/ember-kv/ember/internal/peer"
	"github.com/ember-kv/ember/internal/planted"
	"github.com/ember-kv/ember/internal/wire"
)

// nextID returns a fresh request ID for deduplication.
func (s *Store) nextID() wire.RequestID {
	return wire.RequestID{Client: s.clientID, Seq: s.seq.Add(1)}
}

// propose commits cmd through raft, on this member if it leads or through the leader otherwise,
// and returns the state machine's result. A write whose outcome is unknown (leadership lost,
// connection lost) is retried with the same request ID; the state machine drops the duplicate.
func (s *Store) propose(ctx context.Context, cmd *wire.Command) (*wire.Result, error) {
	cmd.ID = s.nextID()
	if cmd.Kind == wire.KindTxn || cmd.Kind == wire.KindLeaseRevoke {
		cmd.AuthRev = authctx.Rev(ctx) // set by the etcd gateway only
	}
	data := cmd.Marshal(nil)
	if len(data) > s.cfg.maxRequestBytes {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrRequestTooLarge, len(data), s.cfg.maxRequestBytes)
	}
	res, err := s.submitOwn(ctx, cmd, data, true)
	if err != nil {
		return nil, err
	}
	if res.Code == wire.CodeResultNotHeld {
		return nil, fmt.Errorf("%w (applied at revision %d)", errResultNotHeld, res.Revision)
	}
	if err := codeError(res.Code); err != nil {
		return res, err
	}
	return res, nil
}

// submitOwn is submit for a proposal this member originates (a client write entered here, or the
// leader's own lease revocation or checkpoint), counted in etcd_server_proposals_pending until it
// resolves. A write forwarded by a follower is counted on that follower only, as in etcd.
func (s *Store) submitOwn(ctx context.Context, cmd *wire.Command, data []byte, forward bool) (*wire.Result, error) {
	s.metrics.proposalStarted()
	res, err := s.submit(ctx, cmd, data, forward)
	s.metrics.proposalDone(err)
	return res, err
}

// submit retries until the command is committed, fails for good, or ctx ends. data is cmd's
// encoding. Once an attempt may have been applied, retries carry a RetryFloor so that the state
// machine can tell a duplicate it no longer remembers from a new command.
func (s *Store) submit(ctx context.Context, cmd *wire.Command, data []byte, forward bool) (*wire.Result, error) {
	floor := max(s.fsm.applied.Load(), 1)
	maybeApplied := false
	for attempt := 0; ; attempt++ {
		if maybeApplied && cmd.RetryFloor == 0 {
			cmd.RetryFloor = floor
			data = cmd.Marshal(nil)
		}
		if s.stopped() {
			return nil, unknownIfMaybeApplied(maybeApplied, s.stoppedErr())
		}
		var res *wire.Result
		var err error
		forwarded := false
		if s.raft.State() == raft.Leader {
			// The leader enforces the quota for the whole cluster, forwarded writes included.
			if err := s.checkQuota(cmd, len(data)); err != nil {
				s.raiseNoSpace()
				return nil, unknownIfMaybeApplied(maybeApplied, err)
			}
			res, err = s.applyLocal(ctx, data)
		} else if forward {
			res, err = s.forward(ctx, data)
			forwarded = true
		} else {
			return nil, errNotLeader
		}
		if err == nil {
			return res, nil
		}
		var maybe, notApplied []error
		if forwarded {
			// The leader's ErrTimeout is its unknown outcome; a leader that answers ErrStopped is
			// closing and applied nothing: another will lead. From applyLocal instead, ErrTimeout
			// (a log store failure, a stop mid-wait) ends the write at once, as ErrStopped does.
			maybe, notApplied = forwardedWriteMaybe, forwardedWriteNotApplied
		}
		switch classifyAttempt(err, maybe, notApplied) {
		case attemptMaybeApplied:
			// A retry carries the same request ID, so the state machine answers it from the
			// first attempt's result if that one was applied.
			maybeApplied = true
		case attemptFailed:
			return nil, giveUp(ctx, err, maybeApplied)
		}
		if !forward {
			return nil, err
		}
		if err := s.waitLeaderChange(ctx, attempt); err != nil {
			return nil, unknownIfMaybeApplied(maybeApplied, noLeader(err))
		}
	}
}

// forward sends an encoded command to the leader, in a batch with others if some are in flight
// (forwarder).
func (s *Store) forward(ctx context.Context, data []byte) (*wire.Result, error) {
	addr, err := s.leaderAddr()
	if err != nil {
		return nil, err
	}
	resp, err := s.fwd.forward(ctx, addr, data)
	if err != nil {
		return nil, err
	}
	return wire.UnmarshalResult(resp)
}

// giveUp is the error a write ends with when an attempt failed with err, an error that is not
// worth a retry, or ctx ended.
func giveUp(ctx context.Context, err error, maybeApplied bool) error {
	switch {
	case errors.Is(err, ErrTimeout):
		return err // already an unknown outcome, which the end of ctx must not make definite
	case ctx.Err() == nil:
		return unknownIfMaybeApplied(maybeApplied, err)
	case maybeApplied || errors.Is(err, errWaitAbandoned):
		return outcomeUnknown(ctx.Err())
	}
	return fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
}

// unknownIfMaybeApplied turns the error that ends a write's retries into an unknown outcome
// (ErrTimeout, and none of err's definite sentinels) when an earlier attempt may have been
// applied: a member that stops while its write is forwarded, say, cannot tell whether the leader
// committed it, and must not report a definite failure.
func unknownIfMaybeApplied(maybeApplied bool, err error) error {
	if maybeApplied {
		return outcomeUnknown(err)
	}
	return err
}

// errWaitAbandoned marks a wait on a write that was handed to raft and abandoned by ctx.
var errWaitAbandoned = errors.New("ember: wait for commit abandoned")

// applyLocal hands data to raft on the leader and waits for the state machine's result.
func (s *Store) applyLocal(ctx context.Context, data []byte) (*wire.Result, error) {
	f := s.raft.ApplyLog(raft.Log{Data: data}, 0)
	if planted.Enabled(planted.AckBeforeCommit) {
		// Answer a transaction as if it had committed, from a private copy of the state (a
		// view is shared by readers, so it is cloned before it is written), without waiting.
		if cmd, err := wire.UnmarshalCommand(data); err == nil && cmd.Kind == wire.KindTxn {
			res, _ := s.view().st.Clone().ApplyTxn(cmd.Txn)
			return res, nil
		}
	}
	if err := s.waitFuture(ctx, f); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress),
			errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, errNotLeader // never appended
		case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
			return nil, errLeadershipLost
		case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, ErrStopped):
			// In flight when the member stopped: it may have been appended, and may yet commit.
			return nil, outcomeUnknown(s.stoppedErr())
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w: %w", errWaitAbandoned, ctx.Err())
		}
		// Anything else (a log store write error) may come after the entry reached the disk,
		// where a restart would apply it: the outcome is unknown, never a definite failure.
		return nil, outcomeUnknown(err)
	}
	res, ok := f.Response().(*wire.Result)
	if !ok {
		return nil, fmt.Errorf("ember: unexpected state machine response %T", f.Response())
	}
	return res, nil
}

// waitFuture waits for a raft future. A cancelled ctx or Close abandons the wait, not the
// operation.
//
// hashicorp/raft does not answer futures still queued for the state machine when it shuts down
// (hashicorp/raft#498), so the goroutine that blocks on the future is tracked, and Close lets
// in-flight futures resolve before it stops raft.
func (s *Store) waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	s.spawnMu.Lock()
	if s.closing {
		s.spawnMu.Unlock()
		return ErrStopped
	}
	s.futures.Add(1)
	s.spawnMu.Unlock()
	go func() {
		defer s.futures.Done()
		done <- f.Error()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return ErrStopped
	}
}

// drainFutures waits, bounded, for the raft futures in flight: while raft runs, each resolves
// (applied, or failed when leadership is lost).
func (s *Store) drainFutures() {
	done := make(chan struct{})
	go func() {
		s.futures.Wait()
		close(done)
	}()
	t := time.NewTimer(2*s.cfg.electionTimeout + time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("raft operations still in flight at shutdown")
	}
}

// waitLeaderChange pauses before a retry: until the leader changes, or a short backoff passes.
func (s *Store) waitLeaderChange(ctx context.Context, attempt int) error {
	backoff := time.Duration(min(attempt+1, 10)) * 10 * time.Millisecond
	t := time.NewTimer(backoff)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.leaderSig.wait():
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return s.stoppedErr()
	}
	return nil
}

// noLeader explains a wait for a leader that ended: the store closed, or ctx ended first.
func noLeader(err error) error {
	if errors.Is(err, ErrStopped) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrNoLeader, err)
}

// retryIdempotent decides what follows a failed attempt of an operation that is safe to repeat
// (onLeader, linearizableView): it returns nil once it is time to retry, else the error to end
// with. An operation with no effect to lose gives up on ctx's end with ErrTimeout, or with
// ErrNoLeader if its last attempt never reached a leader.
func (s *Store) retryIdempotent(ctx context.Context, err error, attempt int) error {
	if ctx.Err() != nil {
		if classifyAttempt(err, nil, nil) == attemptNotApplied {
			return noLeader(ctx.Err())
		}
		return fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	}
	if !retryable(err) {
		return err
	}
	if err := s.waitLeaderChange(ctx, attempt); err != nil {
		return noLeader(err)
	}
	return nil
}

// attemptClass is what the error of one attempt on the leader says about the attempt's effect.
type attemptClass uint8

const (
	attemptFailed       attemptClass = iota // not worth a retry: the caller ends with the error
	attemptNotApplied                       // the leader never took it: retry
	attemptMaybeApplied                     // it may have taken effect: retry; an end is then an unknown outcome
)

// classifyAttempt is the one classification of an attempt's error that every retry loop on the
// leader shares (submit, changeMembership, onLeader, linearizableView). What differs per caller is
// passed in: errors that mean maybe-applied or not-applied only for that caller. Maybe-applied is
// checked first, so that an error wrapping both kinds never passes for a definite one.
func classifyAttempt(err error, maybe, notApplied []error) attemptClass {
	if errors.Is(err, errLeadershipLost) || errors.Is(err, peer.ErrOutcomeUnknown) || isAny(err, maybe) {
		return attemptMaybeApplied
	}
	if errors.Is(err, errNotLeader) || errors.Is(err, errNotReady) || errors.Is(err, ErrNoLeader) ||
		errors.Is(err, peer.ErrNotSent) || isAny(err, notApplied) {
		return attemptNotApplied
	}
	return attemptFailed
}

// What callers add to classifyAttempt's shared sentinels; each caller says why.
var (
	forwardedWriteMaybe      = []error{ErrTimeout}
	forwardedWriteNotApplied = []error{ErrStopped}
	memberChangeMaybe        = []error{errWaitAbandoned, ErrTimeout}
)

func isAny(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// retryable reports whether an operation that is safe to repeat should be tried again: whether
// or not an attempt took effect does not matter, and a per-attempt deadline (fetchReadIndex's)
// is worth a retry while the caller's ctx lasts.
func retryable(err error) bool {
	return classifyAttempt(err, nil, nil) != attemptFailed || errors.Is(err, context.DeadlineExceeded)
}
