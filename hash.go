package ember

import (
	"context"
)

// HashKVResponse answers HashKV.
type HashKVResponse struct {
	Header ResponseHeader
	// Hash covers every version of every key with a revision at or below HashRevision that
	// compaction has kept: members that applied the same log agree on it.
	Hash            uint32
	CompactRevision int64
	HashRevision    int64
}

// HashKV hashes this member's MVCC history up to rev (0 = the current revision), as etcd's
// Maintenance.HashKV: comparing it between members detects a member whose state diverged. It
// reads this member's copy without a round trip.
func (s *Store) HashKV(ctx context.Context, rev int64) (*HashKVResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.localHashKV(rev)
}

// localHashKV is HashKV on this member's copy, for the API and for peers' hash checks.
func (s *Store) localHashKV(rev int64) (*HashKVResponse, error) {
	if s.stopped() {
		return nil, ErrStopped
	}
	v, release, err := s.fsm.pinnedView() // every value of one state, whatever compacts meanwhile
	if err != nil {
		return nil, err
	}
	defer release()
	st := v.st
	rev, code := st.CheckRev(rev)
	if err := codeError(code); err != nil {
		return nil, err
	}
	h, err := st.Hash(rev)
	if err != nil {
		return nil, err
	}
	return &HashKVResponse{Header: s.header(st.Rev()), Hash: h, CompactRevision: st.CompactRev(), HashRevision: rev}, nil
}
