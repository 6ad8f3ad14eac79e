package ember

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ember-kv/ember/internal/mvcc"
	"github.com/ember-kv/ember/internal/peer"
	"github.com/ember-kv/ember/internal/wire"
)

// Peer RPC methods. Each request and answer is encoded with wire.Encoder.
const (
	mForward    uint8 = 1 // encoded wire.Command → encoded wire.Result; leader only
	mReadIndex  uint8 = 2 // → uvarint commit index confirmed by a quorum; leader only
	mJoin       uint8 = 3 // id, addr, learner → nothing; any member (forwards to the leader)
	mPromote    uint8 = 4 // id → nothing; leader only
	mRemove     uint8 = 5 // id → nothing; leader only
	mStatus     uint8 = 6 // → uvarint applied index of the answering member
	mKeepAlive  uint8 = 7 // varint lease ID → varint remaining TTL; leader only
	mTimeToLive uint8 = 8 // varint lease ID, bool keys → lease state; leader only
	mTransfer   uint8 = 9 // target member ID → nothing; leader only

	// leader ID, term, round → round; any voter, whose ack confirms the leader for a read.
	mConfirm uint8 = 10
	// → the configuration, every change acknowledged before the call in it; leader only.
	mMembers uint8 = 11
	// id, addr → nothing; leader only.
	mUpdate uint8 = 12
	// varint revision → this member's revision, compact revision, hashed revision and hash; any
	// member, for the leader's periodic hash check.
	mHashKV uint8 = 13
	// wire.AppendBatch of encoded wire.Commands → wire.AppendBatchReplies, each command's own
	// answer as mForward would give it; leader only. A leader of an earlier version answers it
	// as an unknown method (CodeMalformed), and the follower then forwards one by one.
	mForwardBatch uint8 = 14
)

// joinForwardTimeout bounds a join that a member which does not lead forwards to the leader.
const joinForwardTimeout = 10 * time.Second

// handleRPC serves a peer's request. Every input is validated: a malformed request gets
// CodeMalformed and the member keeps serving.
func (s *Store) handleRPC(ctx context.Context, method uint8, req []byte) ([]byte, error) {
	if err := s.checkPeerMember(ctx, method); err != nil {
		return nil, peerError(err)
	}
	resp, err := s.dispatchRPC(ctx, method, req)
	return resp, peerError(err)
}

// checkPeerMember refuses every request but a join and the read-only probes (status, and a
// leader's confirmation round) from a connection whose member is not in this member's latest
// configuration.
//
// Who a connection belongs to is the member ID its client states in the connection's hello
// frame (peer.RemoteID), checked against the configuration when each request arrives, not when
// the connection opened, so a member removed since stops being served on the connections it
// already has. Under WithClusterToken (or mutual TLS) the claim comes from a peer that holds the
// cluster's credentials, and what it stops is a joiner, or a member removed from the cluster,
// acting as a member: a joiner may only ask to join. It cannot stop a credential holder that
// claims another member's ID: the credentials are the cluster's, not the member's. Without
// credentials (loopback, or WithInsecurePeers) the claim is not authenticated at all.
//
// The latest configuration, committed or not, is what raft itself acts on; a member learns of
// its own addition (a join returns) only after the leader has appended it, and the requests a
// new member makes go to the leader. The probes stay open because they change nothing and
// their answers are an index and "I follow that leader": the leader probes a joiner before the
// joiner has any configuration, and a leader of an earlier version, whose connections state no
// ID, must still get its reads confirmed by upgraded voters. Its followers' requests are
// refused in turn (docs/OPERATIONS.md "Upgrading").
func (s *Store) checkPeerMember(ctx context.Context, method uint8) error {
	if method == mJoin || method == mStatus || method == mConfirm {
		return nil
	}
	id, ok := peer.RemoteID(ctx)
	if !ok {
		return fmt.Errorf("%w: the peer did not state its member ID", ErrNotMember)
	}
	conf, err := s.configuration()
	if err != nil {
		return err
	}
	for _, srv := range conf.Servers {
		if string(srv.ID) == id {
			return nil
		}
	}
	return fmt.Errorf("%w: %q is not in this member's configuration", ErrNotMember, id)
}

