package ember

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"

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
//	                one with wire.CodeResultNotHeld; see dedupShortResult)
//	  frameEnd      once, last: uint32 CRC-32C of every byte before this frame
//
// Attachments of keys to leases and the latest-version index are derived from the records.
const (
	snapshotMagic   = "EMBERSN1"
	snapshotVersion = 1

	frameHeader  byte = 1
	frameRecords byte = 2
	frameLeases  byte = 3
	frameDedup   byte = 4
	frameEnd     byte = 5

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

// record encodes r unless compaction drops it; after is the record following r in history.
func (sw *snapshotWriter) record(st *mvccState, r, after *record) {
	var next *record
	if after != nil && after.key == r.key {
		next = after
	}
	if st.obsolete(r, next) {
		return
	}
	sw.e.String(r.key)
	sw.e.Varint(r.mod)
	sw.e.Varint(r.sub)
	sw.e.Varint(r.create)
	sw.e.Varint(r.version)
	sw.e.Varint(r.lease)
	sw.e.Bool(r.tombstone)
	sw.e.String(r.value)
	sw.n++
	sw.flushBatch(frameRecords, false)
}

// writeSnapshot streams st to w. It only reads st, which is a private copy.
func writeSnapshot(w io.Writer, st *mvccState, applied uint64) error {
	sw := &snapshotWriter{w: bufio.NewWriterSize(w, 256<<10), crc: crc32.New(castagnoli)}
	sw.write([]byte(snapshotMagic))
	h := wire.Encoder{}
	h.Uvarint(snapshotVersion)
	h.Uvarint(applied)
	h.Varint(st.rev)
	h.Varint(st.compactRev)
	sw.frame(frameHeader, h.B)

	// Records a pending removal has not reached yet are left out, so that the snapshot is the
	// same whenever it is taken, and a restored state has nothing pending. A record is decided
	// once the next one (in key, revision order) shows whether its key changed again.
	var held *record
	st.history.Scan(func(r *record) bool {
		if held != nil {
			sw.record(st, held, r)
		}
		held = r
		return sw.err == nil
	})
	if held != nil {
		sw.record(st, held, nil)
	}
	sw.flushBatch(frameRecords, true)
	st.leases.Scan(func(l *leaseRecord) bool {
		sw.e.Varint(l.id)
		sw.e.Varint(l.ttl)
		sw.e.Varint(l.remainingMs)
		sw.n++
		sw.flushBatch(frameLeases, false)
		return sw.err == nil
	})
	sw.flushBatch(frameLeases, true)
	st.dedup.Scan(func(d *dedupEntry) bool {
		sw.e.Uint64(d.id.Client)
		sw.e.Uint64(d.id.Seq)
		sw.e.Uvarint(d.index)
		sw.e.Bytes(d.result)
		sw.n++
		sw.flushBatch(frameDedup, false)
		return sw.err == nil
	})
	sw.flushBatch(frameDedup, true)
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

// errSnapshot wraps every decoding failure: a damaged snapshot is refused, never half-loaded.
func errSnapshot(format string, args ...any) error {
	return fmt.Errorf("%w: snapshot: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// readSnapshot decodes a snapshot stream into a fresh state.
func readSnapshot(r io.Reader) (*mvccState, uint64, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	crc := crc32.New(castagnoli)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return nil, 0, errSnapshot("bad magic")
	}
	crc.Write(magic)
	st := newMVCCState()
	var applied uint64
	var sawHeader bool
	var last *record
	var lastLease int64
	var sawLease bool // lease IDs may be negative: lastLease means nothing before the first
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
				rec := &record{key: d.String(), mod: d.Varint(), sub: d.Varint(), create: d.Varint(),
					version: d.Varint(), lease: d.Varint(), tombstone: d.Bool(), value: d.String()}
				if d.Err() != nil {
					break
				}
				if err := checkRecord(rec, last, st.rev); err != nil {
					return nil, 0, err
				}
				st.history.Load(rec)
				if _, dup := st.revs.Set(rec); dup {
					return nil, 0, errSnapshot("two changes at revision %d.%d", rec.mod, rec.sub)
				}
				st.size += rec.size()
				last = rec
			}
		case frameLeases:
			n := d.Len(len(payload))
			for i := 0; i < n && d.Err() == nil; i++ {
				l := &leaseRecord{id: d.Varint(), ttl: d.Varint(), remainingMs: d.Varint()}
				if d.Err() != nil {
					break
				}
				if l.id == 0 || (sawLease && l.id <= lastLease) || l.ttl < 0 || l.remainingMs < 0 {
					return nil, 0, errSnapshot("lease %d out of order or invalid", l.id)
				}
				lastLease, sawLease = l.id, true
				st.leases.Load(l)
			}
		case frameDedup:
			n := d.Len(len(payload))
			for i := 0; i < n && d.Err() == nil; i++ {
				e := &dedupEntry{id: wire.RequestID{Client: d.Uint64(), Seq: d.Uint64()}, index: d.Uvarint()}
				b := d.Bytes()
				if d.Err() != nil {
					break
				}
				if _, err := wire.UnmarshalResult(b); err != nil {
					return nil, 0, errSnapshot("dedup result: %v", err)
				}
				e.result = b
				st.dedup.Set(e)
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
	if err := deriveIndexes(st); err != nil {
		return nil, 0, err
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
func checkRecord(r, last *record, rev int64) error {
	switch {
	case r.key == "":
		return errSnapshot("empty key")
	case r.mod < 1 || r.mod > rev || r.sub < 0:
		return errSnapshot("key %q: revision %d outside [1, %d]", r.key, r.mod, rev)
	case r.tombstone && (r.create != 0 || r.version != 0 || r.lease != 0 || r.value != ""):
		return errSnapshot("key %q: tombstone with data", r.key)
	case !r.tombstone && (r.create < 1 || r.create > r.mod || r.version < 1):
		return errSnapshot("key %q: bad create revision or version", r.key)
	}
	if last != nil && !(last.key < r.key || last.key == r.key && (last.mod < r.mod || last.mod == r.mod && last.sub < r.sub)) {
		return errSnapshot("key %q out of order", r.key)
	}
	return nil
}

// deriveIndexes rebuilds the latest-version tree and the lease attachments from history.
func deriveIndexes(st *mvccState) error {
	var latest []*record
	st.history.Scan(func(r *record) bool {
		if n := len(latest); n > 0 && latest[n-1].key == r.key {
			latest[n-1] = r
		} else {
			latest = append(latest, r)
		}
		return true
	})
	var missing error
	for _, r := range latest {
		if r.tombstone {
			continue
		}
		st.latest.Load(r)
		if r.lease != 0 {
			if _, ok := st.leases.Get(&leaseRecord{id: r.lease}); !ok {
				missing = errSnapshot("key %q attached to unknown lease %d", r.key, r.lease)
			}
			st.leaseKeys.Set(leaseKey{r.lease, r.key})
		}
	}
	return missing
}

// sortDedup orders dedup references by apply index, the order they expire in.
func sortDedup(refs []dedupRef) {
	slices.SortFunc(refs, func(a, b dedupRef) int {
		switch {
		case a.index < b.index:
			return -1
		case a.index > b.index:
			return 1
		}
		return 0
	})
}
