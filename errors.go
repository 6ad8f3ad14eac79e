package ember

import (
	"context"
	"errors"
	"fmt"

	"github.com/ember-kv/ember/internal/corrupt"
	"github.com/ember-kv/ember/internal/peer"
	"github.com/ember-kv/ember/internal/wire"
)

// Errors returned by ember. Match them with errors.Is: ember wraps them with context.
var (
	// ErrCompacted: the requested revision is older than the last compaction.
	ErrCompacted = errors.New("ember: mvcc: required revision has been compacted")
	// ErrFutureRev: the requested revision is newer than the store's current revision.
	ErrFutureRev = errors.New("ember: mvcc: required revision is a future revision")
	// ErrKeyNotFound: a put with WithIgnoreValue or WithIgnoreLease names a key that does not exist.
	ErrKeyNotFound = errors.New("ember: key not found")
	// ErrEmptyKey: a request names the empty key.
	ErrEmptyKey = errors.New("ember: key is not provided")
	// ErrRequestTooLarge: the encoded request is larger than WithMaxRequestBytes.
	ErrRequestTooLarge = errors.New("ember: request is too large")
	// ErrTooManyOps: a transaction has more compares or ops than WithMaxTxnOps.
	ErrTooManyOps = errors.New("ember: too many operations in txn request")
	// ErrDuplicateKey: a transaction writes the same key twice.
	ErrDuplicateKey = errors.New("ember: duplicate key given in txn request")
	// ErrValueProvided: a put with WithIgnoreValue also gives a value.
	ErrValueProvided = errors.New("ember: value is provided")
	// ErrLeaseProvided: a put with WithIgnoreLease also gives a lease.
	ErrLeaseProvided = errors.New("ember: lease is provided")
	// ErrLeaseNotFound: the lease does not exist or has expired.
	ErrLeaseNotFound = errors.New("ember: requested lease not found")
	// ErrLeaseExists: a grant names a lease ID that is in use.
	ErrLeaseExists = errors.New("ember: lease already exists")
	// ErrTTLTooLarge: a grant asks for a TTL above the maximum.
	ErrTTLTooLarge = errors.New("ember: too large lease TTL")
	// ErrNoLeader: the cluster has no leader, or this member cannot reach it. A write that fails
	// with it took no effect.
	ErrNoLeader = errors.New("ember: no leader")
	// ErrTimeout: the request did not finish in time. A write that times out may still be
	// applied: its outcome is unknown. Such an error matches no other ember error (the cause is
	// in its message), as every other ember error a write returns means it took no effect.
	ErrTimeout = errors.New("ember: request timed out")
	// ErrNoSpace: the store is over its space quota.
	ErrNoSpace = errors.New("ember: mvcc: database space exceeded")
	// ErrStopped: the store is closed.
	ErrStopped = errors.New("ember: store stopped")
	// ErrMemberNotFound: no member has that ID.
	ErrMemberNotFound = errors.New("ember: member not found")
	// ErrMemberExists: a member with that ID or address already exists.
	ErrMemberExists = errors.New("ember: member already exists")
	// ErrLearnerNotReady: a learner cannot be promoted before it has caught up with the leader.
	ErrLearnerNotReady = errors.New("ember: can only promote a learner member which is in sync with leader")
	// ErrUnhealthy: a membership change would leave the cluster without a quorum of healthy
	// voters (etcd's strict reconfiguration check); nothing was changed.
	ErrUnhealthy = errors.New("ember: unhealthy cluster")
	// ErrCorrupt: data on disk or in a backup failed a consistency check; or, for a write, a
	// CORRUPT alarm is raised (the periodic hash check found a member whose state diverged) and
	// the cluster refuses writes until AlarmDisarm, as etcd's "corrupt cluster". Nothing was
	// applied.
	ErrCorrupt = corrupt.Err
	// ErrNotMember: this member is not (yet, or any more) in the cluster's configuration, so
	// another member refused a request that only members may make (anything but a join and the
	// read-only probes), such as a write forwarded after this member was removed. Nothing was
	// done.
	ErrNotMember = errors.New("ember: not a member of the cluster")
	// ErrInsecurePeers: Open refuses a peer listener on a non-loopback address that neither
	// WithTLS nor WithClusterToken protects (WithInsecurePeers accepts it).
	ErrInsecurePeers = errors.New("ember: peer listener reachable from other hosts without WithTLS or WithClusterToken")
)

// errNotLeader and errNotReady travel between members only; callers never see them.
var (
	errNotLeader      = errors.New("ember: not the leader")
	errNotReady       = errors.New("ember: leader not ready")
	errLeadershipLost = errors.New("ember: leadership lost while committing")
)

// errResultNotHeld answers a retried write that was applied once but whose result the state
// machine no longer holds (WithDedupResultBytes). It wraps ErrTimeout: the write is not applied
// again, and its response (a PrevKV, say) cannot be given, so to the caller the outcome is as
// unknown as a write that timed out, and a definite failure would be a lie.
var errResultNotHeld = fmt.Errorf("%w: outcome unknown: the write was applied, but its result is no longer held to answer this retry", ErrTimeout)

// errCorruptCluster refuses a write while a CORRUPT alarm is raised. It wraps ErrCorrupt, and
// its code is CodeCorrupt, which a bare ErrCorrupt (damage found on disk) does not get.
var errCorruptCluster = fmt.Errorf("%w: corrupt cluster: a CORRUPT alarm is raised; writes are refused until it is disarmed", ErrCorrupt)

