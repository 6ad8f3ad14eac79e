package interval

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
)

// span is an interval with its value, as the brute-force model stores it.
type span struct {
	start, end string
	v          int
}

func (s span) contains(key string) bool { return s.start <= key && endAfter(s.end, key) }

// model is the obviously correct version of Tree: a list scanned in full.
type model struct{ spans []span }

func (m *model) insert(s span) {
	if !slices.Contains(m.spans, s) {
		m.spans = append(m.spans, s)
	}
}

func (m *model) delete(s span) bool {
	i := slices.Index(m.spans, s)
	if i < 0 {
		return false
	}
	m.spans = slices.Delete(m.spans, i, i+1)
	return true
}

func (m *model) stab(key string) []int {
	var vs []int
	for _, s := range m.spans {
		if s.contains(key) {
			vs = append(vs, s.v)
		}
	}
	slices.Sort(vs)
	return vs
}

func stabAll(t *Tree[int], key string) []int {
	var vs []int
	t.Stab(key, func(v int) bool {
		vs = append(vs, v)
		return true
	})
	slices.Sort(vs)
	return vs
}

// checkInvariants verifies the treap: keys in order, heap-ordered priorities, exact maxEnd, and a
// node count equal to Len.
func checkInvariants(tb testing.TB, t *Tree[int]) {
	tb.Helper()
	count := 0
	var prev *node[int]
	var walk func(n *node[int])
	// walk checks n's subtree in key order; a child's maxEnd is verified before n uses it.
	walk = func(n *node[int]) {
		count++
		wantMax := n.end
		for _, c := range []*node[int]{n.left, n.right} {
			if c != nil && c.prio > n.prio {
				tb.Fatalf("heap order broken: child %q..%q prio %d above parent %q..%q prio %d", c.start, c.end, c.prio, n.start, n.end, n.prio)
			}
		}
		if n.left != nil {
			walk(n.left)
			if cmpEnd(n.left.maxEnd, wantMax) > 0 {
				wantMax = n.left.maxEnd
			}
		}
		if prev != nil && !less(prev.start, prev.end, prev.id, n) {
			tb.Fatalf("order broken: %q..%q#%d before %q..%q#%d", prev.start, prev.end, prev.id, n.start, n.end, n.id)
		}
		prev = n
		if n.right != nil {
			walk(n.right)
			if cmpEnd(n.right.maxEnd, wantMax) > 0 {
				wantMax = n.right.maxEnd
			}
		}
		if n.maxEnd != wantMax {
			tb.Fatalf("maxEnd of %q..%q is %q, want %q", n.start, n.end, n.maxEnd, wantMax)
		}
	}
	if t.root != nil {
		walk(t.root)
	}
	if count != t.Len() {
		tb.Fatalf("tree holds %d nodes, Len says %d", count, t.Len())
	}
}

func TestTree_Stab(t *testing.T) {
	intervals := []span{
		{"a", "c", 1},
		{"b", "", 2},  // +inf
		{"b", "b", 3}, // empty
		{"c", "b", 4}, // empty, start > end
		{"", "", 5},   // everything
		{"a", "a\x00", 6},
		{"ab", "ac", 7},
		{"a", "c", 8}, // same range, other value
		{"", "a", 9},
	}
	tests := []struct {
		name string
		key  string
		wVs  []int
	}{
		{"empty key", "", []int{5, 9}},
		{"start is inclusive", "a", []int{1, 5, 6, 8}},
		{"single-key range excludes successors", "a\x00", []int{1, 5, 8}},
		{"nested prefix", "abz", []int{1, 5, 7, 8}},
		{"end is exclusive", "ac", []int{1, 5, 8}},
		{"empty ranges never match", "b", []int{1, 2, 5, 8}},
		{"end of finite ranges", "c", []int{2, 5}},
		{"only unbounded ranges far out", "zzz", []int{2, 5}},
	}
	var tr Tree[int]
	for _, s := range intervals {
		tr.Insert(s.start, s.end, s.v)
	}
	checkInvariants(t, &tr)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := stabAll(&tr, tt.key); !slices.Equal(got, tt.wVs) {
				t.Fatalf("Stab(%q) = %v, want %v", tt.key, got, tt.wVs)
			}
		})
	}
}

