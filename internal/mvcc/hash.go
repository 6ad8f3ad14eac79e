package mvcc

import (
	"encoding/binary"
	"hash/crc32"
)

// hash is the CRC-32C of every version with a revision at or below rev that compaction keeps, in
// revision order. Records a pending removal has not reached yet are skipped, so the hash does not
// depend on how far the removal got. st must be the Applier's own state or a pinned clone: the
// only failure is a value missing from its file.
func (st *State) Hash(rev int64) (uint32, error) {
	h := crc32.New(castagnoli)
	var buf []byte
	var missing error
	err := st.ascendRevs(revPos{}, func(r *Record) bool {
		if r.Mod > rev {
			return false
		}
		if st.compactPending && r.Mod < st.compactRev && st.obsolete(r.Mod, r.Tombstone(), st.nextMod(r)) {
			return true
		}
		buf = buf[:0]
		buf = binary.AppendVarint(buf, r.Mod)
		buf = binary.AppendVarint(buf, int64(r.Sub))
		buf = binary.AppendVarint(buf, r.Create)
		buf = binary.AppendVarint(buf, r.Version)
		buf = binary.AppendVarint(buf, r.Lease)
		if r.Tombstone() {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
		buf = binary.AppendUvarint(buf, uint64(len(r.Key)))
		buf = append(buf, r.Key...)
		value, ok := st.valueOf(r)
		if !ok {
			missing = errValueMissing(r)
			return false
		}
		buf = binary.AppendUvarint(buf, uint64(len(value)))
		buf = append(buf, value...)
		h.Write(buf)
		return true
	})
	if err == nil {
		err = missing
	}
	return h.Sum32(), err
}
