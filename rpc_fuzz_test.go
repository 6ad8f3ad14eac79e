package ember

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember/internal/peer"
	"github.com/ember-kv/ember/internal/wire"
)

func encodeFields(fields ...any) []byte {
	e := wire.Encoder{}
	for _, f := range fields {
		switch v := f.(type) {
		case string:
			e.String(v)
		case bool:
			e.Bool(v)
		case int64:
			e.Varint(v)
		case uint64:
			e.Uvarint(v)
		case byte:
			e.Byte(v)
		default:
			panic(fmt.Sprintf("encodeFields: %T", f))
		}
	}
	return e.B
}

func forwardedTxn(id uint64, t *wire.Txn) []byte {
	return (&wire.Command{ID: wire.RequestID{Client: 0xf022, Seq: id}, Kind: wire.KindTxn, Txn: t}).Marshal(nil)
}

// nestedTxn returns a txn nested depth levels deep (the outermost counts as 1).
func nestedTxn(depth int) *wire.Txn {
	t := &wire.Txn{Success: wireOps(wirePut("deep", "v"))}
	for i := 1; i < depth; i++ {
		t = &wire.Txn{Success: wireOps(wire.Op{Kind: wire.OpTxn, Txn: t})}
	}
	return t
}

type rpcSeed struct {
	method uint8
	data   []byte
}

// rpcSeeds are valid requests for every method, in the formats peer.go documents.
func rpcSeeds() []rpcSeed {
	cmd := func(c *wire.Command) []byte { return c.Marshal(nil) }
	rangeOp := wireGet("seed/")
	rangeOp.End, rangeOp.Limit, rangeOp.SortTarget, rangeOp.SortOrder, rangeOp.KeysOnly = []byte("seed0"), 3, wire.SortByMod, wire.SortDescend, true
	put := wirePut("seed/p", "v")
	put.PrevKV = true
	valueCmp := wire.Compare{Target: wire.TargetValue, Result: wire.CompareNotEqual, Key: []byte("seed/a"), Value: []byte("x")}
	return []rpcSeed{
		{mForward, forwardedTxn(1, &wire.Txn{Success: wireOps(wirePut("seed/a", "1"))})},
		{mForward, forwardedTxn(2, &wire.Txn{
			Compares: []wire.Compare{wireCmp("seed/a"), valueCmp},
			Success:  wireOps(rangeOp, put, wireDel("seed/x", "seed/z"), wireTxnOp([]wire.Compare{wireCmp("seed/b")}, wireOps(wirePut("seed/b", "2")), wireOps(wireGet("seed/b")))),
			Failure:  wireOps(wireDel("seed/", "\x00")),
		})},
		{mForward, forwardedTxn(3, nestedTxn(4))},
		{mForward, (&wire.Command{Kind: wire.KindTxn, Txn: &wire.Txn{Success: wireOps(wireGet("seed/a"))}}).Marshal(nil)},
		{mForward, cmd(&wire.Command{ID: wire.RequestID{Client: 0xf022, Seq: 4}, Kind: wire.KindCompact, Revision: 1})},
		{mForward, cmd(&wire.Command{Kind: wire.KindLeaseGrant, LeaseID: 77, LeaseTTL: 60})},
		{mForward, cmd(&wire.Command{Kind: wire.KindLeaseRevoke, LeaseID: 77})},
		{mForward, cmd(&wire.Command{Kind: wire.KindLeaseCheckpoint, Checkpoints: []wire.LeaseCheckpoint{{ID: 77, RemainingMs: 1000}}})},
		{mForward, cmd(&wire.Command{Kind: wire.KindLeaderStart, Term: 1, NodeID: "x"})},
		{mForwardBatch, wire.AppendBatch(nil, [][]byte{forwardedTxn(5, &wire.Txn{Success: wireOps(wirePut("seed/c", "1"))}), cmd(&wire.Command{Kind: wire.KindLeaseGrant, LeaseID: 78, LeaseTTL: 60})})},
		{mReadIndex, nil},
		{mJoin, encodeFields("seed-node", "127.0.0.1:1", true)},
		{mPromote, encodeFields("seed-node")},
		{mRemove, encodeFields("seed-node")},
		{mUpdate, encodeFields("seed-node", "127.0.0.1:2")},
		{mTransfer, encodeFields("")},
		{mTransfer, encodeFields("seed-node")},
		{mStatus, nil},
		{mConfirm, encodeFields("seed-node", uint64(2), uint64(1))},
		{mKeepAlive, encodeFields(int64(77))},
		{mTimeToLive, encodeFields(int64(77), true)},
		{mHashKV, encodeFields(int64(0))},
		{mHashKV, encodeFields(int64(2))},
		{0, nil},
		{200, []byte{1, 2, 3}},
	}
}

