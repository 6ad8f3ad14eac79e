// Package boltcheck validates the structure of a bbolt file before bbolt opens it. bbolt trusts
// its file: on open it walks every page reachable from the meta page to rebuild the freelist
// (ember sets NoFreelistSync), and it reports what that walk finds wrong by panicking in a
// goroutine of its own, or reads past the end of a truncated file through its mmap and takes a
// SIGBUS; either kills the host process. Check reads the same pages with ReadAt and checks what
// that walk relies on, so that ember can refuse a damaged file with ErrCorrupt instead.
//
// The format (bbolt v1.4, little endian): pages of meta.pageSize bytes, each with a 16-byte
// header (id u64, flags u16, count u16, overflow u32) and spanning overflow+1 pages. Pages 0
// and 1 are meta pages; the valid one with the higher txid is current. Its root bucket is a
// B+tree of branch pages (elements: pos u32, ksize u32, child pgid u64) over leaf pages
// (elements: flags u32, pos u32, ksize u32, vsize u32), with pos counted from the element; a
// leaf value flagged as a bucket holds (root pgid u64, sequence u64) and, when root is 0, the
// bucket's single leaf page inline.
package boltcheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

const (
	boltMagic          = 0xED0CDAED
	boltVersion        = 2
	boltPageHeaderSize = 16
	boltElementSize    = 16
	boltBranchPage     = 0x01
	boltLeafPage       = 0x02
	boltFreelistPage   = 0x10
	boltBucketLeaf     = 0x01
	boltNoFreelist     = ^uint64(0)
	boltMaxDepth       = 64 // far beyond any real tree; bounds the walk on a cyclic file
	boltMetaChecksumAt = 56 // offset of the checksum within the meta, after the fields it covers
	boltMetaSize       = 64
)

type boltMeta struct {
	pageSize      uint32
	root          uint64
	freelist, hwm uint64
	txid          uint64
}

// parseBoltMeta decodes the meta at the start of a meta page's body, or says why it is invalid.
func parseBoltMeta(b []byte) (boltMeta, error) {
	if len(b) < boltMetaSize {
		return boltMeta{}, errors.New("meta page cut short")
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != boltMagic {
		return boltMeta{}, errors.New("bad magic")
	}
	if le.Uint32(b[4:]) != boltVersion {
		return boltMeta{}, fmt.Errorf("unsupported version %d", le.Uint32(b[4:]))
	}
	h := fnv.New64a()
	h.Write(b[:boltMetaChecksumAt])
	if h.Sum64() != le.Uint64(b[boltMetaChecksumAt:]) {
		return boltMeta{}, errors.New("checksum mismatch")
	}
	return boltMeta{pageSize: le.Uint32(b[8:]), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]),
		hwm: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}, nil
}

// boltChecker walks a bbolt file's reachable pages.
type boltChecker struct {
	r        io.ReaderAt
	size     int64
	pageSize uint64
	hwm      uint64
	seen     map[uint64]bool // pages (overflow included) reached so far: each exactly once
}

// Check validates the bbolt file of size bytes that r reads, and says what is wrong with it.
func Check(r io.ReaderAt, size int64) error {
	meta, err := currentBoltMeta(r, size)
	if err != nil {
		return err
	}
	c := &boltChecker{r: r, size: size, pageSize: uint64(meta.pageSize), hwm: meta.hwm, seen: map[uint64]bool{}}
	if meta.hwm < 2 {
		return fmt.Errorf("high-water mark %d below the two meta pages", meta.hwm)
	}
	// Every page below the high-water mark was written when it was allocated, so a shorter file
	// lost its tail. bbolt sizes its mmap by the file, and would later hand out a free page
	// from the lost part and read it from outside the mapping.
	if need := meta.hwm * c.pageSize; need/c.pageSize != meta.hwm || uint64(size) < need {
		return fmt.Errorf("file is %d bytes, but its meta page says %d pages of %d bytes were allocated", size, meta.hwm, c.pageSize)
	}
	if meta.freelist != boltNoFreelist {
		if err := c.checkFreelist(meta.freelist); err != nil {
			return err
		}
	}
	return c.checkTree(meta.root, nil, nil, 0)
}

