//go:build !plantbugs

package ember

import "github.com/ember-kv/ember/internal/wire"

// plantedBug names a bug deliberately built into a test binary (go test -tags plantbugs) to
// show that the checkers catch it (reliability goal G7). In every other build it is the empty
// string, a constant the compiler folds, so the planted branches do not exist.
func plantedBug() string { return "" }

// plantedEarlyAck is the "ack-before-commit" planted bug; without the build tag it never runs.
func (s *Store) plantedEarlyAck([]byte) *wire.Result { return nil }