// removesSelf reports whether a request asks this member to remove itself: a well-formed,
// legitimate request after which a single-member cluster has no voter left, so the store would
// rightly stop serving writes.
func removesSelf(s *Store, method uint8, data []byte) bool {
	if method != mRemove {
		return false
	}
	d := wire.NewDecoder(data)
	id := d.String()
	return d.Finish() == nil && id == s.ID()
}

// resetMembers removes every member but this one, so that members a fuzzed join added do not pile
// up across iterations.
func resetMembers(t testing.TB, s *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conf, err := s.configuration()
	if err != nil {
		t.Fatalf("configuration: %v", err)
	}
	for _, srv := range conf.Servers {
		if string(srv.ID) == s.ID() {
			continue
		}
		if err := s.RemoveMember(ctx, string(srv.ID)); err != nil && !errors.Is(err, ErrMemberNotFound) {
			t.Fatalf("remove %s: %v", srv.ID, err)
		}
	}
}

// checkServes fails unless the store takes a write and reads it back linearizably.
func checkServes(t testing.TB, s *Store, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const key = "\xffrpc-probe"
	val := fmt.Sprint(n)
	p, err := s.Put(ctx, key, val)
	if err != nil {
		t.Fatalf("store no longer takes a Put: %v", err)
	}
	g, err := s.Get(ctx, key)
	if err != nil {
		t.Fatalf("store no longer serves a linearizable Get: %v", err)
	}
	if len(g.Kvs) != 1 || string(g.Kvs[0].Value) != val || g.Kvs[0].ModRevision != p.Header.Revision {
		t.Fatalf("probe read %v, want %q at %d", g.Kvs, val, p.Header.Revision)
	}
}

// callRPC calls handleRPC with the fuzz deadline, as if from a connection of this member (so
// that members-only methods reach their decoders), and checks the shape of any error: peers get
// a *peer.Error with a known, non-OK code.
func callRPC(t testing.TB, s *Store, method uint8, data []byte) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(peer.WithRemoteID(context.Background(), s.ID()), 100*time.Millisecond)
	defer cancel()
	var resp []byte
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("handleRPC(%d, %x) panicked: %v", method, data, p)
			}
		}()
		resp, err = s.handleRPC(ctx, method, data)
	}()
	if err != nil {
		var pe *peer.Error
		if !errors.As(err, &pe) || pe.Code == wire.CodeOK || !pe.Code.Valid() {
			t.Fatalf("handleRPC(%d, %x): error %v (%T) is not a peer error with a known code", method, data, err, err)
		}
	}
	return resp, err
}

// FuzzHandleRPC sends arbitrary requests to one store's peer handler: it must never panic, must
// answer errors as peer errors, and the store must keep serving writes and linearizable reads.
func FuzzHandleRPC(f *testing.F) {
	s := emberTestStore(f)
	for _, sd := range rpcSeeds() {
		f.Add(sd.method, sd.data)
	}
	n := 0
	f.Fuzz(func(t *testing.T, method uint8, data []byte) {
		if removesSelf(s, method, data) {
			t.Skip("removing the only voter legitimately stops the cluster")
		}
		n++
		callRPC(t, s, method, data)
		resetMembers(t, s)
		checkServes(t, s, n)
	})
}

