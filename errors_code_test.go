package ember

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ember-kv/ember/internal/peer"
	"github.com/ember-kv/ember/internal/wire"
)

// definiteSentinels are the errors that promise a request took no effect: every exported error
// but ErrTimeout, and the member-to-member signals that mean "not applied".
var definiteSentinels = []error{
	ErrCompacted, ErrFutureRev, ErrKeyNotFound, ErrEmptyKey, ErrRequestTooLarge, ErrTooManyOps,
	ErrDuplicateKey, ErrValueProvided, ErrLeaseProvided, ErrLeaseNotFound, ErrLeaseExists,
	ErrTTLTooLarge, ErrNoLeader, ErrNoSpace, ErrStopped, ErrMemberNotFound, ErrMemberExists,
	ErrLearnerNotReady, ErrCorrupt, errNotLeader, errNotReady, errLeadershipLost,
}

// TestErrorCode_DeterministicPrecedence answers peers with errors that wrap several sentinels,
// many times each: the code must not depend on map iteration order, and an unknown outcome must
// never travel as a definite code.
func TestErrorCode_DeterministicPrecedence(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want wire.Code
	}{
		{"timeout wrapping stopped", fmt.Errorf("%w: outcome unknown: %w", ErrTimeout, ErrStopped), wire.CodeTimeout},
		{"stopped wrapping timeout", fmt.Errorf("%w: %w", ErrStopped, ErrTimeout), wire.CodeTimeout},
		{"timeout wrapping no leader", fmt.Errorf("%w: %w", ErrTimeout, ErrNoLeader), wire.CodeTimeout},
		{"joined timeout and not leader", errors.Join(errNotLeader, ErrTimeout), wire.CodeTimeout},
		{"unknown outcome of a stop", outcomeUnknown(ErrStopped), wire.CodeTimeout},
		{"timeout and a peer's code", fmt.Errorf("%w: %w", ErrTimeout, &peer.Error{Code: wire.CodeNoSpace}), wire.CodeTimeout},
		{"leadership lost wrapping stopped", fmt.Errorf("%w: %w", errLeadershipLost, ErrStopped), wire.CodeLeadershipLost},
		{"stopped wrapping no leader", fmt.Errorf("%w: %w", ErrStopped, ErrNoLeader), wire.CodeStopped},
		{"no leader wrapping stopped", fmt.Errorf("%w: %w", ErrNoLeader, ErrStopped), wire.CodeStopped},
		{"storage failure", fmt.Errorf("%w: storage failure in StoreLogs: %w", ErrStopped, ErrCorrupt), wire.CodeStopped},
		{"no leader and not ready", errors.Join(errNotReady, ErrNoLeader), wire.CodeNoLeader},
		{"not leader and request error", errors.Join(ErrLeaseNotFound, errNotLeader), wire.CodeNotLeader},
		{"two request errors", errors.Join(ErrMemberExists, ErrKeyNotFound), wire.CodeKeyNotFound},
		{"a peer's code", fmt.Errorf("relayed: %w", &peer.Error{Code: wire.CodeNoSpace}), wire.CodeNoSpace},
		{"no sentinel", errors.New("boom"), wire.CodeInternal},
		{"context error", context.DeadlineExceeded, wire.CodeInternal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			counts := map[wire.Code]int{}
			for range 200 {
				counts[errorCode(tc.err)]++
			}
			if counts[tc.want] != 200 {
				t.Fatalf("errorCode(%v) over 200 calls: %v, want %d every time", tc.err, counts, tc.want)
			}
		})
	}
}

// TestErrorCode_RoundTrip: every code a peer can send comes back as the same code, and as an
// error that matches only its own sentinel. CodeResultNotHeld is left out: it travels inside a
// result, never as a peer error, and as an error it is an unknown outcome, sent as CodeTimeout.
func TestErrorCode_RoundTrip(t *testing.T) {
	for c := wire.CodeOK + 1; c.Valid(); c++ {
		if c == wire.CodeResultNotHeld {
			if got := errorCode(codeError(c)); got != wire.CodeTimeout {
				t.Errorf("CodeResultNotHeld as a peer error: code %d, want CodeTimeout", got)
			}
			continue
		}
		err := codeError(c)
		if err == nil {
			t.Fatalf("code %d: no error", c)
		}
		if got := errorCode(err); got != c {
			t.Errorf("code %d → %v → code %d", c, err, got)
		}
		if got := fromPeer(peerError(err)); got != err && c != wire.CodeInternal {
			t.Errorf("code %d: across a peer %v, want %v", c, got, err)
		}
	}
}

