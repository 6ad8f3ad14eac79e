package ember

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"
)

// boltFile returns the bytes of a real raft.db, written by a store with enough history for
// branch pages, and its page size.
func boltFile(t testing.TB) ([]byte, int) {
	t.Helper()
	dir, _ := dfPrepareDir(t, 10000, 1, WithLogStore(LogStoreBolt))
	b, err := os.ReadFile(filepath.Join(dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	return b, int(binary.LittleEndian.Uint32(b[boltPageHeaderSize+8:]))
}

func checkBoltBytes(b []byte) error { return checkBolt(bytes.NewReader(b), int64(len(b))) }

func TestCheckBolt_HealthyFilePasses(t *testing.T) {
	b, _ := boltFile(t)
	if err := checkBoltBytes(b); err != nil {
		t.Fatalf("a healthy raft.db was refused: %v", err)
	}
}

func TestCheckBolt_Damage(t *testing.T) {
	b, page := boltFile(t)
	meta, err := currentBoltMeta(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	c := &boltChecker{r: bytes.NewReader(b), size: int64(len(b)), pageSize: uint64(page), hwm: meta.hwm, seen: map[uint64]bool{}}
	if err := c.checkTree(meta.root, nil, nil, 0); err != nil {
		t.Fatal(err)
	}
	damaged := func(f func(d []byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	type tc struct {
		name    string
		file    []byte
		wRefuse bool
	}
	var cases []tc
	for n := 0; n < int(meta.hwm); n++ {
		cases = append(cases, tc{fmt.Sprintf("cut to %d pages", n), b[:n*page], true})
	}
	for id := range c.seen {
		cases = append(cases,
			tc{fmt.Sprintf("page %d renamed", id), damaged(func(d []byte) []byte { d[int(id)*page] ^= 0x01; return d }), true},
			tc{fmt.Sprintf("page %d flags cleared", id), damaged(func(d []byte) []byte { d[int(id)*page+8], d[int(id)*page+9] = 0, 0; return d }), true},
			tc{fmt.Sprintf("page %d overflows past the end", id), damaged(func(d []byte) []byte {
				binary.LittleEndian.PutUint32(d[int(id)*page+12:], uint32(meta.hwm))
				return d
			}), true},
			tc{fmt.Sprintf("page %d count too large", id), damaged(func(d []byte) []byte {
				binary.LittleEndian.PutUint16(d[int(id)*page+10:], 0xFFFE)
				return d
			}), true},
		)
	}
	for i, off := range []int{0, page} {
		cases = append(cases, tc{fmt.Sprintf("meta page %d damaged, the other still valid", i),
			damaged(func(d []byte) []byte { d[off+boltPageHeaderSize+16] ^= 0xff; return d }), false})
	}
	cases = append(cases, tc{"both meta pages damaged", damaged(func(d []byte) []byte {
		d[boltPageHeaderSize+16] ^= 0xff
		d[page+boltPageHeaderSize+16] ^= 0xff
		return d
	}), true})
	for _, tc := range cases {
		err := checkBoltBytes(tc.file)
		if (err != nil) != tc.wRefuse {
			t.Errorf("%s: check = %v, want refused = %v", tc.name, err, tc.wRefuse)
		}
	}
}

// Open refuses a damaged raft.db with ErrCorrupt, in-process, where bbolt itself would crash.
func TestOpen_TruncatedRaftDBRefused(t *testing.T) {
	dir, _ := dfPrepareDir(t, 10000, 1, WithLogStore(LogStoreBolt))
	path := filepath.Join(dir, "raft.db")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err == nil {
		s.Close()
		t.Fatal("a truncated raft.db was opened")
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open: %v, want ErrCorrupt", err)
	}
}

// smallBoltFile builds a bbolt file with 1 KiB pages holding a bucket deep enough for branch
// pages and an inline bucket: a small seed the fuzzer can mutate quickly.
func smallBoltFile(t testing.TB) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "small.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{PageSize: 1024, NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		logs, err := tx.CreateBucket([]byte("logs"))
		if err != nil {
			return err
		}
		for i := range 120 {
			if err := logs.Put(binary.BigEndian.AppendUint64(nil, uint64(i)), bytes.Repeat([]byte{byte(i)}, 24)); err != nil {
				return err
			}
		}
		conf, err := tx.CreateBucket([]byte("conf"))
		if err != nil {
			return err
		}
		return conf.Put([]byte("CurrentTerm"), []byte{0, 0, 0, 0, 0, 0, 0, 7})
	})
	if err == nil {
		err = db.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzCheckBolt: the check reads arbitrary bytes without panicking and without reading past
// them, and it accepts the real file it is seeded with.
func FuzzCheckBolt(f *testing.F) {
	b := smallBoltFile(f)
	if err := checkBoltBytes(b); err != nil {
		f.Fatalf("seed refused: %v", err)
	}
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Fuzz(func(t *testing.T, d []byte) {
		checkBoltBytes(d)
	})
}