// codeErrors pairs each code with its error, in the precedence errorCode applies when an error
// wraps several of them. Outcomes that may have been applied come first: answering a definite
// code (ErrStopped, ErrNoLeader) for a write the leader may yet commit would make the member
// that forwarded it report "no effect" for a write that took effect. Then the codes that say this
// member cannot serve now (the caller retries elsewhere), then the request's own faults, in wire
// order. A slice, not a map: errorCode must answer the same code for the same error every time.
var codeErrors = []struct {
	code wire.Code
	err  error
}{
	// Outcome unknown.
	{wire.CodeTimeout, ErrTimeout},
	{wire.CodeLeadershipLost, errLeadershipLost},
	// Not applied; this member cannot serve the request now.
	{wire.CodeStopped, ErrStopped},
	{wire.CodeNoLeader, ErrNoLeader},
	{wire.CodeNotLeader, errNotLeader},
	{wire.CodeNotReady, errNotReady},
	// Not applied; the request itself fails.
	{wire.CodeCompacted, ErrCompacted},
	{wire.CodeFutureRev, ErrFutureRev},
	{wire.CodeKeyNotFound, ErrKeyNotFound},
	{wire.CodeEmptyKey, ErrEmptyKey},
	{wire.CodeRequestTooLarge, ErrRequestTooLarge},
	{wire.CodeTooManyOps, ErrTooManyOps},
	{wire.CodeDuplicateKey, ErrDuplicateKey},
	{wire.CodeLeaseNotFound, ErrLeaseNotFound},
	{wire.CodeLeaseExists, ErrLeaseExists},
	{wire.CodeTTLTooLarge, ErrTTLTooLarge},
	{wire.CodeNoSpace, ErrNoSpace},
	{wire.CodeMemberNotFound, ErrMemberNotFound},
	{wire.CodeMemberExists, ErrMemberExists},
	{wire.CodeValueProvided, ErrValueProvided},
	{wire.CodeLeaseProvided, ErrLeaseProvided},
	{wire.CodeMalformed, wire.ErrMalformed},
	{wire.CodeLearnerNotReady, ErrLearnerNotReady},
	{wire.CodeUnhealthy, ErrUnhealthy},
	{wire.CodeNotMember, ErrNotMember},
	{wire.CodeCorrupt, errCorruptCluster},
}

// codeError turns a state machine or peer code into the exported error.
func codeError(c wire.Code) error {
	if c == wire.CodeOK {
		return nil
	}
	if c == wire.CodeResultNotHeld {
		// Not in codeErrors: errorCode's reverse lookup would find ErrTimeout in it too.
		return errResultNotHeld
	}
	if c.IsAuth() {
		return authCodeError{c}
	}
	for _, ce := range codeErrors {
		if ce.code == c {
			return ce.err
		}
	}
	return fmt.Errorf("ember: internal error (code %d)", c)
}

// errorCode is the inverse of codeError, for answering peers. An error that wraps several
// sentinels gets the first code of codeErrors it matches, except that a code a peer already
// answered is passed on unless the error also says the outcome is unknown.
func errorCode(err error) wire.Code {
	if errors.Is(err, ErrTimeout) {
		return wire.CodeTimeout
	}
	if errors.Is(err, errLeadershipLost) {
		return wire.CodeLeadershipLost
	}
	var pe *peer.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	var ae authCodeError
	if errors.As(err, &ae) {
		return ae.code
	}
	for _, ce := range codeErrors {
		if errors.Is(err, ce.err) {
			return ce.code
		}
	}
	return wire.CodeInternal
}

// unknownOutcomeError is the error of a write that may or may not have been applied: it was
// handed to raft, or to the leader, and the wait for its result ended without one. It matches
// ErrTimeout, and the context error that ended the wait if one did, never the cause's other
// sentinels: a cause such as ErrStopped or ErrNoLeader promises that nothing was applied, which
// is exactly what is not known. The cause stays in the message.
type unknownOutcomeError struct{ cause error }

// outcomeUnknown reports that the write whose wait ended with cause may have been applied.
func outcomeUnknown(cause error) error {
	if _, ok := cause.(*unknownOutcomeError); ok {
		return cause
	}
	return &unknownOutcomeError{cause: cause}
}

func (e *unknownOutcomeError) Error() string {
	return ErrTimeout.Error() + ": outcome unknown: " + e.cause.Error()
}

func (e *unknownOutcomeError) Unwrap() []error {
	errs := []error{ErrTimeout}
	for _, c := range []error{context.Canceled, context.DeadlineExceeded} {
		if errors.Is(e.cause, c) {
			errs = append(errs, c)
		}
	}
	return errs
}

// peerError converts an error for a peer's answer.
func peerError(err error) error {
	if err == nil {
		return nil
	}
	return &peer.Error{Code: errorCode(err), Msg: err.Error()}
}

// fromPeer converts an error a peer answered with back to the exported sentinel.
func fromPeer(err error) error {
	var pe *peer.Error
	if errors.As(err, &pe) {
		if e := codeError(pe.Code); e != nil && pe.Code != wire.CodeInternal {
			return e
		}
		return fmt.Errorf("ember: peer: %s", pe.Msg)
	}
	return err
}