// TestUnknownIfMaybeApplied_MatchesOnlyTimeout: the error that ends the retries of a write that
// may have been applied matches ErrTimeout (and the context error that ended the wait), never a
// sentinel that promises no effect, and still names its cause.
func TestUnknownIfMaybeApplied_MatchesOnlyTimeout(t *testing.T) {
	tests := []struct {
		name   string
		cause  error
		wCtx   error // the context error it must still match, if any
		wCause string
	}{
		{"wait for a leader ended", noLeader(context.DeadlineExceeded), context.DeadlineExceeded, "no leader"},
		{"member stopped", ErrStopped, nil, "store stopped"},
		{"storage failure", fmt.Errorf("%w: storage failure in StoreLogs: %w", ErrStopped, errors.New("disk gone")), nil, "disk gone"},
		{"caller cancelled", fmt.Errorf("%w: %w", ErrNoLeader, context.Canceled), context.Canceled, "no leader"},
		{"leader refused the retry", ErrNoSpace, nil, "space exceeded"},
		{"retry not sent", fmt.Errorf("%w: %w", peer.ErrNotSent, ErrNoLeader), nil, "not sent"},
		{"already unknown", unknownIfMaybeApplied(true, ErrStopped), nil, "store stopped"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := unknownIfMaybeApplied(true, tc.cause)
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("%v does not match ErrTimeout", err)
			}
			for _, d := range definiteSentinels {
				if errors.Is(err, d) {
					t.Errorf("%v matches ErrTimeout and %v: both unknown and definite", err, d)
				}
			}
			if tc.wCtx != nil && !errors.Is(err, tc.wCtx) {
				t.Errorf("%v does not match %v", err, tc.wCtx)
			}
			if !strings.Contains(err.Error(), tc.wCause) || strings.Count(err.Error(), "outcome unknown") != 1 {
				t.Errorf("message %q: want the cause %q, and \"outcome unknown\" once", err, tc.wCause)
			}
			if got := errorCode(err); got != wire.CodeTimeout {
				t.Errorf("code %d, want CodeTimeout", got)
			}
		})
	}
	if err := unknownIfMaybeApplied(false, ErrStopped); err != ErrStopped {
		t.Fatalf("nothing applied: %v, want ErrStopped unchanged", err)
	}
}

// TestGiveUp_NeverTurnsUnknownDefinite: the error that ends a write's retries. An attempt whose
// outcome is unknown stays unknown when the caller's context ends at the same time.
func TestGiveUp_NeverTurnsUnknownDefinite(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	live := context.Background()
	diskErr := errors.New("fsync: input/output error")
	tests := []struct {
		name         string
		ctx          context.Context
		err          error
		maybeApplied bool
		wUnknown     bool
		wIs          error
	}{
		{"log write failed, ctx ended", ended, outcomeUnknown(diskErr), false, true, nil},
		{"log write failed", live, outcomeUnknown(diskErr), false, true, nil},
		{"stopped mid-apply, ctx ended", ended, outcomeUnknown(ErrStopped), true, true, nil},
		{"wait abandoned", ended, fmt.Errorf("%w: %w", errWaitAbandoned, context.Canceled), false, true, context.Canceled},
		{"earlier attempt may have applied, ctx ended", ended, errors.New("odd"), true, true, context.Canceled},
		{"earlier attempt may have applied, leader refused", live, ErrNoSpace, true, true, nil},
		{"nothing sent, ctx ended", ended, errors.New("odd"), false, false, ErrNoLeader},
		{"refused", live, ErrNoSpace, false, false, ErrNoSpace},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := giveUp(tc.ctx, tc.err, tc.maybeApplied)
			definite := false
			for _, d := range definiteSentinels {
				definite = definite || errors.Is(err, d)
			}
			if unknown := errors.Is(err, ErrTimeout); unknown != tc.wUnknown || definite == tc.wUnknown {
				t.Fatalf("giveUp: %v (unknown %v, definite %v), want unknown %v", err, unknown, definite, tc.wUnknown)
			}
			if tc.wIs != nil && !errors.Is(err, tc.wIs) {
				t.Fatalf("giveUp: %v, want it to match %v", err, tc.wIs)
			}
		})
	}
}
