// Package writecheck classifies the error a write returned by what it promises about the
// write's effect, for tests that hold ember to its error contract: a write error is either
// definite (the write took no effect) or unknown (ErrTimeout: it may have), never both under
// errors.Is. A test that finds Both has found a bug, whatever the write did.
package writecheck

import (
	"errors"

	"github.com/ember-kv/ember"
)

// Outcome is what an error says about a write's effect.
type Outcome uint8

const (
	OK       Outcome = iota // no error: the write took effect
	Definite                // the write took no effect
	Unknown                 // the write may or may not have taken effect
	Both                    // the error claims both: a violation of ember's contract
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Definite:
		return "definite"
	case Unknown:
		return "unknown"
	}
	return "both definite and unknown"
}

// DefiniteErrors are ember's errors that promise the request took no effect: every exported
// error except ErrTimeout.
var DefiniteErrors = []error{
	ember.ErrCompacted, ember.ErrFutureRev, ember.ErrKeyNotFound, ember.ErrEmptyKey,
	ember.ErrRequestTooLarge, ember.ErrTooManyOps, ember.ErrDuplicateKey, ember.ErrValueProvided,
	ember.ErrLeaseProvided, ember.ErrLeaseNotFound, ember.ErrLeaseExists, ember.ErrTTLTooLarge,
	ember.ErrNoLeader, ember.ErrNoSpace, ember.ErrStopped, ember.ErrMemberNotFound,
	ember.ErrMemberExists, ember.ErrLearnerNotReady, ember.ErrCorrupt, ember.ErrUnhealthy,
	ember.ErrNotMember, ember.ErrInsecurePeers,
}

// Classify returns what err says about the effect of the write that returned it. An error that
// matches none of ember's errors (a context error alone, say) leaves the effect open: Unknown.
func Classify(err error) Outcome {
	if err == nil {
		return OK
	}
	definite := false
	for _, d := range DefiniteErrors {
		definite = definite || errors.Is(err, d)
	}
	switch unknown := errors.Is(err, ember.ErrTimeout); {
	case unknown && definite:
		return Both
	case definite:
		return Definite
	}
	return Unknown
}