// TestHandleRPC_MalformedInput lists malformed requests for every method. Each must be answered
// with CodeMalformed (or, for the neighbours listed, the specific code), change nothing, and leave
// the store serving.
func TestHandleRPC_MalformedInput(t *testing.T) {
	s := emberTestStore(t)
	validPut := forwardedTxn(1, &wire.Txn{Success: wireOps(wirePut("k", "v"))})
	// Without a request ID the layout is fixed: version, kind, client 0, seq 0, txn presence, ...
	noID := (&wire.Command{Kind: wire.KindTxn, Txn: &wire.Txn{Success: wireOps(wirePut("k", "v"))}}).Marshal(nil)
	// with sets byte i of b's body (negative: from the end of the body) and reseals it, so that
	// the decoder, not the checksum, must refuse it.
	with := func(b []byte, i int, v byte) []byte {
		b = bytes.Clone(b[:len(b)-4])
		if i < 0 {
			i += len(b)
		}
		b[i] = v
		return sealed(b)
	}
	unknownOp := forwardedTxn(2, &wire.Txn{Success: wireOps(wire.Op{Kind: 9, Key: []byte("k")})})
	unknownTarget := forwardedTxn(3, &wire.Txn{Compares: []wire.Compare{{Target: 7, Key: []byte("k")}}})
	unknownResult := forwardedTxn(4, &wire.Txn{Compares: []wire.Compare{{Result: 9, Key: []byte("k")}}})
	badSort := wireGet("k")
	badSort.SortTarget = 9
	tooLarge := forwardedTxn(5, &wire.Txn{Success: wireOps(wirePut("k", strings.Repeat("x", defaultMaxRequestBytes)))})
	// Version 2, no ID, no retry floor, txn present, 0 compares, then a success count of 100
	// with nothing behind it.
	hugeCount := sealed([]byte{2, byte(wire.KindTxn), 0, 0, 0, 1, 0, 100})
	compact := (&wire.Command{Kind: wire.KindCompact, Revision: 1}).Marshal(nil)
	flipped := bytes.Clone(validPut)
	flipped[len(flipped)/2] ^= 0x10

	tests := []struct {
		name   string
		method uint8
		data   []byte
		wCode  wire.Code
	}{
		{name: "forward: empty", method: mForward, data: nil, wCode: wire.CodeMalformed},
		{name: "forward: truncated command", method: mForward, data: validPut[:len(validPut)-1], wCode: wire.CodeMalformed},
		{name: "forward: trailing byte", method: mForward, data: append(bytes.Clone(validPut), 0), wCode: wire.CodeMalformed},
		{name: "forward: unknown format version", method: mForward, data: with(validPut, 0, 3), wCode: wire.CodeMalformed},
		{name: "forward: unknown command kind", method: mForward, data: with(validPut, 1, 99), wCode: wire.CodeMalformed},
		{name: "forward: txn presence byte 2", method: mForward, data: with(noID, 5, 2), wCode: wire.CodeMalformed},
		{name: "forward: txn missing", method: mForward, data: (&wire.Command{Kind: wire.KindTxn}).Marshal(nil), wCode: wire.CodeMalformed},
		{name: "forward: unknown put flag", method: mForward, data: with(validPut, -2, 0x08), wCode: wire.CodeMalformed},
		{name: "forward: unknown op kind", method: mForward, data: unknownOp, wCode: wire.CodeMalformed},
		{name: "forward: unknown compare target", method: mForward, data: unknownTarget, wCode: wire.CodeMalformed},
		{name: "forward: unknown compare result", method: mForward, data: unknownResult, wCode: wire.CodeMalformed},
		{name: "forward: unknown sort target", method: mForward, data: forwardedTxn(6, &wire.Txn{Success: wireOps(badSort)}), wCode: wire.CodeMalformed},
		{name: "forward: op count past the input", method: mForward, data: hugeCount, wCode: wire.CodeMalformed},
		{name: "forward: request ID varint overflow", method: mForward, data: sealed(append([]byte{2, byte(wire.KindCompact)}, bytes.Repeat([]byte{0xff}, 11)...)), wCode: wire.CodeMalformed},
		{name: "forward: a bit flipped (checksum)", method: mForward, data: flipped, wCode: wire.CodeMalformed},
		{name: "forward: txn nested too deep", method: mForward, data: forwardedTxn(7, nestedTxn(33)), wCode: wire.CodeMalformed},
		{name: "forward: leader start from a peer", method: mForward, data: (&wire.Command{Kind: wire.KindLeaderStart, Term: 99, NodeID: "evil"}).Marshal(nil), wCode: wire.CodeMalformed},
		{name: "forward: compact with trailing byte", method: mForward, data: sealed(append(compact[:len(compact)-4], 0)), wCode: wire.CodeMalformed},
		{name: "forward: checkpoint count past the input", method: mForward, data: sealed([]byte{2, byte(wire.KindLeaseCheckpoint), 0, 0, 50, 2, 2}), wCode: wire.CodeMalformed},
		{name: "forward: too large (not malformed)", method: mForward, data: tooLarge, wCode: wire.CodeRequestTooLarge},
		{name: "forward: empty key (not malformed)", method: mForward, data: forwardedTxn(8, &wire.Txn{Success: wireOps(wirePut("", "v"))}), wCode: wire.CodeEmptyKey},

		{name: "forward batch: empty", method: mForwardBatch, data: nil, wCode: wire.CodeMalformed},
		{name: "forward batch: no commands", method: mForwardBatch, data: wire.AppendBatch(nil, nil), wCode: wire.CodeMalformed},
		{name: "forward batch: truncated", method: mForwardBatch, data: batchOf(validPut)[:len(validPut)], wCode: wire.CodeMalformed},
		{name: "forward batch: trailing byte", method: mForwardBatch, data: append(batchOf(validPut), 0), wCode: wire.CodeMalformed},
		{name: "forward batch: too many commands", method: mForwardBatch, data: batchOf(slices.Repeat([][]byte{validPut}, forwardBatchMax+1)...), wCode: wire.CodeMalformed},

		{name: "read index: payload", method: mReadIndex, data: []byte{0}, wCode: wire.CodeMalformed},
		{name: "join: empty", method: mJoin, data: nil, wCode: wire.CodeMalformed},
		{name: "join: no address", method: mJoin, data: encodeFields("n9"), wCode: wire.CodeMalformed},
		{name: "join: no learner flag", method: mJoin, data: encodeFields("n9", "127.0.0.1:1"), wCode: wire.CodeMalformed},
		{name: "join: learner byte 2", method: mJoin, data: encodeFields("n9", "127.0.0.1:1", byte(2)), wCode: wire.CodeMalformed},
		{name: "join: trailing byte", method: mJoin, data: encodeFields("n9", "127.0.0.1:1", true, byte(0)), wCode: wire.CodeMalformed},
		{name: "join: empty ID", method: mJoin, data: encodeFields("", "127.0.0.1:1", false), wCode: wire.CodeMalformed},
		{name: "join: empty address", method: mJoin, data: encodeFields("n9", "", false), wCode: wire.CodeMalformed},
		{name: "join: string past the input", method: mJoin, data: []byte{5, 'a'}, wCode: wire.CodeMalformed},
		{name: "promote: empty", method: mPromote, data: nil, wCode: wire.CodeMalformed},
		{name: "promote: trailing byte", method: mPromote, data: encodeFields("n9", byte(0)), wCode: wire.CodeMalformed},
		{name: "remove: empty", method: mRemove, data: nil, wCode: wire.CodeMalformed},
		{name: "remove: string past the input", method: mRemove, data: []byte{40, 'x'}, wCode: wire.CodeMalformed},
		{name: "update: empty", method: mUpdate, data: nil, wCode: wire.CodeMalformed},
		{name: "update: no address", method: mUpdate, data: encodeFields("n9"), wCode: wire.CodeMalformed},
		{name: "update: empty address", method: mUpdate, data: encodeFields("n9", ""), wCode: wire.CodeMalformed},
		{name: "update: trailing byte", method: mUpdate, data: encodeFields("n9", "127.0.0.1:1", byte(0)), wCode: wire.CodeMalformed},
		{name: "hash: empty", method: mHashKV, data: nil, wCode: wire.CodeMalformed},
		{name: "hash: negative revision", method: mHashKV, data: encodeFields(int64(-1)), wCode: wire.CodeMalformed},
		{name: "hash: trailing byte", method: mHashKV, data: encodeFields(int64(0), byte(0)), wCode: wire.CodeMalformed},
		{name: "hash: future revision", method: mHashKV, data: encodeFields(int64(1 << 40)), wCode: wire.CodeFutureRev},
		{name: "transfer: empty", method: mTransfer, data: nil, wCode: wire.CodeMalformed},
		{name: "transfer: trailing byte", method: mTransfer, data: encodeFields("", byte(1)), wCode: wire.CodeMalformed},
		{name: "status: payload", method: mStatus, data: []byte{1}, wCode: wire.CodeMalformed},
		{name: "keepalive: empty", method: mKeepAlive, data: nil, wCode: wire.CodeMalformed},
		{name: "keepalive: trailing byte", method: mKeepAlive, data: encodeFields(int64(77), byte(0)), wCode: wire.CodeMalformed},
		{name: "keepalive: varint overflow", method: mKeepAlive, data: bytes.Repeat([]byte{0xff}, 11), wCode: wire.CodeMalformed},
		{name: "time to live: no keys flag", method: mTimeToLive, data: encodeFields(int64(77)), wCode: wire.CodeMalformed},
		{name: "time to live: keys flag 2", method: mTimeToLive, data: encodeFields(int64(77), byte(2)), wCode: wire.CodeMalformed},
		{name: "time to live: trailing byte", method: mTimeToLive, data: encodeFields(int64(77), true, byte(0)), wCode: wire.CodeMalformed},
		{name: "unknown method 0", method: 0, data: nil, wCode: wire.CodeMalformed},
		{name: "confirm: empty", method: mConfirm, data: nil, wCode: wire.CodeMalformed},
		{name: "confirm: no round", method: mConfirm, data: encodeFields("m1", uint64(1)), wCode: wire.CodeMalformed},
		{name: "confirm: trailing byte", method: mConfirm, data: encodeFields("m1", uint64(1), uint64(1), byte(0)), wCode: wire.CodeMalformed},
		{name: "confirm: another leader (not malformed)", method: mConfirm, data: encodeFields("m1", uint64(1), uint64(1)), wCode: wire.CodeNotLeader},
		{name: "unknown method 11", method: 11, data: validPut, wCode: wire.CodeMalformed},
		{name: "unknown method 255", method: 255, data: []byte{1}, wCode: wire.CodeMalformed},
	}
	before := storeRev(t, s)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := callRPC(t, s, tc.method, tc.data)
			if err == nil {
				t.Fatalf("accepted")
			}
			if code := errorCode(err); code != tc.wCode {
				t.Fatalf("code %d (%v), want %d", code, err, tc.wCode)
			}
		})
	}
	// Every proper prefix of a valid, rich command is malformed: no field is optional.
	rich := rpcSeeds()[1].data
	for n := 0; n < len(rich); n++ {
		if _, err := callRPC(t, s, mForward, rich[:n]); errorCode(err) != wire.CodeMalformed {
			t.Fatalf("forward of the first %d of %d bytes: %v, want malformed", n, len(rich), err)
		}
	}
	if after := storeRev(t, s); after != before {
		t.Fatalf("malformed requests moved the revision from %d to %d", before, after)
	}
	if m, err := s.Members(emberTestCtx(t)); err != nil || len(m) != 1 {
		t.Fatalf("members %v, %v; want this member only", m, err)
	}
	checkServes(t, s, 1)
}