// currentBoltMeta picks the meta page bbolt will use: the one with the higher txid if it is
// valid, else the other.
func currentBoltMeta(r io.ReaderAt, size int64) (boltMeta, error) {
	first := make([]byte, boltPageHeaderSize+boltMetaSize)
	if _, err := r.ReadAt(first, 0); err != nil {
		return boltMeta{}, fmt.Errorf("reading meta page 0: %w", err)
	}
	m0, err0 := parseBoltMeta(first[boltPageHeaderSize:])
	// The second meta page sits one page in; its size comes from the first meta page, or, if
	// that is damaged, from the sizes bbolt may have used.
	sizes := []uint64{uint64(m0.pageSize)}
	if err0 != nil {
		sizes = []uint64{uint64(os.Getpagesize()), 4096, 8192, 16384, 32768, 65536}
	}
	var m1 boltMeta
	var err1 error
	for _, ps := range sizes {
		b := make([]byte, boltPageHeaderSize+boltMetaSize)
		var err error
		if ps < 1024 || int64(ps)+int64(len(b)) > size {
			err = errors.New("meta page 1 missing")
		} else if _, err = r.ReadAt(b, int64(ps)); err == nil {
			if m1, err = parseBoltMeta(b[boltPageHeaderSize:]); err == nil {
				err1 = nil
				break
			}
		}
		if err1 == nil {
			err1 = err // the first candidate's error is the telling one
		}
	}
	a, aErr, b, bErr := m0, err0, m1, err1
	if m1.txid > m0.txid {
		a, aErr, b, bErr = m1, err1, m0, err0
	}
	m := a
	if aErr != nil {
		if bErr != nil {
			return boltMeta{}, fmt.Errorf("both meta pages invalid: %v; %v", err0, err1)
		}
		m = b
	}
	if m.pageSize < 1024 || m.pageSize > 1<<20 || m.pageSize&(m.pageSize-1) != 0 {
		return boltMeta{}, fmt.Errorf("implausible page size %d", m.pageSize)
	}
	return m, nil
}

