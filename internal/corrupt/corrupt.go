// Package corrupt holds the one error that every report of damaged data wraps. The packages
// that find damage (internal/raftlog in the raft log, internal/mvcc in a snapshot) wrap it, and
// the root package exports it as ember.ErrCorrupt, so errors.Is matches across all of them with
// no mapping at each boundary.
package corrupt

import "errors"

// Err is ember.ErrCorrupt.
var Err = errors.New("ember: corrupt data")