func batchOf(cmds ...[]byte) []byte { return wire.AppendBatch(nil, cmds) }

// TestHandleRPC_ForwardBatchAnswersEach: a batch whose commands fail on their own merits is
// served, and each command gets its own answer, as it would alone: the valid ones are applied,
// the others are refused with their own codes.
func TestHandleRPC_ForwardBatchAnswersEach(t *testing.T) {
	s := emberTestStore(t)
	valid := forwardedTxn(1, &wire.Txn{Success: wireOps(wirePut("each/a", "1"))})
	tests := []struct {
		data  []byte
		wCode wire.Code // CodeOK: applied
	}{
		{valid, wire.CodeOK},
		{valid[:len(valid)-1], wire.CodeMalformed},
		{(&wire.Command{Kind: wire.KindLeaderStart, Term: 99, NodeID: "evil"}).Marshal(nil), wire.CodeMalformed},
		{forwardedTxn(2, &wire.Txn{Success: wireOps(wirePut("", "v"))}), wire.CodeEmptyKey},
		{forwardedTxn(3, &wire.Txn{Success: wireOps(wirePut("each/b", "2"))}), wire.CodeOK},
	}
	var cmds [][]byte
	for _, tc := range tests {
		cmds = append(cmds, tc.data)
	}
	resp, err := callRPC(t, s, mForwardBatch, batchOf(cmds...))
	if err != nil {
		t.Fatalf("batch refused: %v", err)
	}
	replies, err := wire.UnmarshalBatchReplies(resp, len(tests))
	if err != nil {
		t.Fatalf("UnmarshalBatchReplies: %v", err)
	}
	for i, tc := range tests {
		r := replies[i]
		if r.Code != tc.wCode {
			t.Fatalf("command %d: code %d (%s), want %d", i, r.Code, r.Msg, tc.wCode)
		}
		if tc.wCode != wire.CodeOK {
			continue
		}
		res, err := wire.UnmarshalResult(r.Result)
		if err != nil || res.Code != wire.CodeOK || res.Revision == 0 {
			t.Fatalf("command %d: result %+v, %v", i, res, err)
		}
	}
	for _, k := range []string{"each/a", "each/b"} {
		if g, err := s.Get(emberTestCtx(t), k); err != nil || len(g.Kvs) != 1 {
			t.Fatalf("Get %s = %v, %v; want it applied", k, g, err)
		}
	}
}

// sealed appends the CRC-32C a command ends with (internal/wire, format v2) to body.
func sealed(body []byte) []byte {
	return binary.LittleEndian.AppendUint32(slices.Clip(body), crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
}