// page reads page id with its overflow pages after checking that it lies inside the file and
// below the high-water mark, that its header names it, and that nothing reached it before.
func (c *boltChecker) page(id uint64) ([]byte, error) {
	if id < 2 || id >= c.hwm {
		return nil, fmt.Errorf("page %d outside [2, %d)", id, c.hwm)
	}
	off := id * c.pageSize
	if off/c.pageSize != id || off+c.pageSize > uint64(c.size) {
		return nil, fmt.Errorf("page %d beyond the end of the %d-byte file", id, c.size)
	}
	hdr := make([]byte, boltPageHeaderSize)
	if _, err := c.r.ReadAt(hdr, int64(off)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	if got := binary.LittleEndian.Uint64(hdr); got != id {
		return nil, fmt.Errorf("page %d identifies itself as page %d", id, got)
	}
	overflow := uint64(binary.LittleEndian.Uint32(hdr[12:]))
	if id+overflow >= c.hwm {
		return nil, fmt.Errorf("page %d overflows past the high-water mark %d", id, c.hwm)
	}
	n := (overflow + 1) * c.pageSize
	if off+n > uint64(c.size) {
		return nil, fmt.Errorf("page %d (%d bytes) runs past the end of the %d-byte file", id, n, c.size)
	}
	for i := id; i <= id+overflow; i++ {
		if c.seen[i] {
			return nil, fmt.Errorf("page %d reached twice", i)
		}
		c.seen[i] = true
	}
	b := make([]byte, n)
	if _, err := c.r.ReadAt(b, int64(off)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	return b, nil
}

func (c *boltChecker) checkFreelist(id uint64) error {
	p, err := c.page(id)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	if flags := binary.LittleEndian.Uint16(p[8:]); flags&boltFreelistPage == 0 {
		return fmt.Errorf("freelist page %d has flags %#x", id, flags)
	}
	count, start := uint64(binary.LittleEndian.Uint16(p[10:])), uint64(boltPageHeaderSize)
	if count == 0xFFFF { // the real count is in the first element
		if len(p) < boltPageHeaderSize+8 {
			return fmt.Errorf("freelist page %d cut short", id)
		}
		count, start = binary.LittleEndian.Uint64(p[boltPageHeaderSize:]), start+8
	}
	if count > (uint64(len(p))-start)/8 {
		return fmt.Errorf("freelist page %d claims %d entries", id, count)
	}
	for i := range count {
		if free := binary.LittleEndian.Uint64(p[start+8*i:]); free < 2 || free >= c.hwm {
			return fmt.Errorf("freelist page %d lists page %d outside [2, %d)", id, free, c.hwm)
		}
	}
	return nil
}

// checkTree checks the B+tree rooted at page id, whose keys must lie in [lo, hi) (nil: open).
func (c *boltChecker) checkTree(id uint64, lo, hi []byte, depth int) error {
	if depth > boltMaxDepth {
		return fmt.Errorf("tree deeper than %d at page %d", boltMaxDepth, id)
	}
	p, err := c.page(id)
	if err != nil {
		return err
	}
	switch flags := binary.LittleEndian.Uint16(p[8:]); {
	case flags&boltBranchPage != 0:
		return c.checkBranch(id, p, lo, hi, depth)
	case flags&boltLeafPage != 0:
		return c.checkLeaf(fmt.Sprintf("page %d", id), p, lo, hi, depth)
	default:
		return fmt.Errorf("page %d in a tree has flags %#x", id, flags)
	}
}

// boltElement returns the i-th element of page p, and the bytes from it to the end of the page.
func boltElement(p []byte, i int) ([]byte, error) {
	count := int(binary.LittleEndian.Uint16(p[10:]))
	if boltPageHeaderSize+count*boltElementSize > len(p) {
		return nil, fmt.Errorf("%d elements do not fit", count)
	}
	return p[boltPageHeaderSize+i*boltElementSize:], nil
}

// boltSlice returns b[pos:pos+n], or an error if that leaves b.
func boltSlice(b []byte, pos uint32, n uint64) ([]byte, error) {
	end := uint64(pos) + n
	if end > uint64(len(b)) {
		return nil, fmt.Errorf("element data [%d, %d) beyond the page", pos, end)
	}
	return b[pos:end], nil
}

// boltKeyInOrder checks that key follows prev strictly and lies in [lo, hi).
func boltKeyInOrder(key, prev, lo, hi []byte, first bool) error {
	switch {
	case !first && bytes.Compare(prev, key) >= 0:
		return fmt.Errorf("key %x not after %x", key, prev)
	case lo != nil && bytes.Compare(key, lo) < 0:
		return fmt.Errorf("key %x below its parent's %x", key, lo)
	case hi != nil && bytes.Compare(key, hi) >= 0:
		return fmt.Errorf("key %x not below the next parent key %x", key, hi)
	}
	return nil
}

func (c *boltChecker) checkBranch(id uint64, p, lo, hi []byte, depth int) error {
	count := int(binary.LittleEndian.Uint16(p[10:]))
	keys := make([][]byte, count)
	children := make([]uint64, count)
	for i := range count {
		e, err := boltElement(p, i)
		if err != nil {
			return fmt.Errorf("page %d: %w", id, err)
		}
		le := binary.LittleEndian
		k, err := boltSlice(e, le.Uint32(e[0:]), uint64(le.Uint32(e[4:])))
		if err != nil {
			return fmt.Errorf("page %d element %d: %w", id, i, err)
		}
		var prev []byte
		if i > 0 {
			prev = keys[i-1]
		}
		if err := boltKeyInOrder(k, prev, lo, hi, i == 0); err != nil {
			return fmt.Errorf("page %d element %d: %w", id, i, err)
		}
		keys[i], children[i] = k, le.Uint64(e[8:])
	}
	for i, child := range children {
		next := hi
		if i+1 < count {
			next = keys[i+1]
		}
		if err := c.checkTree(child, keys[i], next, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// checkLeaf checks a leaf page (of the file, or inline in a bucket value) and every bucket it
// holds.
func (c *boltChecker) checkLeaf(where string, p, lo, hi []byte, depth int) error {
	if len(p) < boltPageHeaderSize {
		return fmt.Errorf("%s: cut short", where)
	}
	count := int(binary.LittleEndian.Uint16(p[10:]))
	var prev []byte
	for i := range count {
		e, err := boltElement(p, i)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		le := binary.LittleEndian
		flags, pos, ksize, vsize := le.Uint32(e[0:]), le.Uint32(e[4:]), le.Uint32(e[8:]), le.Uint32(e[12:])
		kv, err := boltSlice(e, pos, uint64(ksize)+uint64(vsize))
		if err != nil {
			return fmt.Errorf("%s element %d: %w", where, i, err)
		}
		k, v := kv[:ksize], kv[ksize:]
		if err := boltKeyInOrder(k, prev, lo, hi, i == 0); err != nil {
			return fmt.Errorf("%s element %d: %w", where, i, err)
		}
		prev = k
		if flags&boltBucketLeaf == 0 {
			continue
		}
		if len(v) < 16 {
			return fmt.Errorf("%s element %d: bucket header cut short", where, i)
		}
		if root := le.Uint64(v); root != 0 {
			if err := c.checkTree(root, nil, nil, depth+1); err != nil {
				return fmt.Errorf("bucket %q: %w", k, err)
			}
			continue
		}
		inline := v[16:]
		if len(inline) < boltPageHeaderSize || binary.LittleEndian.Uint16(inline[8:])&boltLeafPage == 0 {
			return fmt.Errorf("%s element %d: inline bucket %q is not a leaf page", where, i, k)
		}
		if depth+1 > boltMaxDepth {
			return fmt.Errorf("buckets nested deeper than %d", boltMaxDepth)
		}
		if err := c.checkLeaf(fmt.Sprintf("inline bucket %q", k), inline, nil, nil, depth+1); err != nil {
			return err
		}
	}
	return nil
}