func TestTree_InsertDelete(t *testing.T) {
	type op struct {
		del        bool
		start, end string
		v          int
		wDeleted   bool // for deletes
		wLen       int
	}
	tests := []struct {
		name string
		ops  []op
		key  string
		wVs  []int
	}{
		{
			name: "repeated insert is a no-op",
			ops:  []op{{start: "a", end: "b", v: 1, wLen: 1}, {start: "a", end: "b", v: 1, wLen: 1}},
			key:  "a", wVs: []int{1},
		},
		{
			name: "same range with two values are two intervals",
			ops: []op{{start: "a", end: "b", v: 1, wLen: 1}, {start: "a", end: "b", v: 2, wLen: 2},
				{del: true, start: "a", end: "b", v: 1, wDeleted: true, wLen: 1}},
			key: "a", wVs: []int{2},
		},
		{
			name: "delete of an absent interval reports false",
			ops: []op{{start: "a", end: "b", v: 1, wLen: 1},
				{del: true, start: "a", end: "c", v: 1, wLen: 1},
				{del: true, start: "a", end: "b", v: 2, wLen: 1},
				{del: true, start: "a", end: "", v: 1, wLen: 1}},
			key: "a", wVs: []int{1},
		},
		{
			name: "deleting twice",
			ops: []op{{start: "a", end: "", v: 1, wLen: 1},
				{del: true, start: "a", end: "", v: 1, wDeleted: true},
				{del: true, start: "a", end: "", v: 1}},
			key: "a",
		},
		{
			name: "empty interval is stored and deleted but never matches",
			ops: []op{{start: "b", end: "a", v: 1, wLen: 1},
				{del: true, start: "b", end: "a", v: 1, wDeleted: true}},
			key: "b",
		},
		{
			name: "reinsert after delete",
			ops: []op{{start: "a", end: "b", v: 1, wLen: 1},
				{del: true, start: "a", end: "b", v: 1, wDeleted: true},
				{start: "a", end: "b", v: 1, wLen: 1}},
			key: "a", wVs: []int{1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Tree[int]
			for i, o := range tt.ops {
				if o.del {
					if got := tr.Delete(o.start, o.end, o.v); got != o.wDeleted {
						t.Fatalf("op %d: Delete(%q, %q, %d) = %v, want %v", i, o.start, o.end, o.v, got, o.wDeleted)
					}
				} else {
					tr.Insert(o.start, o.end, o.v)
				}
				if tr.Len() != o.wLen {
					t.Fatalf("op %d: Len() = %d, want %d", i, tr.Len(), o.wLen)
				}
				checkInvariants(t, &tr)
			}
			if got := stabAll(&tr, tt.key); !slices.Equal(got, tt.wVs) {
				t.Fatalf("Stab(%q) = %v, want %v", tt.key, got, tt.wVs)
			}
		})
	}
}

func TestTree_ZeroValue(t *testing.T) {
	var tr Tree[string]
	if tr.Len() != 0 || tr.Delete("a", "b", "x") {
		t.Fatal("zero Tree is not empty")
	}
	tr.Stab("a", func(string) bool {
		t.Fatal("zero Tree reported an interval")
		return true
	})
}

func TestTree_StabStopsWhenFnReturnsFalse(t *testing.T) {
	var tr Tree[int]
	for i := range 10 {
		tr.Insert("", "", i)
	}
	calls := 0
	tr.Stab("k", func(int) bool {
		calls++
		return calls < 3
	})
	if calls != 3 {
		t.Fatalf("fn called %d times after returning false on the third, want 3", calls)
	}
}

func TestTree_StabOrder(t *testing.T) {
	var tr Tree[int]
	tr.Insert("b", "", 1)
	tr.Insert("a", "z", 2)
	tr.Insert("a", "c", 3)
	tr.Insert("a", "c", 4)
	tr.Insert("a", "", 5)
	var got []int
	tr.Stab("b", func(v int) bool {
		got = append(got, v)
		return true
	})
	if w := []int{3, 4, 2, 5, 1}; !slices.Equal(got, w) {
		t.Fatalf("Stab order %v, want %v (by start, end with +inf last, insertion)", got, w)
	}
}

// randKey draws from a tiny alphabet so that ranges overlap, nest and share endpoints a lot.
func randKey(r *rand.Rand) string {
	var b strings.Builder
	for range r.Intn(4) {
		b.WriteByte("ab\x00"[r.Intn(3)])
	}
	return b.String()
}

func randSpan(r *rand.Rand, values int) span {
	s := span{start: randKey(r), v: r.Intn(values)}
	switch r.Intn(5) {
	case 0:
		s.end = "" // +inf
	case 1:
		s.end = s.start + "\x00" // a single key, as a single-key watch would be stored
	default:
		s.end = randKey(r) // often empty: start >= end
	}
	return s
}

func TestTree_MatchesBruteForce(t *testing.T) {
	for seed := int64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewSource(seed))
			var tr Tree[int]
			var m model
			var live []span
			for i := range 3000 {
				switch op := r.Intn(10); {
				case op < 4:
					s := randSpan(r, 4)
					tr.Insert(s.start, s.end, s.v)
					m.insert(s)
					live = append(live, s)
				case op < 7:
					s := randSpan(r, 4)
					if len(live) > 0 && r.Intn(2) == 0 {
						s = live[r.Intn(len(live))] // mostly present, sometimes already deleted
					}
					if got, w := tr.Delete(s.start, s.end, s.v), m.delete(s); got != w {
						t.Fatalf("op %d: Delete(%q, %q, %d) = %v, want %v", i, s.start, s.end, s.v, got, w)
					}
				default:
					key := randKey(r)
					if got, w := stabAll(&tr, key), m.stab(key); !slices.Equal(got, w) {
						t.Fatalf("op %d: Stab(%q) = %v, want %v", i, key, got, w)
					}
				}
				if tr.Len() != len(m.spans) {
					t.Fatalf("op %d: Len() = %d, want %d", i, tr.Len(), len(m.spans))
				}
				if i%100 == 0 {
					checkInvariants(t, &tr)
				}
			}
			checkInvariants(t, &tr)
		})
	}
}

