// Package interval indexes half-open ranges of string keys so that the ranges holding a given key
// are found without looking at every range. The watch apply path needs exactly this: for each
// changed key, the range watchers whose range contains it.
package interval

// Tree is a set of intervals [start, end) of strings, each carrying a value. An end of ""
// means +inf: the interval holds every key from start on. An interval with end != "" and
// start >= end is empty: it can be stored and deleted but contains no key.
//
// The zero value is an empty tree ready to use.
//
// A Tree is not safe for concurrent use. Callers serialize Insert and Delete with every other
// call (ember's watch hub holds its mutex); Stab and Len only read, so concurrent Stab and Len
// calls are safe while nothing modifies the tree.
//
// The tree is a treap ordered by (start, end, insertion order) whose nodes also record the
// largest end in their subtree. Insert and Delete take O(log n) expected time. Stab visits only
// subtrees that can hold a match, which costs O(log n) plus O(log n) per reported interval in
// the worst case, and close to O(log n + k) when the matches are nested or adjacent, as prefix
// ranges are.
type Tree[V comparable] struct {
	root *node[V]
	// ids maps every stored interval to the insertion id that, with start and end, is its key
	// in the treap: Insert uses it to ignore a repeated interval, Delete to find the node
	// without knowing where in the tree equal (start, end) pairs with other values sit.
	ids    map[entry[V]]uint64
	nextID uint64
}

type entry[V comparable] struct {
	start, end string
	v          V
}

type node[V comparable] struct {
	start, end  string // end "" = +inf
	id          uint64 // insertion order; breaks ties between equal (start, end)
	prio        uint64 // heap priority: a parent's is at least its children's
	v           V
	left, right *node[V]
	maxEnd      string // largest end in this subtree, "" = +inf
}

// Insert adds the interval [start, end) with value v; end "" means +inf. Inserting an interval
// already present with the same value does nothing.
func (t *Tree[V]) Insert(start, end string, v V) {
	e := entry[V]{start, end, v}
	if _, ok := t.ids[e]; ok {
		return
	}
	if t.ids == nil {
		t.ids = map[entry[V]]uint64{}
	}
	t.nextID++
	id := t.nextID
	t.ids[e] = id
	t.root = insert(t.root, &node[V]{start: start, end: end, id: id, prio: mix(id), v: v, maxEnd: end})
}

// Delete removes the interval [start, end) with value v and reports whether it was present.
func (t *Tree[V]) Delete(start, end string, v V) bool {
	e := entry[V]{start, end, v}
	id, ok := t.ids[e]
	if !ok {
		return false
	}
	delete(t.ids, e)
	t.root = remove(t.root, start, end, id)
	return true
}

// Stab calls fn with the value of every interval that contains key, ordered by start, then end,
// then insertion, until fn returns false. fn must not modify the tree.
func (t *Tree[V]) Stab(key string, fn func(v V) bool) {
	stab(t.root, key, fn)
}

// Len returns the number of intervals in the tree.
func (t *Tree[V]) Len() int { return len(t.ids) }

// endAfter reports whether an interval ending at end (exclusive, "" = +inf) reaches past key.
func endAfter(end, key string) bool { return end == "" || key < end }

// cmpEnd orders ends with "" (+inf) above every string.
func cmpEnd(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1
	case b == "":
		return -1
	case a < b:
		return -1
	}
	return 1
}

// less reports whether key (start, end, id) sorts before node n.
func less[V comparable](start, end string, id uint64, n *node[V]) bool {
	if start != n.start {
		return start < n.start
	}
	if c := cmpEnd(end, n.end); c != 0 {
		return c < 0
	}
	return id < n.id
}

// fix recomputes n.maxEnd from n and its children.
func fix[V comparable](n *node[V]) {
	m := n.end
	if n.left != nil && cmpEnd(n.left.maxEnd, m) > 0 {
		m = n.left.maxEnd
	}
	if n.right != nil && cmpEnd(n.right.maxEnd, m) > 0 {
		m = n.right.maxEnd
	}
	n.maxEnd = m
}

func insert[V comparable](n, x *node[V]) *node[V] {
	if n == nil {
		return x
	}
	if x.prio > n.prio {
		x.left, x.right = split(n, x.start, x.end, x.id)
		fix(x)
		return x
	}
	if less(x.start, x.end, x.id, n) {
		n.left = insert(n.left, x)
	} else {
		n.right = insert(n.right, x)
	}
	fix(n)
	return n
}

// split divides n into the nodes sorting before (start, end, id) and the rest.
func split[V comparable](n *node[V], start, end string, id uint64) (l, r *node[V]) {
	if n == nil {
		return nil, nil
	}
	if less(start, end, id, n) {
		l, n.left = split(n.left, start, end, id)
		fix(n)
		return l, n
	}
	n.right, r = split(n.right, start, end, id)
	fix(n)
	return n, r
}

// merge joins two treaps where every node of l sorts before every node of r.
func merge[V comparable](l, r *node[V]) *node[V] {
	switch {
	case l == nil:
		return r
	case r == nil:
		return l
	case l.prio > r.prio:
		l.right = merge(l.right, r)
		fix(l)
		return l
	}
	r.left = merge(l, r.left)
	fix(r)
	return r
}

func remove[V comparable](n *node[V], start, end string, id uint64) *node[V] {
	if n == nil {
		return nil
	}
	switch {
	case n.id == id:
		return merge(n.left, n.right)
	case less(start, end, id, n):
		n.left = remove(n.left, start, end, id)
	default:
		n.right = remove(n.right, start, end, id)
	}
	fix(n)
	return n
}

// stab reports the intervals of n's subtree that contain key, and whether to go on.
func stab[V comparable](n *node[V], key string, fn func(V) bool) bool {
	// No interval below n reaches past key: nothing here can contain it.
	if n == nil || !endAfter(n.maxEnd, key) {
		return true
	}
	if !stab(n.left, key, fn) {
		return false
	}
	// n and its right subtree all start after key.
	if n.start > key {
		return true
	}
	if endAfter(n.end, key) && !fn(n.v) {
		return false
	}
	return stab(n.right, key, fn)
}

// mix turns sequential insertion ids into well-spread treap priorities (splitmix64's
// finalizer). Deriving them from the id keeps trees, and so tests and benchmarks,
// reproducible, while the order keys arrive in cannot unbalance the tree.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
