//go:build plantbugs

package ember

import (
	"os"

	"github.com/ember-kv/ember/internal/wire"
)

// plantedBug reads the bug to plant from EMBER_PLANTED_BUG: "local-reads" (linearizable reads
// skip the read index), "ack-before-commit" (writes are acknowledged before they commit),
// "skip-watch-event" (every seventh revision is not dispatched to watchers), "split-revoke" (a
// revoke deletes its keys at two revisions).
func plantedBug() string { return os.Getenv("EMBER_PLANTED_BUG") }

// plantedEarlyAck answers a transaction as if it had committed, from a private copy of the
// current state, without waiting for raft: the "ack-before-commit" planted bug (see plantedBug).
func (s *Store) plantedEarlyAck(data []byte) *wire.Result {
	cmd, err := wire.UnmarshalCommand(data)
	if err != nil || cmd.Kind != wire.KindTxn {
		return nil
	}
	s.fsm.mu.Lock()
	st := s.fsm.st.clone()
	s.fsm.mu.Unlock()
	res, _ := st.applyTxn(cmd.Txn)
	return res
}