// FuzzTree runs a program of inserts, deletes and stabs decoded from the input against the
// brute-force model. Each op takes 4 bytes: opcode, start, end, value; start and end index a
// small key table so that programs hit overlapping and equal ranges.
func FuzzTree(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0, 0, 1, 0, 1, 2, 1, 0, 0, 1, 1, 2, 0, 2, 1, 0, 0})
	f.Add([]byte{0, 0, 0, 0, 0, 3, 1, 2, 2, 3, 0, 0, 1, 0, 0, 0})
	keys := []string{"", "a", "a\x00", "ab", "b", "ba", "c", "\xff"}
	f.Fuzz(func(t *testing.T, prog []byte) {
		var tr Tree[int]
		var m model
		for i := 0; i+4 <= len(prog); i += 4 {
			op, a, b, v := prog[i]%3, keys[int(prog[i+1])%len(keys)], keys[int(prog[i+2])%len(keys)], int(prog[i+3]%4)
			switch op {
			case 0:
				tr.Insert(a, b, v)
				m.insert(span{a, b, v})
			case 1:
				if got, w := tr.Delete(a, b, v), m.delete(span{a, b, v}); got != w {
					t.Fatalf("op %d: Delete(%q, %q, %d) = %v, want %v", i/4, a, b, v, got, w)
				}
			case 2:
				if got, w := stabAll(&tr, a), m.stab(a); !slices.Equal(got, w) {
					t.Fatalf("op %d: Stab(%q) = %v, want %v", i/4, a, got, w)
				}
			}
			if tr.Len() != len(m.spans) {
				t.Fatalf("op %d: Len() = %d, want %d", i/4, tr.Len(), len(m.spans))
			}
		}
		checkInvariants(t, &tr)
		for _, k := range keys {
			if got, w := stabAll(&tr, k), m.stab(k); !slices.Equal(got, w) {
				t.Fatalf("final Stab(%q) = %v, want %v", k, got, w)
			}
		}
	})
}

// prefixRanges returns n watch-like ranges: a prefix per namespace and, below each, prefixes per
// resource and single keys, so that a key typically lies in a handful of nested ranges.
func prefixRanges(n int) []span {
	var spans []span
	for ns := 0; len(spans) < n; ns++ {
		p := fmt.Sprintf("/registry/ns%04d/", ns)
		spans = append(spans, span{p, prefixEnd(p), len(spans)})
		for res := 0; res < 8 && len(spans) < n; res++ {
			q := fmt.Sprintf("%sres%d/", p, res)
			spans = append(spans, span{q, prefixEnd(q), len(spans)})
			if len(spans) < n {
				k := q + "obj0"
				spans = append(spans, span{k, k + "\x00", len(spans)})
			}
		}
	}
	return spans
}

// prefixEnd is the end of the range of keys starting with p (p never ends in 0xff here).
func prefixEnd(p string) string {
	b := []byte(p)
	b[len(b)-1]++
	return string(b)
}

func benchKeys(spans []span) []string {
	r := rand.New(rand.NewSource(1))
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = spans[r.Intn(len(spans))].start + "obj0"
	}
	return keys
}

func BenchmarkStab(b *testing.B) {
	spans := prefixRanges(10_000)
	var tr Tree[int]
	for _, s := range spans {
		tr.Insert(s.start, s.end, s.v)
	}
	keys := benchKeys(spans)
	found := 0
	b.ResetTimer()
	for i := range b.N {
		tr.Stab(keys[i%len(keys)], func(int) bool {
			found++
			return true
		})
	}
	b.ReportMetric(float64(found)/float64(b.N), "matches/op")
}

// BenchmarkStabLinear is the scan over every range watcher that Tree replaces, for comparison.
func BenchmarkStabLinear(b *testing.B) {
	spans := prefixRanges(10_000)
	keys := benchKeys(spans)
	found := 0
	b.ResetTimer()
	for i := range b.N {
		key := keys[i%len(keys)]
		for _, s := range spans {
			if s.contains(key) {
				found++
			}
		}
	}
	b.ReportMetric(float64(found)/float64(b.N), "matches/op")
}

// BenchmarkInsertDelete measures one Insert plus one Delete in a tree of 10k ranges, as a
// watcher registering and leaving does.
func BenchmarkInsertDelete(b *testing.B) {
	spans := prefixRanges(10_000)
	var tr Tree[int]
	for _, s := range spans {
		tr.Insert(s.start, s.end, s.v)
	}
	b.ResetTimer()
	for i := range b.N {
		s := spans[i%len(spans)]
		tr.Delete(s.start, s.end, s.v)
		tr.Insert(s.start, s.end, s.v)
	}
}
