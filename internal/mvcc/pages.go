package mvcc

import (
	"bytes"
	"encoding/binary"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// A pageReader finds revs entries by walking the B+tree pages of a read transaction in the
// file's mapping itself. bbolt's own lookup (Bucket.Get, Cursor.Seek) costs about a third of a
// serializable get of a stored value: it boxes two page IDs per page it visits for an assertion
// message (allocations), and searches through closures. Pages a read transaction reaches are
// never written while it is open (bbolt copies on write and frees them only after), and its
// mapping stays in place (a remap waits for every read transaction), so the pages can be read
// directly for as long as the view is held. The layout read here is bbolt's file format, which
// etcd's data dirs freeze; anything unexpected makes the caller use bbolt's lookup instead.
type pageReader struct {
	data     []byte // the mapping, up to the transaction's file size
	pageSize uint64
	root     uint64 // revs' root page; 0 (an inline bucket): no reader
}

// bbolt's page layout, in native byte order: a 16-byte header (id uint64, flags uint16, count
// uint16, overflow uint32), then count 16-byte elements: a branch's pos uint32, ksize uint32,
// pgid uint64; a leaf's flags uint32, pos uint32, ksize uint32, vsize uint32. An element's key
// is pos bytes after the element, a leaf's value right after its key.
const (
	pageHeaderSize  = 16
	pageElementSize = 16
	branchPageFlag  = 0x01
	leafPageFlag    = 0x02
	bucketLeafFlag  = 0x01
	maxPageDepth    = 64 // far beyond any real tree: a cycle in a damaged file ends here
)

// newPageReader returns a reader of revs in tx, false if revs is inline (its pages are not in
// the mapping).
func newPageReader(tx *bolt.Tx, revs *bolt.Bucket) (pageReader, bool) {
	root := uint64(revs.Root())
	if root == 0 {
		return pageReader{}, false
	}
	info := tx.DB().Info()
	size := tx.Size()
	if info.PageSize <= 0 || size < 4*int64(info.PageSize) { // two meta pages, a freelist, a root

		return pageReader{}, false
	}
	// Info.Data is the address of the mapping, which the transaction keeps in place.
	data := unsafe.Slice((*byte)(*(*unsafe.Pointer)(unsafe.Pointer(&info.Data))), size)
	return pageReader{data: data, pageSize: uint64(info.PageSize), root: root}, true
}

// get returns the value of key in revs, found false if there is none; ok false if the pages are
// not as expected (the caller asks bbolt).
func (pr *pageReader) get(key []byte) (value []byte, found, ok bool) {
	id := pr.root
	for range maxPageDepth {
		p, ok := pr.page(id)
		if !ok {
			return nil, false, false
		}
		flags := binary.NativeEndian.Uint16(p[8:])
		count := int(binary.NativeEndian.Uint16(p[10:]))
		if count == 0 || pageHeaderSize+count*pageElementSize > len(p) {
			return nil, false, false
		}
		switch flags {
		case branchPageFlag:
			// The child whose range holds key: the last element whose key is at most key,
			// or the first.
			lo, hi := 0, count // the first element whose key is above key
			for lo < hi {
				m := int(uint(lo+hi) >> 1)
				k, ok := elementKey(p, m, false)
				if !ok {
					return nil, false, false
				}
				if bytes.Compare(k, key) > 0 {
					hi = m
				} else {
					lo = m + 1
				}
			}
			e := pageHeaderSize + max(lo-1, 0)*pageElementSize
			id = binary.NativeEndian.Uint64(p[e+8:])
		case leafPageFlag:
			lo, hi := 0, count // the first element whose key is at least key
			for lo < hi {
				m := int(uint(lo+hi) >> 1)
				k, ok := elementKey(p, m, true)
				if !ok {
					return nil, false, false
				}
				if bytes.Compare(k, key) < 0 {
					lo = m + 1
				} else {
					hi = m
				}
			}
			if lo == count {
				return nil, false, true
			}
			k, _ := elementKey(p, lo, true)
			if !bytes.Equal(k, key) {
				return nil, false, true
			}
			e := pageHeaderSize + lo*pageElementSize
			if binary.NativeEndian.Uint32(p[e:])&bucketLeafFlag != 0 {
				return nil, false, true // a nested bucket, not a value
			}
			vsize := uint64(binary.NativeEndian.Uint32(p[e+12:]))
			start := uint64(e) + uint64(binary.NativeEndian.Uint32(p[e+4:])) + uint64(len(k))
			if start+vsize > uint64(len(p)) {
				return nil, false, false
			}
			return p[start : start+vsize : start+vsize], true, true
		default:
			return nil, false, false
		}
	}
	return nil, false, false
}

// page returns page id with its overflow pages, false if it is not within the file or does not
// say it is page id.
func (pr *pageReader) page(id uint64) ([]byte, bool) {
	off := id * pr.pageSize
	if id == 0 || off/pr.pageSize != id || off > uint64(len(pr.data))-pr.pageSize {
		return nil, false
	}
	p := pr.data[off:]
	if binary.NativeEndian.Uint64(p) != id {
		return nil, false
	}
	n := (uint64(binary.NativeEndian.Uint32(p[12:])) + 1) * pr.pageSize
	if n > uint64(len(p)) {
		return nil, false
	}
	return p[:n:n], true
}

// elementKey returns the key of element i of page p, a leaf's (leaf) or a branch's.
func elementKey(p []byte, i int, leaf bool) ([]byte, bool) {
	e := pageHeaderSize + i*pageElementSize
	f := e // a branch element's pos and ksize come first, a leaf element's after its flags
	if leaf {
		f += 4
	}
	start := uint64(e) + uint64(binary.NativeEndian.Uint32(p[f:]))
	end := start + uint64(binary.NativeEndian.Uint32(p[f+4:]))
	if end > uint64(len(p)) {
		return nil, false
	}
	return p[start:end], true
}
