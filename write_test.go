package ember

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ember-kv/ember/internal/peer"
)

// TestClassifyAttempt_PerCaller pins how each retry loop reads an attempt's error: the shared
// sentinels, and what a forwarded write, a local write and a membership change add. An error
// that wraps a maybe-applied sentinel and a not-applied one is maybe-applied.
func TestClassifyAttempt_PerCaller(t *testing.T) {
	type callers struct {
		forwarded, local, member attemptClass
		read                     bool // retryable
	}
	const (
		fail  = attemptFailed
		not   = attemptNotApplied
		maybe = attemptMaybeApplied
	)
	tests := []struct {
		name string
		err  error
		want callers
	}{
		{"leadership lost", errLeadershipLost, callers{maybe, maybe, maybe, true}},
		{"peer outcome unknown", peer.ErrOutcomeUnknown, callers{maybe, maybe, maybe, true}},
		{"timeout", outcomeUnknown(errors.New("disk")), callers{maybe, fail, maybe, false}},
		{"wait abandoned", fmt.Errorf("%w: %w", errWaitAbandoned, context.Canceled), callers{fail, fail, maybe, false}},
		{"not leader", errNotLeader, callers{not, not, not, true}},
		{"not ready", errNotReady, callers{not, not, not, true}},
		{"no leader", ErrNoLeader, callers{not, not, not, true}},
		{"not sent", peer.ErrNotSent, callers{not, not, not, true}},
		{"stopped", ErrStopped, callers{not, fail, fail, false}},
		{"deadline", context.DeadlineExceeded, callers{fail, fail, fail, true}},
		{"member exists", ErrMemberExists, callers{fail, fail, fail, false}},
		{"not leader and timeout", fmt.Errorf("%w: %w", errNotLeader, ErrTimeout), callers{maybe, not, maybe, true}},
		{"not sent and leadership lost", fmt.Errorf("%w: %w", peer.ErrNotSent, errLeadershipLost), callers{maybe, maybe, maybe, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := callers{
				forwarded: classifyAttempt(tt.err, forwardedWriteMaybe, forwardedWriteNotApplied),
				local:     classifyAttempt(tt.err, nil, nil),
				member:    classifyAttempt(tt.err, memberChangeMaybe, nil),
				read:      retryable(tt.err),
			}
			if got != tt.want {
				t.Fatalf("%v: got %+v, want %+v", tt.err, got, tt.want)
			}
		})
	}
}
