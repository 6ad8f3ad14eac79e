// Package planted holds the bugs deliberately built into a test binary (go test -tags
// plantbugs) to show that the reliability checks catch them (reliability goal G7).
//
// Without the plantbugs build tag Enabled is a constant false: the compiler drops every
// branch it guards, so a production build contains no planted code path. The model is
// pebble's internal/invariants.
package planted

// Bug is one planted bug.
type Bug uint8

const (
	// LocalReads: linearizable reads skip the read index and read the local copy.
	LocalReads Bug = iota + 1
	// AckBeforeCommit: writes are acknowledged before raft commits them.
	AckBeforeCommit
	// SkipWatchEvent: every seventh revision is not dispatched to watchers.
	SkipWatchEvent
	// SplitRevoke: a lease revoke deletes its keys at two revisions.
	SplitRevoke
)