func (s *Store) dispatchRPC(ctx context.Context, method uint8, req []byte) ([]byte, error) {
	if s.stopped() {
		return nil, ErrStopped
	}
	d := wire.NewDecoder(req)
	switch method {
	case mForward:
		return s.serveForward(ctx, req)
	case mForwardBatch:
		cmds, err := wire.UnmarshalBatch(req, forwardBatchMax)
		if err != nil {
			return nil, err
		}
		return s.serveForwardBatch(ctx, cmds), nil
	case mReadIndex:
		if err := d.Finish(); err != nil {
			return nil, err
		}
		if !s.IsLeader() {
			return nil, errNotLeader
		}
		idx, err := s.readIndex.Get(ctx)
		if err != nil {
			return nil, err
		}
		e := wire.Encoder{}
		e.Uvarint(idx)
		return e.B, nil
	case mJoin, mPromote, mRemove, mUpdate:
		c, err := decodeMemberChange(method, req)
		if err != nil {
			return nil, err
		}
		if s.IsLeader() {
			return nil, s.changeLocal(ctx, method, c)
		}
		if method == mJoin {
			// A join may reach a member that does not lead; it is forwarded, not refused. The
			// joiner cannot cancel it (ctx ends only with the connection), so it is bounded.
			ctx, cancel := context.WithTimeout(ctx, joinForwardTimeout)
			defer cancel()
			return nil, s.changeMembership(ctx, method, req)
		}
		return nil, errNotLeader
	case mTransfer:
		id := d.String()
		if err := d.Finish(); err != nil {
			return nil, err
		}
		if !s.IsLeader() {
			return nil, errNotLeader
		}
		return nil, s.transferLocal(ctx, id)
	case mConfirm:
		leader, term, round := d.String(), d.Uvarint(), d.Uvarint()
		if err := d.Finish(); err != nil {
			return nil, err
		}
		if err := s.follows(leader, term); err != nil {
			return nil, err
		}
		e := wire.Encoder{}
		e.Uvarint(round)
		return e.B, nil
	case mStatus:
		if err := d.Finish(); err != nil {
			return nil, err
		}
		e := wire.Encoder{}
		e.Uvarint(s.fsm.applied.Load())
		return e.B, nil
	case mKeepAlive, mTimeToLive:
		return s.lessor.handleRPC(ctx, method, d)
	case mHashKV:
		return s.handleHashKV(d)
	case mMembers:
		if err := d.Finish(); err != nil {
			return nil, err
		}
		if !s.IsLeader() {
			return nil, errNotLeader
		}
		conf, err := s.leaderConfiguration(ctx)
		if err != nil {
			return nil, err
		}
		return s.encodeConfiguration(conf), nil
	}
	return nil, fmt.Errorf("%w: unknown method %d", wire.ErrMalformed, method)
}

// serveForward commits a command a follower forwarded and returns its encoded result.
func (s *Store) serveForward(ctx context.Context, req []byte) ([]byte, error) {
	cmd, err := s.checkForwarded(req)
	if err != nil {
		return nil, err
	}
	res, err := s.submit(ctx, cmd, req, false)
	if err != nil {
		return nil, err
	}
	return res.Marshal(nil), nil
}

// errReplyFull answers a command of a batch whose result did not fit in the batch's response:
// the command was applied, and the follower's retry (same request ID) gets its result alone or in
// a later batch.
var errReplyFull = outcomeUnknown(errors.New("ember: the result did not fit in its batch's response"))

// serveForwardBatch commits the commands of a batch a follower forwarded, each as serveForward
// would, and answers each one's result or error. They are handed to raft concurrently, so that
// raft appends them together; ctx is the connection's, which no caller of the follower can end.
func (s *Store) serveForwardBatch(ctx context.Context, cmds [][]byte) []byte {
	replies := make([]wire.BatchReply, len(cmds))
	var wg sync.WaitGroup
	for i, req := range cmds {
		req = bytes.Clone(req) // raft may hold an entry's data (its log cache): not the whole batch
		wg.Go(func() {
			res, err := s.serveForward(ctx, req)
			if err != nil {
				pe := peerError(err).(*peer.Error)
				replies[i] = wire.BatchReply{Code: pe.Code, Msg: pe.Msg}
				return
			}
			replies[i].Result = res
		})
	}
	wg.Wait()
	room := forwardReplyBudget
	for i := range replies {
		if n := len(replies[i].Result) + len(replies[i].Msg) + 32; i == 0 || n <= room {
			room -= n
			continue
		}
		pe := peerError(errReplyFull).(*peer.Error)
		replies[i] = wire.BatchReply{Code: pe.Code, Msg: pe.Msg}
	}
	return wire.AppendBatchReplies(nil, replies)
}

// checkForwarded decodes and validates a command a follower forwarded, with this member's
// limits.
func (s *Store) checkForwarded(req []byte) (*wire.Command, error) {
	if len(req) > s.cfg.maxRequestBytes {
		return nil, ErrRequestTooLarge
	}
	cmd, err := wire.UnmarshalCommand(req)
	if err != nil {
		return nil, err
	}
	switch cmd.Kind {
	case wire.KindTxn:
		err = codeError(mvcc.ValidateTxn(cmd.Txn, s.cfg.maxTxnOps))
	case wire.KindLeaderStart:
		err = fmt.Errorf("%w: leader start from a peer", wire.ErrMalformed)
	}
	if err != nil {
		return nil, err
	}
	return cmd, nil
}

// onLeader runs an idempotent leader-only request: locally if this member leads, else on the
// leader, retrying through leader changes until ctx ends.
func (s *Store) onLeader(ctx context.Context, method uint8, req []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		if s.stopped() {
			return nil, s.stoppedErr()
		}
		resp, err := s.attemptOnLeader(ctx, method, req, func() ([]byte, error) {
			return s.dispatchRPC(ctx, method, req)
		})
		if err == nil {
			return resp, nil
		}
		if err := s.retryIdempotent(ctx, err, attempt); err != nil {
			return nil, err
		}
	}
}

// attemptOnLeader makes one attempt of a leader-only request: local if this member leads, else
// sent to the leader as method with req.
func (s *Store) attemptOnLeader(ctx context.Context, method uint8, req []byte, local func() ([]byte, error)) ([]byte, error) {
	if s.IsLeader() {
		return local()
	}
	addr, err := s.leaderAddr()
	if err != nil {
		return nil, err
	}
	s.metrics.forwardedToLeader(method)
	return s.call(ctx, addr, method, req)
}
