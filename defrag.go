package ember

import "context"

// DefragmentResponse answers Defragment.
type DefragmentResponse struct {
	Header ResponseHeader
	// Freed is the bytes the backend file gave back.
	Freed int64
}

// Defragment rewrites this member's backend (state.db) without the space compaction freed in
// it, as etcd's Maintenance.Defragment does for its backend: a compaction removes old versions
// from the file but the file keeps its size and reuses the pages, and Defragment gives them
// back to the file system. Unlike etcd's, it does not stop reads or writes: the state is copied
// while they go on, and only the last writes, the leases and the dedup table are copied under
// the apply lock, with the switch to the new file. Compaction's background removal pauses
// meanwhile. It acts on this member only; a member without a data dir has no file, and the
// call does nothing.
func (s *Store) Defragment(ctx context.Context) (*DefragmentResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.stopped() {
		return nil, ErrStopped
	}
	freed, err := s.fsm.defragment(ctx)
	if err != nil {
		return nil, err
	}
	return &DefragmentResponse{Header: s.header(s.fsm.view().st.Rev()), Freed: freed}, nil
}
