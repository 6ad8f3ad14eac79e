package ember

import (
	"context"

	"github.com/ember-kv/ember/internal/wire"
)

// Raw peer requests for the tests of peer admission in package ember_test: what a member with
// other credentials, or none, could send.

// Peer RPC methods, as the tests name them.
const (
	PeerForward      = mForward
	PeerForwardBatch = mForwardBatch
	PeerReadIndex    = mReadIndex
	PeerJoin         = mJoin
	PeerPromote      = mPromote
	PeerRemove       = mRemove
	PeerUpdate       = mUpdate
	PeerTransfer     = mTransfer
	PeerStatus       = mStatus
	PeerConfirm      = mConfirm
)

// PeerCall sends one request from s's peer client to the member at addr.
func PeerCall(ctx context.Context, s *Store, addr string, method uint8, req []byte) ([]byte, error) {
	return s.call(ctx, addr, method, req)
}

// ForwardedPut is the request a follower forwards for a Put of key.
func ForwardedPut(key, value string) []byte {
	op := wire.Op{Kind: wire.OpPut, Key: []byte(key), Value: []byte(value)}
	cmd := &wire.Command{ID: wire.RequestID{Client: 0x5ec, Seq: 1}, Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{op}}}
	return cmd.Marshal(nil)
}

// ForwardedBatch is the request a follower forwards for Puts of key and of key+"/2" in one batch.
func ForwardedBatch(key, value string) []byte {
	var cmds [][]byte
	for i, k := range []string{key, key + "/2"} {
		op := wire.Op{Kind: wire.OpPut, Key: []byte(k), Value: []byte(value)}
		cmd := &wire.Command{ID: wire.RequestID{Client: 0x5eb, Seq: uint64(i + 1)}, Kind: wire.KindTxn, Txn: &wire.Txn{Success: []wire.Op{op}}}
		cmds = append(cmds, cmd.Marshal(nil))
	}
	return wire.AppendBatch(nil, cmds)
}

// JoinRequest asks to add id at addr as a member that is promoted once caught up.
func JoinRequest(id, addr string) []byte {
	e := wire.Encoder{}
	e.String(id)
	e.String(addr)
	e.Bool(false)
	return e.B
}

// UpdateRequest asks to move member id to addr.
func UpdateRequest(id, addr string) []byte {
	e := wire.Encoder{}
	e.String(id)
	e.String(addr)
	return e.B
}

// MemberRequest names a member, as promote, remove and transfer requests do.
func MemberRequest(id string) []byte { return encodeString(id) }

// ConfirmRequest is a leader's confirmation round: does the member follow leader in term?
func ConfirmRequest(leader string, term, round uint64) []byte {
	e := wire.Encoder{}
	e.String(leader)
	e.Uvarint(term)
	e.Uvarint(round)
	return e.B
}
