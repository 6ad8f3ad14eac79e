package ember

import (
	"fmt"

	"github.com/ember-kv/ember/internal/wire"
)

// checkQuota refuses a command that adds data while the store is over its space quota
// (WithQuotaBackendBytes). The quota is on the logical size of the state, so compaction alone
// brings the store back under it: there is no alarm to disarm and no defragmentation, unlike
// etcd, whose quota counts the database file. Reads, deletes, compaction, revokes, checkpoints
// and keepalives always pass. The check runs on the leader only, against its applied state, so
// writes already in flight may take the store slightly over the quota, as with etcd. The
// request-dedup table (Status.DedupBytes) is not counted: it has its own bound
// (WithDedupResultBytes), and since only new writes age it out, counting it could keep a store
// over the quota after compaction.
func (s *Store) checkQuota(cmd *wire.Command, size int) error {
	if s.cfg.quotaBytes <= 0 || !addsData(cmd) {
		return nil
	}
	used := s.fsm.sizeInUse.Load()
	if used+int64(size) > s.cfg.quotaBytes {
		return fmt.Errorf("%w: %d bytes in use, quota %d", ErrNoSpace, used, s.cfg.quotaBytes)
	}
	return nil
}

// addsData reports whether cmd can grow the state: a transaction with a put in any branch (etcd
// rejects those whichever branch would run) or a lease grant.
func addsData(cmd *wire.Command) bool {
	switch cmd.Kind {
	case wire.KindLeaseGrant:
		return true
	case wire.KindTxn:
		return txnPuts(cmd.Txn)
	}
	return false
}

func txnPuts(t *wire.Txn) bool {
	if t == nil {
		return false
	}
	for _, ops := range [][]wire.Op{t.Success, t.Failure} {
		for i := range ops {
			if ops[i].Kind == wire.OpPut || ops[i].Kind == wire.OpTxn && txnPuts(ops[i].Txn) {
				return true
			}
		}
	}
	return false
}
