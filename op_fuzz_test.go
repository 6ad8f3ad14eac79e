package ember

import (
	"bytes"
	"testing"

	"github.com/ember-kv/ember/internal/mvcc"
)

// FuzzGetPrefixRangeEnd checks the range-end computation: a key is inside [prefix, end) exactly
// when it starts with prefix.
func FuzzGetPrefixRangeEnd(f *testing.F) {
	for _, seed := range [][2]string{{"a", "a"}, {"a/", "a/b"}, {"\xff", "\xff\xff"}, {"a\xff", "b"}, {"", "x"}, {"\xff\xff", "\xff"}} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, prefix, key string) {
		if prefix == "" {
			return // WithPrefix on "" means every key; checked below through the Op
		}
		end := mvcc.PrefixEnd([]byte(prefix))
		kr := mvcc.NewKeyRange([]byte(prefix), end)
		in := kr.Contains(key)
		if want := len(key) > 0 && bytes.HasPrefix([]byte(key), []byte(prefix)); in != want {
			t.Fatalf("prefix %q end %q: contains(%q) = %v, want %v", prefix, end, key, in, want)
		}
		if GetPrefixRangeEnd(prefix) != string(end) {
			t.Fatal("GetPrefixRangeEnd disagrees with getPrefix")
		}
	})
}

func TestWithPrefix_EmptyKeyCoversAll(t *testing.T) {
	op := OpGet("", WithPrefix())
	kr := mvcc.NewKeyRange(op.key, op.end)
	for _, k := range []string{"\x00", "a", "\xff\xff"} {
		if !kr.Contains(k) {
			t.Fatalf("WithPrefix on the empty key misses %q", k)
		}
	}
}
