package mvcc

import (
	"testing"

	"github.com/ember-kv/ember/internal/wire"
)

// The dedup table stays exactly the window wide while writes go on past it, and its expiry
// order holds only the live IDs, plus at most an eighth as many expired ones not yet dropped,
// in an array not much longer: the order costs 24 bytes a ref, 2.4 MB for a full window.
func TestApplier_DedupOrderBoundedPastWindow(t *testing.T) {
	a := NewApplier(nil, 8<<20)
	res := &wire.Result{}
	for i := uint64(1); i <= 2*DedupWindow+1000; i++ {
		a.remember(wire.RequestID{Client: 1, Seq: i}, i, res)
		if i%9973 != 0 {
			continue
		}
		live := len(a.dedupOrder) - a.dedupHead
		if live != a.st.RememberedCount() || live > DedupWindow+1 || 8*a.dedupHead > live {
			t.Fatalf("after %d: %d refs from head %d, %d in the table", i, len(a.dedupOrder), a.dedupHead, a.st.RememberedCount())
		}
		if c := cap(a.dedupOrder); c > DedupWindow*3/2 {
			t.Fatalf("after %d: order array of %d refs for %d live", i, c, live)
		}
	}
}

// BenchmarkApplier_RememberFullWindow is the cost of recording a request ID once the window is
// full, which is every write of a busy store: it must not grow with the window (it was 240 µs
// when expiry shifted the whole window on every write; 0.5 µs since).
func BenchmarkApplier_RememberFullWindow(b *testing.B) {
	a := NewApplier(nil, 8<<20)
	res := &wire.Result{}
	i := uint64(1)
	for ; i <= DedupWindow; i++ {
		a.remember(wire.RequestID{Client: 1, Seq: i}, i, res)
	}
	for b.Loop() {
		a.remember(wire.RequestID{Client: 1, Seq: i}, i, res)
		i++
	}
}

// Check is what the dedup tests rely on (mvcc and the root's fsm tests): each kind of damage to
// the bookkeeping must be reported.
func TestApplier_Check_FindsDamage(t *testing.T) {
	long := (&wire.Result{Txn: &wire.TxnResult{Responses: []wire.OpResult{{Kind: wire.OpRange,
		Range: &wire.RangeResult{Kvs: []*wire.KV{{Key: []byte("k"), Value: make([]byte, 100)}}}}}}})
	build := func() *Applier {
		a := NewApplier(nil, 1<<20)
		for i := uint64(1); i <= 4; i++ {
			res := &wire.Result{}
			if i%2 == 0 {
				res = long
			}
			a.remember(wire.RequestID{Client: 1, Seq: i}, i, res)
		}
		return a
	}
	if err := build().Check(); err != nil {
		t.Fatalf("intact: %v", err)
	}
	tests := []struct {
		name   string
		damage func(a *Applier)
	}{
		{"byte count", func(a *Applier) { a.dedupBytes++ }},
		{"long byte count", func(a *Applier) { a.dedupLong-- }},
		{"over budget", func(a *Applier) { a.budget = 1 }},
		{"order misses an entry", func(a *Applier) { a.dedupOrder = a.dedupOrder[1:] }},
		{"order out of index order", func(a *Applier) {
			a.dedupOrder[0], a.dedupOrder[1] = a.dedupOrder[1], a.dedupOrder[0]
		}},
		{"long result before the trim cursor", func(a *Applier) { a.dedupFull = len(a.dedupOrder) }},
		{"entry the order does not know", func(a *Applier) {
			a.st.Remember(&DedupEntry{ID: wire.RequestID{Client: 2, Seq: 1}, Index: 9, Result: []byte{}})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := build()
			tc.damage(a)
			if err := a.Check(); err == nil {
				t.Fatal("damage not reported")
			}
		})
	}
}
