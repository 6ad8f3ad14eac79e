package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
)

// walSoakStride is how many bytes apart the recovery tests damage a segment: every byte with
// EMBER_SOAK=1, every ci-th byte otherwise (a stride prime to the 8-byte frame size still damages
// every field of the frames somewhere).
func walSoakStride(ci int) int {
	if os.Getenv("EMBER_SOAK") == "1" {
		return 1
	}
	return ci
}

// walTestSegSize keeps the recovery tests' segments small, so that every byte of one can be
// damaged in turn.
const walTestSegSize = 2048

// walTestLog is a WAL written by the recovery tests: its entries and segment files.
type walTestLog struct {
	dir     string
	entries []*raft.Log
	segs    []string // segment files, oldest first; the last is the tail
}

// writeWALTestLog writes entries in batches of one to three until the log spans at least three
// sealed segments and the tail holds at least six batches.
func writeWALTestLog(t testing.TB) *walTestLog {
	t.Helper()
	l := &walTestLog{dir: t.TempDir()}
	st := openWALTest(t, l.dir)
	for batch := 0; ; batch++ {
		var logs []*raft.Log
		for range batch%3 + 1 {
			i := uint64(len(l.entries) + len(logs) + 1)
			logs = append(logs, &raft.Log{Index: i, Term: 1 + i/50, Type: raft.LogCommand,
				Data: []byte(fmt.Sprintf("entry %04d %s", i, bytes.Repeat([]byte{byte(i)}, int(i%23))))})
		}
		if err := st.Logs.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		l.entries = append(l.entries, logs...)
		l.segs = walSegmentFiles(t, l.dir)
		if len(l.segs) >= 4 && len(walBatchEnds(readFile(t, l.segs[len(l.segs)-1]))) >= 6 {
			break
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return l
}

func openWALTest(t testing.TB, dir string) *Log {
	t.Helper()
	st, err := openWALLog(dir, walfs.New(), hclog.NewNullLogger(), walTestSegSize)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func walSegmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, WALDir, "*.wal"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(segs) // named by base index, zero-padded
	return segs
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// walBatchEnds returns the offsets just past each commit frame of a segment file.
func walBatchEnds(b []byte) []int {
	var ends []int
	for off := walFileHeaderLen; off+walFrameHeaderLen <= len(b); {
		typ, n := b[off], int(binary.LittleEndian.Uint32(b[off+4:]))
		switch typ {
		case walFrameEntry, walFrameIndex:
			off += walFrameHeaderLen + n + (8-n%8)%8
		case walFrameCommit:
			off += walFrameHeaderLen
			ends = append(ends, off)
		default:
			return ends
		}
	}
	return ends
}

// reopen opens the log's dir and returns how many of its entries it serves: -1 when the open
// is refused with ErrCorrupt. Entries served must be exactly a prefix of those written, from the
// first: anything else fails the test.
func (l *walTestLog) reopen(t testing.TB) int {
	t.Helper()
	st, err := openWALLog(l.dir, walfs.New(), hclog.NewNullLogger(), walTestSegSize)
	if errors.Is(err, ErrCorrupt) {
		return -1
	}
	if err != nil {
		t.Fatalf("open: %v, want success or ErrCorrupt", err)
	}
	defer st.Close()
	first, err := st.Logs.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.Logs.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first != 1 || last > uint64(len(l.entries)) {
		t.Fatalf("log serves [%d, %d], want a prefix of [1, %d]", first, last, len(l.entries))
	}
	for i := first; i <= last; i++ {
		var got raft.Log
		if err := st.Logs.GetLog(i, &got); err != nil {
			t.Fatalf("entry %d of %d: %v", i, last, err)
		}
		want := l.entries[i-1]
		if got.Index != want.Index || got.Term != want.Term || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("entry %d reads back as %d/%d/%q, want %q", i, got.Index, got.Term, got.Data, want.Data)
		}
	}
	return int(last)
}

// Every byte of a sealed segment flipped in turn (every 7th byte, every byte with EMBER_SOAK=1):
// the open is refused with ErrCorrupt, or the whole log reads back intact (a byte past the seal
// is never read). Never a shorter log.
func TestWALRecovery_SealedSegmentByteFlips(t *testing.T) {
	l := writeWALTestLog(t)
	seg := l.segs[1]
	orig := readFile(t, seg)
	step := walSoakStride(7)
	refused := 0
	for i := 0; i < len(orig); i += step {
		b := bytes.Clone(orig)
		b[i] ^= 0x01 << (i % 8)
		writeFile(t, seg, b)
		switch n := l.reopen(t); n {
		case -1:
			refused++
		case len(l.entries):
		default:
			t.Fatalf("byte %d flipped: the log serves %d of %d entries", i, n, len(l.entries))
		}
		writeFile(t, seg, orig)
	}
	if refused == 0 {
		t.Fatal("no flipped byte was refused")
	}
	if n := l.reopen(t); n != len(l.entries) {
		t.Fatalf("restored log serves %d of %d entries", n, len(l.entries))
	}
}

// Every byte (every 3rd; all with EMBER_SOAK=1) of the tail segment before its last two batches
// flipped in turn: refused with ErrCorrupt or read back intact, never a shorter log. (Damage to
// the last batches cannot be told from a write torn by a crash, which is cut.)
func TestWALRecovery_TailMiddleByteFlips(t *testing.T) {
	l := writeWALTestLog(t)
	tail := l.segs[len(l.segs)-1]
	orig := readFile(t, tail)
	ends := walBatchEnds(orig)
	middle := ends[len(ends)-3] // the last two batches follow
	step := walSoakStride(3)
	refused := 0
	for i := 0; i < middle; i += step {
		b := bytes.Clone(orig)
		b[i] ^= 0x80 >> (i % 8)
		writeFile(t, tail, b)
		switch n := l.reopen(t); n {
		case -1:
			refused++
		case len(l.entries):
		default:
			t.Fatalf("byte %d of %d flipped: the log serves %d of %d entries", i, middle, n, len(l.entries))
		}
		writeFile(t, tail, orig)
	}
	if refused == 0 {
		t.Fatal("no flipped byte was refused")
	}
}

// A crash cuts the last write short: the tail segment truncated, or its end zeroed (what a
// preallocated file shows), at every offset (a sample in CI, all with EMBER_SOAK=1) opens with
// every batch completed before the cut.
func TestWALRecovery_TornTailEveryOffset(t *testing.T) {
	l := writeWALTestLog(t)
	tail := l.segs[len(l.segs)-1]
	orig := readFile(t, tail)
	ends := walBatchEnds(orig)
	end := ends[len(ends)-1]
	// Entries in the tail's complete batches: those before it, plus one per entry frame.
	before := len(l.entries) - walEntryFrames(orig, end)
	// Strides prime to the frame size, which still cut each frame field somewhere: a short one
	// in the last batch, a longer one before it.
	lastStart, lastStep, step := ends[len(ends)-2], walSoakStride(3), walSoakStride(13)
	for _, cut := range []struct {
		name string
		cut  func(b []byte, off int) []byte
	}{
		{"truncated", func(b []byte, off int) []byte { return b[:off] }},
		{"zeroed", func(b []byte, off int) []byte { clear(b[off:]); return b }},
	} {
		t.Run(cut.name, func(t *testing.T) {
			for off := 0; off < end; off++ {
				stride := lastStep
				if off < lastStart {
					stride = step
				}
				if off%stride != 0 {
					continue
				}
				writeFile(t, tail, cut.cut(bytes.Clone(orig), off))
				n := l.reopen(t)
				want := before + walEntryFrames(orig, lastEndBefore(ends, off))
				if n < want {
					t.Fatalf("cut at %d: the log serves %d entries, want at least the %d completed before the cut", off, n, want)
				}
				writeFile(t, tail, orig)
			}
		})
	}
}

// walEntryFrames counts the entry frames of a segment file before offset end.
func walEntryFrames(b []byte, end int) int {
	n := 0
	for off := walFileHeaderLen; off < end; {
		typ, ln := b[off], int(binary.LittleEndian.Uint32(b[off+4:]))
		switch typ {
		case walFrameEntry:
			n++
			fallthrough
		case walFrameIndex:
			off += walFrameHeaderLen + ln + (8-ln%8)%8
		default:
			off += walFrameHeaderLen
		}
	}
	return n
}

// lastEndBefore is the end of the last batch completed at or before off (0 if none).
func lastEndBefore(ends []int, off int) int {
	e := 0
	for _, x := range ends {
		if x <= off {
			e = x
		}
	}
	return e
}

func TestWALRecovery_Refused(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, l *walTestLog)
	}{
		{"middle segment deleted", func(t *testing.T, l *walTestLog) {
			if err := os.Remove(l.segs[1]); err != nil {
				t.Fatal(err)
			}
		}},
		{"sealed segment truncated", func(t *testing.T, l *walTestLog) {
			b := readFile(t, l.segs[1])
			writeFile(t, l.segs[1], b[:walBatchEnds(b)[1]])
		}},
		{"gap in the segment list", func(t *testing.T, l *walTestLog) {
			meta := &metadb.BoltMetaDB{}
			path := filepath.Join(l.dir, WALDir)
			st, err := meta.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			st.Segments = append(st.Segments[:1], st.Segments[2:]...)
			if err := meta.CommitState(st); err != nil {
				t.Fatal(err)
			}
			if err := meta.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"tail checksum failure followed by valid batches", func(t *testing.T, l *walTestLog) {
			tail := l.segs[len(l.segs)-1]
			b := readFile(t, tail)
			b[walBatchEnds(b)[0]-12] ^= 0xff // in the first batch's last entry
			writeFile(t, tail, b)
		}},
		{"tail header damaged", func(t *testing.T, l *walTestLog) {
			tail := l.segs[len(l.segs)-1]
			b := readFile(t, tail)
			b[9] ^= 0xff // its base index
			writeFile(t, tail, b)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := writeWALTestLog(t)
			tt.damage(t, l)
			if n := l.reopen(t); n != -1 {
				t.Fatalf("the damaged log opened serving %d of %d entries, want ErrCorrupt", n, len(l.entries))
			}
		})
	}
}

// A conflicting suffix removed from the log back into a sealed segment (raft's tail truncation):
// the segment keeps entries past its new MaxIndex, and the log opens with the ones before.
func TestWALRecovery_TailTruncatedIntoSealedSegment(t *testing.T) {
	l := writeWALTestLog(t)
	st := openWALTest(t, l.dir)
	cut := l.entries[len(l.entries)/4].Index // inside the second segment
	if err := st.Logs.DeleteRange(cut, uint64(len(l.entries))); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	l.entries = l.entries[:cut-1]
	if n := l.reopen(t); n != len(l.entries) {
		t.Fatalf("the log serves %d entries, want %d", n, len(l.entries))
	}
}

// A torn tail is cut on the first open and stays cut: appends after it, and later opens, see
// one consistent log.
func TestWALRecovery_TornTailThenAppend(t *testing.T) {
	l := writeWALTestLog(t)
	tail := l.segs[len(l.segs)-1]
	b := readFile(t, tail)
	ends := walBatchEnds(b)
	// Tear the last batch: its first half written, the rest not.
	last := ends[len(ends)-2]
	l.entries = l.entries[:len(l.entries)-walEntryFrames(b, ends[len(ends)-1])+walEntryFrames(b, last)]
	clear(b[(last+ends[len(ends)-1])/2:])
	writeFile(t, tail, b)
	if n := l.reopen(t); n != len(l.entries) {
		t.Fatalf("after the torn write, the log serves %d entries, want %d", n, len(l.entries))
	}
	st := openWALTest(t, l.dir)
	more := &raft.Log{Index: uint64(len(l.entries) + 1), Term: 9, Type: raft.LogCommand, Data: []byte("after the tear")}
	if err := st.Logs.StoreLogs([]*raft.Log{more}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	l.entries = append(l.entries, more)
	if n := l.reopen(t); n != len(l.entries) {
		t.Fatalf("after an append past the tear, the log serves %d entries, want %d", n, len(l.entries))
	}
}

// BenchmarkWALOpen measures opening a WAL of one full sealed 64 MiB segment and a tail segment
// half full, which Open reads in full to verify them.
func BenchmarkWALOpen(b *testing.B) {
	dir := b.TempDir()
	st, err := openWALLog(dir, walfs.New(), hclog.NewNullLogger(), 0)
	if err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte("x"), 4096)
	for i := uint64(1); i <= 24<<10; i += 256 {
		logs := make([]*raft.Log, 256)
		for j := range logs {
			logs[j] = &raft.Log{Index: i + uint64(j), Term: 1, Type: raft.LogCommand, Data: data}
		}
		if err := st.Logs.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	if n := len(walSegmentFiles(b, dir)); n != 2 {
		b.Fatalf("%d segments, want 2", n)
	}
	for b.Loop() {
		st, err := openWALLog(dir, walfs.New(), hclog.NewNullLogger(), 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
