package raftlog

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"

	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// raft-wal v0.4.0 checks only what its tail recovery needs: the checksum of the last batch of
// the tail segment, whose damage it cuts off together with everything after it, and the headers
// of sealed segments. A bit flip anywhere else goes unnoticed on open, and a flip in the tail
// shortens the log silently. ember therefore reads every segment once on open and applies
// etcd's rule: a batch torn by a crash at the very end of the tail segment is cut, any other
// damage is refused with ErrCorrupt. The format below is raft-wal's segment format (its
// segment/format.go), which v0.4.0 does not export.
const (
	walFileHeaderLen  = 32
	walFrameHeaderLen = 8
	walMagic          = 0x58eb6b0d
	walFrameEntry     = 1
	walFrameIndex     = 2
	walFrameCommit    = 3
	// walTornStarts bounds how many candidate batch starts the torn-tail check follows at once.
	walTornStarts = 16
)

var walCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// walScan is what verifying a segment found.
type walScan struct {
	entries int   // entries in batches whose checksums hold
	good    int64 // offset just past the last such batch
	sealed  bool  // a committed index frame (the seal) was found
}

// scanWALSegment reads r from its start and checks every batch's checksum, the entries' indexes
// (each entry's encoded index is BaseIndex plus its position) and, where present, the seal's
// index frame. It stops at the first batch that does not check out (or at zeros, where the data
// ends) and reports the valid prefix; stopAfter > 0 stops once that many entries are verified.
// An error is returned only for damage inside a batch whose checksum holds, which no crash
// produces.
func scanWALSegment(r io.ReaderAt, info types.SegmentInfo, stopAfter int) (walScan, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(r, 0, math.MaxInt64), 64<<10)
	var sc walScan
	hdr := make([]byte, walFileHeaderLen)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return sc, nil
	}
	crc := crc32.Checksum(hdr, walCastagnoli)
	var (
		off     = int64(walFileHeaderLen)
		offsets []uint32 // entry frame offsets of the whole segment (verified + pending)
		pending int      // entries in the batch under way
		index   []byte   // the index frame's payload in the batch under way
		fh      [walFrameHeaderLen]byte
		payload []byte
	)
	for {
		if _, err := io.ReadFull(br, fh[:]); err != nil {
			return sc, nil
		}
		typ, val := fh[0], binary.LittleEndian.Uint32(fh[4:])
		if fh[1]|fh[2]|fh[3] != 0 {
			return sc, nil
		}
		switch typ {
		case walFrameEntry, walFrameIndex:
			if val > segment.MaxEntrySize {
				return sc, nil
			}
			n := int(val) + (walFrameHeaderLen-int(val)%walFrameHeaderLen)%walFrameHeaderLen
			if cap(payload) < n {
				payload = make([]byte, n)
			}
			payload = payload[:n]
			if _, err := io.ReadFull(br, payload); err != nil {
				return sc, nil
			}
			crc = crc32.Update(crc32.Update(crc, walCastagnoli, fh[:]), walCastagnoli, payload)
			if typ == walFrameEntry {
				offsets = append(offsets, uint32(off))
				pending++
				if idx, k := binary.Uvarint(payload[:val]); k <= 0 || idx != info.BaseIndex+uint64(len(offsets)-1) {
					// Checked once the batch's checksum holds; mark the batch bad for now.
					offsets[len(offsets)-1] = math.MaxUint32
				}
			} else {
				index = append(index[:0], payload[:val]...)
			}
			off += int64(walFrameHeaderLen + n)
		case walFrameCommit:
			if val != crc {
				return sc, nil
			}
			for _, o := range offsets[sc.entries:] {
				if o == math.MaxUint32 {
					return sc, fmt.Errorf("%w: raft WAL segment %s: an entry's index does not follow its position", ErrCorrupt, segment.FileName(info))
				}
			}
			off += walFrameHeaderLen
			sc.entries, sc.good, pending, crc = len(offsets), off, 0, 0
			if index != nil {
				if !walIndexMatches(index, offsets) {
					return sc, fmt.Errorf("%w: raft WAL segment %s: its index frame does not match its entries", ErrCorrupt, segment.FileName(info))
				}
				sc.sealed = true
				return sc, nil
			}
			if stopAfter > 0 && sc.entries >= stopAfter {
				return sc, nil
			}
		default:
			return sc, nil
		}
	}
}

func walIndexMatches(index []byte, offsets []uint32) bool {
	if len(index) != 4*len(offsets) {
		return false
	}
	for i, o := range offsets {
		if binary.LittleEndian.Uint32(index[4*i:]) != o {
			return false
		}
	}
	return true
}

