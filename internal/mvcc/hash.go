package mvcc

import (
	"encoding/binary"
	"hash/crc32"
)

// hash is the CRC-32C of every version with a revision at or below rev that compaction keeps, in
// revision order. Records a pending removal has not reached yet are skipped, so the hash does not
// depend on how far the removal got.
func (st *State) Hash(rev int64) uint32 {
	h := crc32.New(castagnoli)
	var buf []byte
	st.revs.Scan(func(r *Record) bool {
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
