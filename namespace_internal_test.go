package ember

import (
	"bytes"
	"testing"

	"github.com/ember-kv/ember/internal/mvcc"
)

// Keys and ranges are prefixed as clientv3's namespace does, except that a range to the end of
// a namespace whose prefix ends in 0xff stops at the prefix's end instead of escaping it.
func TestNamespace_KeyTranslation(t *testing.T) {
	tests := []struct {
		name    string
		ns      string
		op      Op
		key     string
		end     string
		refused bool // the key stays empty, so the member refuses it with ErrEmptyKey
	}{
		{name: "single key", ns: "a/", op: OpGet("k"), key: "a/k"},
		{name: "range", ns: "a/", op: OpGet("k", WithRange("m")), key: "a/k", end: "a/m"},
		{name: "prefix", ns: "a/", op: OpGet("k", WithPrefix()), key: "a/k", end: "a/l"},
		{name: "prefix of empty key is the namespace", ns: "a/", op: OpGet("", WithPrefix()), key: "a/\x00", end: "a0"},
		{name: "prefix of 0xff key runs to the namespace end", ns: "a/", op: OpGet("\xff", WithPrefix()), key: "a/\xff", end: "a0"},
		{name: "from key", ns: "a/", op: OpGet("k", WithFromKey()), key: "a/k", end: "a0"},
		{name: "from empty key", ns: "a/", op: OpGet("", WithFromKey()), key: "a/\x00", end: "a0"},
		{name: "prefix ending in 0xff", ns: "a\xff", op: OpGet("k", WithFromKey()), key: "a\xffk", end: "b"},
		{name: "prefix of only 0xff", ns: "\xff\xff", op: OpGet("k", WithFromKey()), key: "\xff\xffk", end: "\x00"},
		{name: "delete range", ns: "a/", op: OpDelete("k", WithPrefix()), key: "a/k", end: "a/l"},
		{name: "put", ns: "a/", op: OpPut("k", "v"), key: "a/k"},
		{name: "empty key", ns: "a/", op: OpGet(""), refused: true},
		{name: "empty key with range end", ns: "a/", op: OpGet("", WithRange("b")), refused: true, end: "a/b"},
		{name: "empty put", ns: "a/", op: OpPut("", "v"), refused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Store{ns: tt.ns}
			got := s.nsOp(tt.op)
			if tt.refused {
				if len(got.key) != 0 {
					t.Fatalf("key %q, want it left empty", got.key)
				}
			} else if string(got.key) != tt.key {
				t.Fatalf("key %q, want %q", got.key, tt.key)
			}
			if string(got.end) != tt.end {
				t.Fatalf("end %q, want %q", got.end, tt.end)
			}
			if tt.refused || len(got.end) == 0 {
				return
			}
			fromKeyEnd := []byte{0} // a range end with no upper bound
			// Never outside [prefix, end of prefix).
			nsEnd := mvcc.PrefixEnd([]byte(tt.ns))
			if !bytes.HasPrefix(got.key, []byte(tt.ns)) {
				t.Fatalf("key %q leaves prefix %q", got.key, tt.ns)
			}
			if !bytes.Equal(nsEnd, fromKeyEnd) && !bytes.Equal(got.end, fromKeyEnd) && bytes.Compare(got.end, nsEnd) > 0 {
				t.Fatalf("end %q beyond the namespace end %q", got.end, nsEnd)
			}
			if bytes.Equal(got.end, fromKeyEnd) && !bytes.Equal(nsEnd, fromKeyEnd) {
				t.Fatalf("end runs to the last key, beyond the namespace end %q", nsEnd)
			}
		})
	}
}

// A transaction's compares and its nested ops, at any depth, are prefixed; the caller's op is
// left as it was.
func TestNamespace_TxnTranslation(t *testing.T) {
	s := &Store{ns: "a/"}
	inner := OpTxn([]Cmp{Compare(Value("x").WithPrefix(), "=", "1")}, []Op{OpPut("y", "2")}, []Op{OpGet("z", WithFromKey())})
	op := OpTxn([]Cmp{Compare(Version("c"), ">", 0), Compare(ModRevision("r").WithRange("s"), "<", 9)},
		[]Op{inner, OpDelete("d", WithPrevKV())}, []Op{OpGet("g")})
	got := s.nsOp(op)

	cmps, thenOps, elseOps := got.Txn()
	if string(cmps[0].c.Key) != "a/c" || cmps[0].c.End != nil {
		t.Fatalf("compare 0: %q %q", cmps[0].c.Key, cmps[0].c.End)
	}
	if string(cmps[1].c.Key) != "a/r" || string(cmps[1].c.End) != "a/s" {
		t.Fatalf("compare 1: %q %q", cmps[1].c.Key, cmps[1].c.End)
	}
	icmps, ithen, ielse := thenOps[0].Txn()
	if string(icmps[0].c.Key) != "a/x" || string(icmps[0].c.End) != "a/y" {
		t.Fatalf("nested compare: %q %q", icmps[0].c.Key, icmps[0].c.End)
	}
	if string(ithen[0].key) != "a/y" || string(ielse[0].key) != "a/z" || string(ielse[0].end) != "a0" {
		t.Fatalf("nested ops: %q, %q..%q", ithen[0].key, ielse[0].key, ielse[0].end)
	}
	if string(thenOps[1].key) != "a/d" || string(elseOps[0].key) != "a/g" {
		t.Fatalf("ops: %q, %q", thenOps[1].key, elseOps[0].key)
	}
	// The original is untouched.
	ocmps, othen, _ := op.Txn()
	if string(ocmps[0].c.Key) != "c" || string(othen[1].key) != "d" {
		t.Fatalf("caller's op changed: %q, %q", ocmps[0].c.Key, othen[1].key)
	}
	if _, t2, _ := othen[0].Txn(); string(t2[0].key) != "y" {
		t.Fatalf("caller's nested op changed: %q", t2[0].key)
	}
}

// Namespaces nest by concatenating their prefixes.
func TestNamespace_Nested(t *testing.T) {
	s := &Store{}
	if got := Namespace(Namespace(s, "a/"), "b/").ns; got != "a/b/" {
		t.Fatalf("nested prefix %q, want a/b/", got)
	}
}