// verifySealedWALSegment refuses a sealed segment unless its header matches the metadata and
// every batch up to the seal (or up to MaxIndex, for a segment sealed by a tail truncation,
// which has no seal) checks out, holding every entry up to MaxIndex. Bytes after that are never
// read.
func verifySealedWALSegment(r io.ReaderAt, info types.SegmentInfo) error {
	name := segment.FileName(info)
	var hdr [walFileHeaderLen]byte
	if _, err := r.ReadAt(hdr[:], 0); err != nil || !walHeaderMatches(hdr[:], info) {
		return fmt.Errorf("%w: raft WAL segment %s: its header is damaged", ErrCorrupt, name)
	}
	want := 0
	if info.MaxIndex >= info.BaseIndex {
		want = int(info.MaxIndex - info.BaseIndex + 1)
	}
	stop := 0
	if info.IndexStart == 0 {
		stop = want
	}
	sc, err := scanWALSegment(r, info, stop)
	switch {
	case err != nil:
		return err
	case info.IndexStart != 0 && (!sc.sealed || sc.entries < want):
		// More entries than MaxIndex covers: a tail truncation cut into the segment after
		// its seal.
		return fmt.Errorf("%w: raft WAL segment %s: a checksum fails before its seal (%d of %d entries check out)", ErrCorrupt, name, sc.entries, want)
	case sc.entries < want:
		return fmt.Errorf("%w: raft WAL segment %s: a checksum fails at entry %d of %d", ErrCorrupt, name, info.BaseIndex+uint64(sc.entries), info.MaxIndex)
	}
	return nil
}

func walHeaderMatches(hdr []byte, info types.SegmentInfo) bool {
	return binary.LittleEndian.Uint32(hdr[0:]) == walMagic && bytes.Equal(hdr[4:8], []byte{0, 0, 0, 0}) &&
		binary.LittleEndian.Uint64(hdr[8:]) == info.BaseIndex &&
		binary.LittleEndian.Uint64(hdr[16:]) == info.ID &&
		binary.LittleEndian.Uint64(hdr[24:]) == info.Codec
}

// verifyWALTail checks the tail (unsealed) segment. It returns the valid prefix and the extent
// [from, to) of a torn last write after it (from == to when there is none): bytes that are not
// a valid batch, with no valid batch anywhere after them. Anything else after the valid prefix
// (a checksum failure followed by a valid batch) is refused with ErrCorrupt.
func verifyWALTail(r io.ReaderAt, info types.SegmentInfo) (sc walScan, from, to int64, err error) {
	name := segment.FileName(info)
	if sc, err = scanWALSegment(r, info, 0); err != nil {
		return sc, 0, 0, err
	}
	if sc.sealed {
		// A seal written by a member that stopped before recording it in the metadata:
		// raft-wal seals the segment on its next append. Nothing past the seal is ever read.
		return sc, 0, 0, nil
	}
	rest, err := readNonZeroPrefix(r, sc.good)
	if err != nil {
		return sc, 0, 0, fmt.Errorf("ember: read raft WAL segment %s: %w", name, err)
	}
	if len(rest) == 0 {
		return sc, 0, 0, nil
	}
	if p := walFindBatch(rest); p >= 0 {
		return sc, 0, 0, fmt.Errorf("%w: raft WAL segment %s: a checksum fails at offset %d and a valid batch follows at offset %d",
			ErrCorrupt, name, sc.good, sc.good+int64(p))
	}
	return sc, sc.good, sc.good + int64(len(rest)), nil
}

// readNonZeroPrefix reads r from off to its end and returns the bytes up to the last non-zero
// one (rounded up to a frame boundary).
func readNonZeroPrefix(r io.ReaderAt, off int64) ([]byte, error) {
	var out []byte
	buf, zeros := make([]byte, 1<<20), make([]byte, 1<<20)
	for pos := off; ; {
		n, err := r.ReadAt(buf, pos)
		// Mostly the unused rest of a preallocated tail: compare it whole first, which is fast.
		if !bytes.Equal(buf[:n], zeros[:n]) {
			out = append(out, make([]byte, pos-off-int64(len(out)))...)
			out = append(out, buf[:lastNonZero(buf[:n])+1]...)
		}
		pos += int64(n)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if err != nil || n == 0 {
			break
		}
	}
	if pad := len(out) % walFrameHeaderLen; pad != 0 {
		out = append(out, make([]byte, walFrameHeaderLen-pad)...)
	}
	return out, nil
}

func lastNonZero(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0 {
			return i
		}
	}
	return -1
}

// walFindBatch looks for a valid batch in b, the bytes after a tail's valid prefix: a commit
// frame whose checksum matches the bytes since a possible batch start (b's start, or the end of
// an earlier commit-like frame). It returns the commit frame's offset, or -1. A crash leaves at
// most one partial batch there, whose checksum cannot match; a valid batch means the bytes
// before it were damaged after they were written.
func walFindBatch(b []byte) int {
	type start struct {
		at  int
		crc uint32 // of b[at:upto]
	}
	starts := []start{{at: 0}}
	upto := 0
	for p := 0; p+walFrameHeaderLen <= len(b); p += walFrameHeaderLen {
		if b[p] != walFrameCommit || b[p+1]|b[p+2]|b[p+3] != 0 {
			continue
		}
		want := binary.LittleEndian.Uint32(b[p+4:])
		for i := range starts {
			from := max(starts[i].at, upto)
			starts[i].crc = crc32.Update(starts[i].crc, walCastagnoli, b[from:p])
			if p > starts[i].at && starts[i].crc == want {
				return p
			}
		}
		upto = p
		starts = append(starts, start{at: p + walFrameHeaderLen})
		if len(starts) > walTornStarts+1 {
			// Keep b's start and the most recent candidates.
			starts = append(starts[:1], starts[2:]...)
		}
	}
	return -1
}
