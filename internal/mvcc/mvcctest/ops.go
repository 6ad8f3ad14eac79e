// Package mvcctest builds the requests that tests of internal/mvcc and of the root package write
// to a state. It imports only internal/wire, so that internal/mvcc's own tests can use it too.
package mvcctest

import "github.com/ember-kv/ember/internal/wire"

// Put is a put of key=val.
func Put(key, val string) wire.Op {
	return wire.Op{Kind: wire.OpPut, Key: []byte(key), Value: []byte(val)}
}

// Del deletes key, or [key, end) when end is set ("\x00" = from key).
func Del(key, end string) wire.Op {
	op := wire.Op{Kind: wire.OpDelete, Key: []byte(key)}
	if end != "" {
		op.End = []byte(end)
	}
	return op
}
