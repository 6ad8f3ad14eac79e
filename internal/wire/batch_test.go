package wire

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

const testBatchMax = 64

func batchSeeds() [][][]byte {
	put := benchPut().Marshal(nil)
	return [][][]byte{
		{put},
		{put, (&Command{Kind: KindCompact, Revision: 3}).Marshal(nil), {1}},
	}
}

func replySeeds() [][]BatchReply {
	return [][]BatchReply{
		{{Result: (&Result{Revision: 7}).Marshal(nil)}},
		{{Result: (&Result{Code: CodeCompacted}).Marshal(nil)}, {Code: CodeNotLeader, Msg: "ember: not the leader"}, {Code: CodeTimeout}},
	}
}

func TestBatch_RoundTrip(t *testing.T) {
	for _, cmds := range batchSeeds() {
		got, err := UnmarshalBatch(AppendBatch(nil, cmds), testBatchMax)
		if err != nil || !reflect.DeepEqual(got, cmds) {
			t.Fatalf("UnmarshalBatch = %q, %v; want %q", got, err, cmds)
		}
	}
	for _, rs := range replySeeds() {
		got, err := UnmarshalBatchReplies(AppendBatchReplies(nil, rs), len(rs))
		if err != nil || !reflect.DeepEqual(got, rs) {
			t.Fatalf("UnmarshalBatchReplies = %+v, %v; want %+v", got, err, rs)
		}
	}
}

func TestUnmarshalBatch_Malformed(t *testing.T) {
	valid := AppendBatch(nil, batchSeeds()[1])
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{2}, valid[1:]...)},
		{"no count", []byte{batchVersion}},
		{"count 0", []byte{batchVersion, 0}},
		{"count over the limit", AppendBatch(nil, make([][]byte, testBatchMax+1))},
		{"count past the input", []byte{batchVersion, 3, 1, 1}},
		{"empty command", []byte{batchVersion, 1, 0}},
		{"length past the input", []byte{batchVersion, 1, 5, 1}},
		{"truncated", valid[:len(valid)-1]},
		{"trailing byte", append(bytes.Clone(valid), 0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if cmds, err := UnmarshalBatch(tc.b, testBatchMax); !errors.Is(err, ErrMalformed) {
				t.Fatalf("UnmarshalBatch = %q, %v; want ErrMalformed", cmds, err)
			}
		})
	}
}

func TestUnmarshalBatchReplies_Malformed(t *testing.T) {
	rs := replySeeds()[1]
	valid := AppendBatchReplies(nil, rs)
	tests := []struct {
		name string
		b    []byte
		n    int
	}{
		{"empty", nil, 1},
		{"unknown version", append([]byte{2}, valid[1:]...), len(rs)},
		{"fewer replies than commands", valid, len(rs) + 1},
		{"more replies than commands", valid, len(rs) - 1},
		{"unknown reply kind", []byte{batchVersion, 1, 2}, 1},
		{"empty result", []byte{batchVersion, 1, replyResult, 0}, 1},
		{"error code OK", []byte{batchVersion, 1, replyError, byte(CodeOK), 0}, 1},
		{"unknown error code", []byte{batchVersion, 1, replyError, byte(codeMax), 0}, 1},
		{"message past the input", []byte{batchVersion, 1, replyError, byte(CodeTimeout), 9, 'x'}, 1},
		{"truncated", valid[:len(valid)-1], len(rs)},
		{"trailing byte", append(bytes.Clone(valid), 0), len(rs)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := UnmarshalBatchReplies(tc.b, tc.n); !errors.Is(err, ErrMalformed) {
				t.Fatalf("UnmarshalBatchReplies = %+v, %v; want ErrMalformed", got, err)
			}
		})
	}
}

// FuzzUnmarshalBatch: any input is refused as malformed, or decodes to commands that encode and
// decode back to themselves.
func FuzzUnmarshalBatch(f *testing.F) {
	for _, cmds := range batchSeeds() {
		f.Add(AppendBatch(nil, cmds))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cmds, err := UnmarshalBatch(b, testBatchMax)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(cmds) == 0 || len(cmds) > testBatchMax {
			t.Fatalf("%d commands accepted", len(cmds))
		}
		again, err := UnmarshalBatch(AppendBatch(nil, cmds), testBatchMax)
		if err != nil || !reflect.DeepEqual(again, cmds) {
			t.Fatalf("re-decoded %q, %v; first %q", again, err, cmds)
		}
	})
}

// FuzzUnmarshalBatchReplies: any input is refused as malformed, or decodes to replies that
// encode and decode back to themselves.
func FuzzUnmarshalBatchReplies(f *testing.F) {
	for _, rs := range replySeeds() {
		f.Add(AppendBatchReplies(nil, rs), uint8(len(rs)))
	}
	f.Fuzz(func(t *testing.T, b []byte, n uint8) {
		rs, err := UnmarshalBatchReplies(b, int(n))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(rs) != int(n) {
			t.Fatalf("%d replies, want %d", len(rs), n)
		}
		again, err := UnmarshalBatchReplies(AppendBatchReplies(nil, rs), int(n))
		if err != nil || !reflect.DeepEqual(again, rs) {
			t.Fatalf("re-decoded %+v, %v; first %+v", again, err, rs)
		}
	})
}
