package mvcc

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
	"slices"

	"github.com/ember-kv/ember/internal/corrupt"
	"github.com/ember-kv/ember/internal/wire"
)

// Snapshot stream format (raft snapshots and backups):
//
//	magic "EMBERSN1"
//	frames: type byte, uvarint payload length, payload
//	  frameHeader   once, first: uvarint format version, uvarint applied index, varint revision,
//	                varint compact revision
//	  frameRecords  uvarint count, then per record in (key, revision) order: key, varint mod,
//	                varint sub, varint create, varint version, varint lease, bool tombstone, value
//	  frameLeases   uvarint count, then per lease: varint id, varint ttl, varint remaining ms
//	  frameDedup    uvarint count, then per entry: uint64 client, uint64 seq, uvarint index,
//	                bytes encoded wire.Result (a long one may have been replaced by a short
//	                one with wire.CodeResultNotHeld; see DedupShortResult)
//	  frameEnd      once, last: uint32 CRC-32C of every byte before this frame
//	  frameAlarms   at most once, before frameEnd, only if an alarm is raised: uvarint count,
//	                then per alarm in (member, type) order: member, type byte. Added after the
//	                others: a snapshot without alarms is the same as before it existed.
//	  frameAuth     at most once, before frameEnd, only once the auth state changed: see
//	                auth_snapshot.go. Added last, as frameAlarms.
//
// Attachments of keys to leases and the key index are derived from the records.
const (
	snapshotMagic   = "EMBERSN1"
	snapshotVersion = 1

	frameHeader  byte = 1
	frameRecords byte = 2
	frameLeases  byte = 3
	frameDedup   byte = 4
	frameEnd     byte = 5
	frameAlarms  byte = 6
	frameAuth    byte = 7

	frameTarget   = 64 << 10  // flush a frame once its payload passes this size
	maxFrameBytes = 256 << 20 // a larger frame is corruption
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type snapshotWriter struct {
	w   *bufio.Writer
	crc hash.Hash32
	e   wire.Encoder
	n   int // items in the pending frame
	err error
}

func (sw *snapshotWriter) write(b []byte) {
	if sw.err != nil {
		return
	}
	sw.crc.Write(b)
	_, sw.err = sw.w.Write(b)
}

func (sw *snapshotWriter) frame(typ byte, payload []byte) {
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = typ
	n := binary.PutUvarint(hdr[1:], uint64(len(payload)))
	sw.write(hdr[:1+n])
	sw.write(payload)
}

// flushBatch writes the items encoded into sw.e as one frame once it is big enough (or force).
func (sw *snapshotWriter) flushBatch(typ byte, force bool) {
	if sw.n == 0 || (!force && len(sw.e.B) < frameTarget) {
		return
	}
	cnt := wire.Encoder{}
	cnt.Uvarint(uint64(sw.n))
	sw.frame(typ, append(cnt.B, sw.e.B...))
	sw.e.B = sw.e.B[:0]
	sw.n = 0
}

// record encodes r unless compaction drops it; nextMod is the revision of its key's next
// version (0 for the newest).
func (sw *snapshotWriter) record(st *State, r *Record, nextMod int64) {
	if st.obsolete(r.Mod, r.Tombstone(), nextMod) {
		return
	}
	sw.e.String(r.Key)
	sw.e.Varint(r.Mod)
	sw.e.Varint(int64(r.Sub))
	sw.e.Varint(r.Create)
	sw.e.Varint(r.Version)
	sw.e.Varint(r.Lease)
	sw.e.Bool(r.Tombstone())
	value, ok := st.valueOf(r)
	if !ok && sw.err == nil {
		sw.err = errValueMissing(r)
	}
	sw.e.String(value)
	sw.n++
	sw.flushBatch(frameRecords, false)
}

// writeSnapshot streams st to w. It only reads st, which is a private copy: a pinned one (Pin) if
// it has a backend.
func WriteSnapshot(w io.Writer, st *State, applied uint64) error {
	sw := &snapshotWriter{w: bufio.NewWriterSize(w, 256<<10), crc: crc32.New(castagnoli)}
	sw.write([]byte(snapshotMagic))
	h := wire.Encoder{}
	h.Uvarint(snapshotVersion)
	h.Uvarint(applied)
	h.Varint(st.rev)
	h.Varint(st.compactRev)
	sw.frame(frameHeader, h.B)

	// Records a pending removal has not reached yet are left out, so that the snapshot is the
	// same whenever it is taken, and a restored state has nothing pending.
	if !st.eachVersion(func(r *Record, nextMod int64) bool {
		sw.record(st, r, nextMod)
		return sw.err == nil
	}) && sw.err == nil {
		return fmt.Errorf("%w: a version of the state is missing from its backend", ErrCorrupt)
	}
	sw.flushBatch(frameRecords, true)
	st.leases.Scan(func(l *Lease) bool {
		sw.e.Varint(l.ID)
		sw.e.Varint(l.TTL)
		sw.e.Varint(l.RemainingMs)
		sw.n++
		sw.flushBatch(frameLeases, false)
		return sw.err == nil
	})
	sw.flushBatch(frameLeases, true)
	st.dedup.Scan(func(d *DedupEntry) bool {
		sw.e.Uint64(d.ID.Client)
		sw.e.Uint64(d.ID.Seq)
		sw.e.Uvarint(d.Index)
		sw.e.Bytes(d.Result)
		sw.n++
		sw.flushBatch(frameDedup, false)
		return sw.err == nil
	})
	sw.flushBatch(frameDedup, true)
	for _, a := range st.alarms {
		sw.e.String(a.Member)
		sw.e.Byte(a.Type)
		sw.n++
	}
	sw.flushBatch(frameAlarms, true)
	writeAuth(sw, st)
	if sw.err != nil {
		return sw.err
	}
	var end [4]byte
	binary.BigEndian.PutUint32(end[:], sw.crc.Sum32())
	sw.frame(frameEnd, end[:])
	if sw.err != nil {
		return sw.err
	}
	return sw.w.Flush()
}

// ErrCorrupt wraps every decoding failure: a damaged snapshot is refused, never half-loaded. It
// is ember.ErrCorrupt (internal/corrupt).
var ErrCorrupt = corrupt.Err

func errSnapshot(format string, args ...any) error {
	return fmt.Errorf("%w: snapshot: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// readSnapshot decodes a snapshot stream into a fresh state that holds every value in memory.
func ReadSnapshot(r io.Reader) (*State, uint64, error) { return ReadSnapshotTo(r, nil) }

// restoreBatchBytes bounds the stored values a restore holds in memory before writing them to
// the backend.
const restoreBatchBytes = 8 << 20

// ReadSnapshotTo decodes a snapshot stream into a fresh state held in b, an empty backend (nil:
// in memory only), committing as it goes; the caller commits the last part with the index.
// On failure b holds garbage: discard it.
func ReadSnapshotTo(r io.Reader, b *Backend) (*State, uint64, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	crc := crc32.New(castagnoli)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return nil, 0, errSnapshot("bad magic")
	}
	crc.Write(magic)
	st := NewOnDisk(b)
	pendingBytes := 0
	var applied uint64
	var sawHeader bool
	var last *Record
	var lastLease int64
	var sawAlarms bool
	var sawLease bool      // lease IDs may be negative: lastLease means nothing before the first
	var positions []revPos // of the versions, to refuse two at one revision, without a revs tree
	for {
		sum := crc.Sum32()
		typ, payload, err := readFrame(br, crc)
		if err != nil {
			return nil, 0, err
		}
		if typ == frameEnd {
			if len(payload) != 4 || binary.BigEndian.Uint32(payload) != sum {
				return nil, 0, errSnapshot("checksum mismatch")
			}
			if _, err := br.ReadByte(); err != io.EOF {
				return nil, 0, errSnapshot("data after the end frame")
			}
			break
		}
		if !sawHeader && typ != frameHeader || sawHeader && typ == frameHeader {
			return nil, 0, errSnapshot("header frame missing or repeated")
		}
		d := wire.NewDecoder(payload)
		switch typ {
		case frameHeader:
			sawHeader = true
			if v := d.Uvarint(); v != snapshotVersion {
				return nil, 0, errSnapshot("format version %d, want %d", v, snapshotVersion)
			}
			applied = d.Uvarint()
			st.rev, st.compactRev = d.Varint(), d.Varint()
			if st.rev < 1 || st.compactRev < 0 || st.compactRev > st.rev {
				return nil, 0, errSnapshot("revision %d, compact revision %d", st.rev, st.compactRev)
			}
		case frameRecords:
			n := d.Len(len(payload))
			for i := 0; i < n && d.Err() == nil; i++ {
				key, mod, sub := d.String(), d.Varint(), d.Varint()
				rec := &Record{Key: key, Mod: mod, Create: d.Varint(), Version: d.Varint(), Lease: d.Varint()}
				tombstone := d.Bool()
				value := d.String()
				if d.Err() != nil {
					break
				}
				if err := setSub(rec, sub); err != nil {
					return nil, 0, err
				}
				if err := checkTombstone(rec, tombstone); err != nil {
					return nil, 0, err
				}
				st.storeValue(rec, value)
				if err := checkRecord(rec, last, st.rev); err != nil {
					return nil, 0, err
				}
				if err := checkKept(st, last, rec); err != nil {
					return nil, 0, err
				}
				if last != nil && last.Key == rec.Key {
					// Nothing else holds last: rec, its key's newer version, takes its slice.
					rec.Key = last.Key
					rec.setOlder(append(last.older(), refOf(last)))
				} else if last != nil {
					st.keys.ReplaceOrInsert(last)
				}
				if st.revs == nil {
					positions = append(positions, revPos{rec.Mod, rec.Sub})
				} else if _, dup := st.revs.Set(rec); dup {
					return nil, 0, errSnapshot("two changes at revision %d.%d", rec.Mod, rec.Sub)
				}
				st.size += rec.Size()
				last = rec
				if pendingBytes += len(rec.Key) + len(value) + recordOverhead; pendingBytes >= restoreBatchBytes {
					if err := st.syncRestored(); err != nil {
						return nil, 0, err
					}
					pendingBytes = 0
				}
			}
		case frameLeases:
			n := d.Len(len(payload))
			for i := 0; i < n && d.Err() == nil; i++ {
				l := &Lease{ID: d.Varint(), TTL: d.Varint(), RemainingMs: d.Varint()}
				if d.Err() != nil {
					break
				}
				if l.ID == 0 || (sawLease && l.ID <= lastLease) || l.TTL < 0 || l.RemainingMs < 0 {
					return nil, 0, errSnapshot("lease %d out of order or invalid", l.ID)
				}
				lastLease, sawLease = l.ID, true
				st.leases.Load(l)
			}
		case frameDedup:
			n := d.Len(len(payload))
			for i := 0; i < n && d.Err() == nil; i++ {
				e := &DedupEntry{ID: wire.RequestID{Client: d.Uint64(), Seq: d.Uint64()}, Index: d.Uvarint()}
				b := d.Bytes()
				if d.Err() != nil {
					break
				}
				if _, err := wire.UnmarshalResult(b); err != nil {
					return nil, 0, errSnapshot("dedup result: %v", err)
				}
				e.Result = b
				st.dedup.Set(e)
			}
		case frameAlarms:
			if sawAlarms {
				return nil, 0, errSnapshot("alarm frame repeated")
			}
			sawAlarms = true
			n := d.Len(len(payload))
			for i := 0; i < n && d.Err() == nil; i++ {
				a := Alarm{Member: d.String(), Type: d.Byte()}
				if d.Err() != nil {
					break
				}
				if a.Member == "" || a.Type != wire.AlarmNoSpace && a.Type != wire.AlarmCorrupt ||
					len(st.alarms) > 0 && compareAlarms(st.alarms[len(st.alarms)-1], a) >= 0 {
					return nil, 0, errSnapshot("alarm %+v out of order or invalid", a)
				}
				st.alarms = append(st.alarms, a)
			}
		case frameAuth:
			if err := readAuth(st, d); err != nil {
				return nil, 0, err
			}
		default:
			return nil, 0, errSnapshot("unknown frame type %d", typ)
		}
		if err := d.Finish(); err != nil {
			return nil, 0, errSnapshot("frame %d: %v", typ, err)
		}
	}
	if !sawHeader {
		return nil, 0, errSnapshot("no header")
	}
	if err := checkKept(st, last, nil); err != nil {
		return nil, 0, err
	}
	if last != nil {
		st.keys.ReplaceOrInsert(last)
	}
	slices.SortFunc(positions, revPos.compare)
	for i := 1; i < len(positions); i++ {
		if positions[i] == positions[i-1] {
			return nil, 0, errSnapshot("two changes at revision %d.%d", positions[i].mod, positions[i].sub)
		}
	}
	if err := deriveIndexes(st); err != nil {
		return nil, 0, err
	}
	if st.backend != nil {
		st.markTablesOf(st)
		if err := st.syncRestored(); err != nil {
			return nil, 0, err
		}
	}
	return st, applied, nil
}

func readFrame(br *bufio.Reader, crc hash.Hash32) (byte, []byte, error) {
	typ, err := br.ReadByte()
	if err != nil {
		return 0, nil, errSnapshot("truncated (no end frame)")
	}
	crc.Write([]byte{typ})
	n, err := binary.ReadUvarint(br)
	if err != nil || n > maxFrameBytes {
		return 0, nil, errSnapshot("bad frame length")
	}
	var lb [binary.MaxVarintLen64]byte
	crc.Write(lb[:binary.PutUvarint(lb[:], n)])
	// Grow with the data actually read: a corrupt length must not allocate up front.
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, br, int64(n)); err != nil {
		return 0, nil, errSnapshot("truncated frame")
	}
	payload := buf.Bytes()
	crc.Write(payload)
	return typ, payload, nil
}

// checkRecord rejects records that no state machine could have produced, and records out of
// (key, revision) order.
func checkRecord(r, last *Record, rev int64) error {
	switch {
	case r.Key == "":
		return errSnapshot("empty key")
	case r.Mod < 1 || r.Mod > rev:
		return errSnapshot("key %q: revision %d outside [1, %d]", r.Key, r.Mod, rev)
	case r.Tombstone() && (r.Create != 0 || r.Lease != 0 || r.ValueLen() != 0):
		return errSnapshot("key %q: tombstone with data", r.Key)
	case !r.Tombstone() && (r.Create < 1 || r.Create > r.Mod || r.Version < 1):
		return errSnapshot("key %q: bad create revision or version", r.Key)
	}
	if last != nil && !(last.Key < r.Key || last.Key == r.Key && (last.Mod < r.Mod || last.Mod == r.Mod && last.Sub < r.Sub)) {
		return errSnapshot("key %q out of order", r.Key)
	}
	return nil
}

// setSub sets r's sub revision to sub, decoded from a snapshot or a backend: a revision holds
// fewer than 2³¹ changes, so a sub outside [0, 2³¹) is damage.
func setSub(r *Record, sub int64) error {
	if sub < 0 || sub > math.MaxInt32 {
		return errSnapshot("key %q: sub revision %d outside [0, %d]", r.Key, sub, math.MaxInt32)
	}
	r.Sub = int32(sub)
	return nil
}

// checkTombstone checks a decoded record's tombstone flag against its version, which makes it
// one: a tombstone has version 0, a put at least 1.
func checkTombstone(r *Record, tombstone bool) error {
	switch {
	case tombstone && r.Version != 0:
		return errSnapshot("key %q: tombstone with data", r.Key)
	case !tombstone && r.Version < 1:
		return errSnapshot("key %q: bad create revision or version", r.Key)
	}
	return nil
}

// checkKept rejects prev, the record before next in (key, revision) order (next nil after the
// last), if compaction at the header's compact revision drops it: WriteSnapshot leaves such
// records out, so a snapshot holding one was not written by a member, and restoring it would
// keep versions no other member holds (a different size and HashKV).
func checkKept(st *State, prev, next *Record) error {
	if prev == nil {
		return nil
	}
	if next != nil && next.Key != prev.Key {
		next = nil
	}
	var nextMod int64
	if next != nil {
		nextMod = next.Mod
	}
	if st.obsolete(prev.Mod, prev.Tombstone(), nextMod) {
		return errSnapshot("key %q: version at revision %d is compacted (compact revision %d)", prev.Key, prev.Mod, st.compactRev)
	}
	return nil
}

// deriveIndexes counts the live keys and the versions, and rebuilds the lease attachments, from
// the key index.
func deriveIndexes(st *State) error {
	var missing error
	st.liveKeys, st.versions = 0, 0
	st.keys.Ascend(func(r *Record) bool {
		st.versions += 1 + len(r.older())
		if r.Tombstone() {
			return true
		}
		st.liveKeys++
		if r.Lease != 0 {
			if _, ok := st.leases.Get(&Lease{ID: r.Lease}); !ok && missing == nil {
				missing = errSnapshot("key %q attached to unknown lease %d", r.Key, r.Lease)
			}
			st.leaseKeys.Set(leaseKey{r.Lease, r.Key})
		}
		return true
	})
	return missing
}
