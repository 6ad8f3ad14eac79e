package mvcc

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ember-kv/ember/internal/wire"
)

// dedupTable renders a state's dedup table, for comparing a loaded one with the original.
func dedupTable(st *State) string {
	var out strings.Builder
	st.ScanRemembered(func(e *DedupEntry) bool {
		fmt.Fprintf(&out, "%v@%d=%x\n", e.ID, e.Index, e.Result)
		return true
	})
	return out.String()
}

func loadBackend(t *testing.T, path string) (*State, *Backend) {
	t.Helper()
	b, err := OpenBackend(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := Load(b)
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	return st, b
}

// A backend of format 1, whose dedup table has a key per request, opens migrated to format 2
// with the same table, and keeps opening.
func TestBackend_Open_MigratesDedupV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st := NewOnDisk(mustBackend(t, path))
	stPut(t, st, "k", "v", 0)
	if err := st.Commit(7); err != nil {
		t.Fatal(err)
	}
	var want []*DedupEntry
	for i := range 5 {
		res := &wire.Result{Revision: int64(i + 1)}
		want = append(want, &DedupEntry{ID: wire.RequestID{Client: uint64(i%2 + 1), Seq: uint64(i)}, Index: uint64(i + 1), Result: res.Marshal(nil)})
	}
	// Rewrite it as format 1 wrote it.
	if err := st.backend.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketDedup); err != nil {
			return err
		}
		v1, err := tx.CreateBucket(bucketDedupV1)
		if err != nil {
			return err
		}
		for _, e := range want {
			k := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, e.ID.Client), e.ID.Seq)
			enc := wire.Encoder{}
			enc.Uvarint(e.Index)
			enc.Bytes(e.Result)
			if err := v1.Put(k, seal(bucketDedupV1, k, enc.B)); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(metaFormat, seal(bucketMeta, metaFormat, binary.AppendUvarint(nil, 1)))
	}); err != nil {
		t.Fatal(err)
	}
	st.backend.Close()
	for _, e := range want {
		st.dedup.Set(e)
	}
	wantTable := dedupTable(st)

	ro, err := OpenBackendReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := Load(ro)
	ro.Close()
	if err != nil {
		t.Fatalf("format 1 read-only: %v", err)
	}
	if g := dedupTable(got); g != wantTable {
		t.Fatalf("format 1 read-only: table\n%s\nwant\n%s", g, wantTable)
	}

	for round := range 2 {
		got, b := loadBackend(t, path)
		if g := dedupTable(got); g != wantTable {
			t.Fatalf("open %d: table\n%s\nwant\n%s", round, g, wantTable)
		}
		if err := b.db.View(func(tx *bolt.Tx) error {
			if tx.Bucket(bucketDedupV1) != nil {
				return fmt.Errorf("format 1 bucket still there")
			}
			f, err := unseal(bucketMeta, metaFormat, tx.Bucket(bucketMeta).Get(metaFormat))
			if n, _ := binary.Uvarint(f); err != nil || n != backendFormat {
				return fmt.Errorf("format %d (%v), want %d", n, err, backendFormat)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		b.Close()
	}
}

func mustBackend(t *testing.T, path string) *Backend {
	t.Helper()
	b, err := CreateBackend(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The dedup table loads as it was committed after entries are remembered, replaced, forgotten
// and remembered again over several windows, as an Applier does; and the values holding only
// forgotten entries are deleted, so the bucket stays about a window's size.
func TestBatch_Write_DedupLogReplaysAndShrinks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st := NewOnDisk(mustBackend(t, path))
	st.backend.db.NoSync = true
	const perBatch = 2000
	var live []*DedupEntry // in index order
	index := uint64(0)
	for batch := range 3 * DedupWindow / perBatch {
		for i := range perBatch {
			index++
			id := wire.RequestID{Client: uint64(i%3 + 1), Seq: index % (DedupWindow + 7)} // IDs recur after expiry
			e := &DedupEntry{ID: id, Index: index, Result: (&wire.Result{Revision: int64(index)}).Marshal(nil)}
			st.Remember(e)
			live = append(live, e)
			for len(live) > 0 && live[0].Index+DedupWindow < index {
				if cur, ok := st.Remembered(live[0].ID); ok && cur.Index == live[0].Index {
					st.Forget(live[0].ID)
				}
				live = live[1:]
			}
			if i == 0 && len(live) > 10 {
				// A trim: an older entry replaced by a shorter result, same index.
				old := live[len(live)/2]
				st.Remember(&DedupEntry{ID: old.ID, Index: old.Index, Result: shortResult(wire.CodeOK, 1)})
			}
		}
		if err := st.Commit(index); err != nil {
			t.Fatal(err)
		}
		if batch%10 == 9 {
			st.backend.Close()
			got, b := loadBackend(t, path)
			if g, w := dedupTable(got), dedupTable(st); g != w {
				t.Fatalf("batch %d: loaded table differs (%d entries, want %d)", batch, got.RememberedCount(), st.RememberedCount())
			}
			values := 0
			b.db.View(func(tx *bolt.Tx) error {
				values = tx.Bucket(bucketDedup).Stats().KeyN
				return nil
			})
			if max := DedupWindow/perBatch + 3; values > max {
				t.Fatalf("batch %d: %d dedup values, want at most %d", batch, values, max)
			}
			b.db.NoSync = true
			got.backend = b
			st = got
		}
	}
}
