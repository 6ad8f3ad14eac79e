//go:build plantbugs

package ember

import "github.com/ember-kv/ember/internal/wire"

// plantedEarlyAck answers a transaction as if it had committed, from a private copy of the
// current state, without waiting for raft: the planted.AckBeforeCommit bug.
func plantedEarlyAck(s *Store, data []byte) *wire.Result {
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
