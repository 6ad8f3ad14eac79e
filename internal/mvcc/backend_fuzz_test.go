package mvcc

import (
	"bytes"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// FuzzLoadBackend writes fuzzed entries into a backend's buckets, sealed with a correct checksum
// or not, and loads it: Load must never panic, and a state it accepts must pass Check. The
// input is a sequence of entries: bucket selector byte, key length byte, key, value length
// byte, value, seal byte (odd: seal).
func FuzzLoadBackend(f *testing.F) {
	// Seeds: the backend of a rich state, entry by entry, sealed as Commit writes them.
	seed := func(t testing.TB) []byte {
		st, _, err := RestoreStream(bytes.NewReader(encodeSnapshot(t, richState(t), 9)), filepath.Join(t.TempDir(), "seed.db"), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer st.backend.Discard()
		var in []byte
		st.backend.db.View(func(tx *bolt.Tx) error {
			for sel, name := range [][]byte{bucketRevs, bucketLeases, bucketDedup, bucketMeta} {
				tx.Bucket(name).ForEach(func(k, v []byte) error {
					if bytes.Equal(k, metaFormat) || len(k) > 255 || len(v) > 259 {
						return nil
					}
					val := v[:len(v)-4]
					in = append(in, byte(sel), byte(len(k)))
					in = append(in, k...)
					in = append(in, byte(len(val)))
					in = append(in, val...)
					in = append(in, 1)
					return nil
				})
			}
			return nil
		})
		return in
	}
	f.Add(seed(f))
	f.Add([]byte{3, 3, 'r', 'e', 'v', 1, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := CreateBackend(filepath.Join(t.TempDir(), "f.db"), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Discard()
		b.db.NoSync = true // a throwaway file: syncing it only slows the fuzzer down
		if err := b.db.Update(func(tx *bolt.Tx) error {
			for len(in) >= 2 {
				name := [][]byte{bucketRevs, bucketLeases, bucketDedup, bucketMeta}[in[0]%4]
				klen := int(in[1])
				in = in[2:]
				if len(in) < klen+1 {
					return nil
				}
				k := in[:klen]
				vlen := int(in[klen])
				in = in[klen+1:]
				if len(in) < vlen+1 || klen == 0 {
					return nil
				}
				v := append([]byte(nil), in[:vlen]...)
				if in[vlen]%2 == 1 {
					v = seal(name, k, v)
				}
				in = in[vlen+1:]
				if bytes.Equal(k, metaFormat) {
					continue // a foreign format is refused before any entry is read
				}
				if err := tx.Bucket(name).Put(k, v); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Skip(err)
		}
		st, _, err := Load(b)
		if err != nil {
			return
		}
		if err := st.Check(); err != nil {
			t.Fatalf("Load accepted a state that fails Check: %v", err)
		}
	})
}
