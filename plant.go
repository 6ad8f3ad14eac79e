//go:build !plantbugs

package ember

import "github.com/ember-kv/ember/internal/wire"

// plantedEarlyAck exists only so that applyLocal's planted branch compiles: without the
// plantbugs tag planted.Enabled is a constant false and the branch, with this call, is dropped.
func plantedEarlyAck(*Store, []byte) *wire.Result { return nil }
