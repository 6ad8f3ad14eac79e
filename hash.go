package ember

import (
	"context"
	"encoding/binary"
	"hash/crc32"
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
	if s.stopped() {
		return nil, ErrStopped
	}
	st := s.fsm.view().st
	rev, code := st.checkRev(rev, st.rev)
	if err := codeError(code); err != nil {
		return nil, err
	}
	return &HashKVResponse{Header: s.header(st.rev), Hash: st.Hash(rev), CompactRevision: st.compactRev, HashRevision: rev}, nil
}

// hash is the CRC-32C of every version with a revision at or below rev that compaction keeps, in
// revision order. Records a pending removal has not reached yet are skipped, so the hash does not
// depend on how far the removal got.
func (st *mvccState) Hash(rev int64) uint32 {
	h := crc32.New(castagnoli)
	var buf []byte
	st.revs.Scan(func(r *record) bool {
		if r.Mod > rev {
			return false
		}
		if st.compactPending && r.Mod < st.compactRev && st.obsolete(r, st.nextVersion(r)) {
			return true
		}
		buf = buf[:0]
		buf = binary.AppendVarint(buf, r.Mod)
		buf = binary.AppendVarint(buf, r.Sub)
		buf = binary.AppendVarint(buf, r.Create)
		buf = binary.AppendVarint(buf, r.Version)
		buf = binary.AppendVarint(buf, r.Lease)
		if r.Tombstone {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
		buf = binary.AppendUvarint(buf, uint64(len(r.Key)))
		buf = append(buf, r.Key...)
		buf = binary.AppendUvarint(buf, uint64(len(r.Value)))
		buf = append(buf, r.Value...)
		h.Write(buf)
		return true
	})
	return h.Sum32()
}
