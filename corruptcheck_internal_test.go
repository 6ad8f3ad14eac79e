package ember

import (
	"errors"
	"testing"
)

// The leader's judgement of its members' hashes, as etcd v3.6's PeriodicCheck: hashes are
// compared only at the same compact revision, a member ahead of the leader after the barrier
// diverged whatever its hash, and a member that did not answer is not judged.
func TestDivergent(t *testing.T) {
	mine := &HashKVResponse{Hash: 0xaaaa, CompactRevision: 5, HashRevision: 20}
	ans := func(id string, rev, compact int64, hash uint32) peerHash {
		return peerHash{id: id, resp: &HashKVResponse{Header: ResponseHeader{Revision: rev}, CompactRevision: compact, HashRevision: 20, Hash: hash}}
	}
	tests := []struct {
		name  string
		peers []peerHash
		want  string
	}{
		{"all equal", []peerHash{ans("m2", 20, 5, 0xaaaa), ans("m3", 22, 5, 0xaaaa)}, ""},
		{"hash differs at the same compact revision", []peerHash{ans("m2", 20, 5, 0xaaaa), ans("m3", 20, 5, 0xbbbb)}, "m3"},
		{"hash differs, compacted further (not comparable)", []peerHash{ans("m2", 20, 7, 0xbbbb)}, ""},
		{"hash differs, compacted less (not comparable)", []peerHash{ans("m2", 20, 3, 0xbbbb)}, ""},
		{"revision ahead of the leader's", []peerHash{ans("m2", 26, 5, 0xaaaa)}, "m2"},
		{"compact revision ahead of the leader's", []peerHash{ans("m2", 20, 9, 0xaaaa)}, "m2"},
		{"no answer", []peerHash{{id: "m2", err: errors.New("unreachable")}}, ""},
		{"first of two", []peerHash{ans("m2", 20, 5, 0xbbbb), ans("m3", 20, 5, 0xcccc)}, "m2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// After the barrier the leader is at revision 25, compacted at 8.
			got, why := divergent(mine, 25, 8, tc.peers)
			if got != tc.want || (got != "") != (why != "") {
				t.Fatalf("divergent = %q (%s), want %q", got, why, tc.want)
			}
		})
	}
}

// A member answers the leader's hash request with its HashKV, and refuses a revision it cannot
// hash with the same errors as HashKV.
func TestHandleHashKV(t *testing.T) {
	s, err := Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if _, err := s.Put(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	want, err := s.HashKV(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	call := func(rev int64) (*HashKVResponse, error) {
		b, err := s.dispatchRPC(ctx, mHashKV, encodeRev(rev))
		if err != nil {
			return nil, err
		}
		return decodeHashKV(b)
	}
	got, err := call(3)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash != want.Hash || got.HashRevision != 3 || got.Header.Revision != 4 || got.CompactRevision != want.CompactRevision {
		t.Fatalf("hash answer %+v, want hash %#x at 3, revision 4", got, want.Hash)
	}
	if _, err := call(99); !errors.Is(err, ErrFutureRev) {
		t.Fatalf("future revision: %v", err)
	}
}
