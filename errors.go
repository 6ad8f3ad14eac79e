package ember

import (
	"errors"
	"fmt"

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
	// ErrNoLeader: the cluster has no leader, or this member cannot reach it.
	ErrNoLeader = errors.New("ember: no leader")
	// ErrTimeout: the request did not finish in time. A write that times out may still be applied.
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
	// ErrCorrupt: data on disk or in a backup failed a consistency check.
	ErrCorrupt = errors.New("ember: corrupt data")
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

var codeErrors = map[wire.Code]error{
	wire.CodeCompacted:       ErrCompacted,
	wire.CodeFutureRev:       ErrFutureRev,
	wire.CodeKeyNotFound:     ErrKeyNotFound,
	wire.CodeEmptyKey:        ErrEmptyKey,
	wire.CodeRequestTooLarge: ErrRequestTooLarge,
	wire.CodeTooManyOps:      ErrTooManyOps,
	wire.CodeDuplicateKey:    ErrDuplicateKey,
	wire.CodeLeaseNotFound:   ErrLeaseNotFound,
	wire.CodeLeaseExists:     ErrLeaseExists,
	wire.CodeTTLTooLarge:     ErrTTLTooLarge,
	wire.CodeNoLeader:        ErrNoLeader,
	wire.CodeTimeout:         ErrTimeout,
	wire.CodeNoSpace:         ErrNoSpace,
	wire.CodeStopped:         ErrStopped,
	wire.CodeMemberNotFound:  ErrMemberNotFound,
	wire.CodeMemberExists:    ErrMemberExists,
	wire.CodeValueProvided:   ErrValueProvided,
	wire.CodeLeaseProvided:   ErrLeaseProvided,
	wire.CodeNotLeader:       errNotLeader,
	wire.CodeNotReady:        errNotReady,
	wire.CodeMalformed:       wire.ErrMalformed,
	wire.CodeLeadershipLost:  errLeadershipLost,
	wire.CodeLearnerNotReady: ErrLearnerNotReady,
	wire.CodeUnhealthy:       ErrUnhealthy,
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
	if err, ok := codeErrors[c]; ok {
		return err
	}
	return fmt.Errorf("ember: internal error (code %d)", c)
}

// errorCode is the inverse of codeError, for answering peers.
func errorCode(err error) wire.Code {
	var pe *peer.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	for c, e := range codeErrors {
		if errors.Is(err, e) {
			return c
		}
	}
	return wire.CodeInternal
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
