package ember

import (
	"fmt"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/wire"
)

// checkQuota refuses a command that adds data while the store is over its space quota
// (WithQuotaBackendBytes); its caller then raises the NOSPACE alarm, which keeps such commands
// refused on every member until AlarmDisarm, as etcd. The quota is on the logical size of the
// state, so compaction alone brings the store back under it, without Defragment, unlike etcd,
// whose quota counts the database file. Reads, deletes, compaction, revokes, checkpoints
// and keepalives always pass. The check runs on the leader only, against its applied state, so
// writes already in flight may take the store slightly over the quota, as with etcd. The
// request-dedup table (Status.DedupBytes) is not counted: it has its own bound
// (WithDedupResultBytes), and since only new writes age it out, counting it could keep a store
// over the quota after compaction.
func (s *Store) checkQuota(cmd *wire.Command, size int) error {
	if s.cfg.quotaBytes <= 0 || !mvcc.AddsData(cmd) {
		return nil
	}
	used := s.fsm.sizeInUse.Load()
	if used+int64(size) > s.cfg.quotaBytes {
		return fmt.Errorf("%w: %d bytes in use, quota %d", ErrNoSpace, used, s.cfg.quotaBytes)
	}
	return nil
}
