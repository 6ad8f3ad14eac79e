package ember

import (
	"bytes"

	"github.com/ember-kv/ember/internal/mvcc"
)

// Namespace returns a view of s in which every key is prefixed with prefix, the equivalent of
// etcd's client/v3/namespace applied to a client: Put, Get, Delete, Do, Txn (compares and nested
// ops included) and Watch prefix the keys they are given and strip the prefix from the keys
// they return, and TimeToLive lists only the attached keys under the prefix, without it. A range
// never leaves the prefix: WithPrefix or WithFromKey on the empty key, or a range end of "\x00",
// covers the namespace to its end. Namespaces nest: Namespace(Namespace(s, "a/"), "b/") is
// Namespace(s, "a/b/").
//
// The view is a *Store, so package concurrency (sessions, locks, elections, STM) runs inside a
// namespace unchanged. Everything that has no key is shared with s, as with etcd: revisions,
// Compact, leases (IDs, Grant, Revoke, KeepAlive, Leases), membership, Status, Snapshot, HashKV,
// RequestProgress, and Close, which closes the member.
//
// As with etcd's namespace, the empty key is refused (ErrEmptyKey) rather than naming the prefix
// itself, and a namespace does not restrict what s, or another view of it, can reach.
func Namespace(s *Store, prefix string) *Store {
	return &Store{core: s.core, ns: s.ns + prefix}
}

// nsKey returns key under the namespace prefix. An empty key stays empty, so that the request
// is refused as it would be outside a namespace.
func (s *Store) nsKey(key []byte) []byte {
	if len(key) == 0 {
		return key
	}
	k := make([]byte, 0, len(s.ns)+len(key))
	return append(append(k, s.ns...), key...)
}

// nsEnd returns the end of a range under the namespace prefix: none stays none, and "\x00" (to
// the last key) becomes the end of the namespace.
func (s *Store) nsEnd(end []byte) []byte {
	switch {
	case len(end) == 0:
		return end
	case len(end) == 1 && end[0] == 0:
		return mvcc.PrefixEnd([]byte(s.ns))
	}
	e := make([]byte, 0, len(s.ns)+len(end))
	return append(append(e, s.ns...), end...)
}

// nsOp returns op with every key, compares and nested ops included, under the namespace prefix.
// It never modifies op, which the caller may reuse.
func (s *Store) nsOp(op Op) Op {
	if op.t != tTxn {
		op.key, op.end = s.nsKey(op.key), s.nsEnd(op.end)
		return op
	}
	cmps := make([]Cmp, len(op.cmps))
	for i, c := range op.cmps {
		c.c.Key, c.c.End = s.nsKey(c.c.Key), s.nsEnd(c.c.End)
		cmps[i] = c
	}
	op.cmps, op.thenOps, op.elseOps = cmps, s.nsOps(op.thenOps), s.nsOps(op.elseOps)
	return op
}

func (s *Store) nsOps(ops []Op) []Op {
	if ops == nil {
		return nil
	}
	out := make([]Op, len(ops))
	for i, o := range ops {
		out[i] = s.nsOp(o)
	}
	return out
}

// nsStrip removes the namespace prefix from the keys of a response. The response is the
// caller's own (built for this request), so its pairs are changed in place.
func (s *Store) nsStrip(r OpResponse) {
	n := len(s.ns)
	switch {
	case r.get != nil:
		for _, kv := range r.get.Kvs {
			kv.Key = kv.Key[n:]
		}
	case r.put != nil:
		if r.put.PrevKv != nil {
			r.put.PrevKv.Key = r.put.PrevKv.Key[n:]
		}
	case r.del != nil:
		for _, kv := range r.del.PrevKvs {
			kv.Key = kv.Key[n:]
		}
	case r.txn != nil:
		for _, or := range r.txn.Responses {
			s.nsStrip(or)
		}
	}
}

// nsKeys keeps the keys under the namespace prefix, without it.
func (s *Store) nsKeys(keys [][]byte) [][]byte {
	var out [][]byte
	for _, k := range keys {
		if bytes.HasPrefix(k, []byte(s.ns)) {
			out = append(out, k[len(s.ns):])
		}
	}
	return out
}

// stripEvents returns events whose keys lack the first n bytes. Events are shared between the
// watchers of a change, so they are copied, not changed.
func stripEvents(events []*Event, n int) []*Event {
	out := make([]*Event, len(events))
	evs := make([]Event, len(events))
	for i, e := range events {
		evs[i] = Event{Type: e.Type, Kv: stripKV(e.Kv, n), PrevKv: stripKV(e.PrevKv, n)}
		out[i] = &evs[i]
	}
	return out
}

func stripKV(kv *KeyValue, n int) *KeyValue {
	if kv == nil {
		return nil
	}
	c := *kv
	c.Key = c.Key[n:]
	return &c
}
