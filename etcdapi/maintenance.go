package etcdapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"

	"github.com/ember-kv/ember"
)

// snapshotChunk is the size of each snapshot message, as etcd's.
const snapshotChunk = 32 << 10

// Status serves etcd's Status from ember's Status. The reported version is the etcd API version
// the gateway implements, and the storage version that of etcd 3.6's schema, which the data
// model matches.
func (g *gateway) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	if err := g.checkKnown(ctx); err != nil {
		return nil, err
	}
	s, err := g.st.Status(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	resp := &pb.StatusResponse{
		Header:  g.header(ctx, ember.ResponseHeader{Revision: s.Revision, RaftTerm: s.RaftTerm, MemberID: s.ID}),
		Version: version.Version, DbSize: s.DBSize, DbSizeInUse: s.DBSizeInUse, Leader: memberID(s.Leader),
		RaftIndex: s.RaftIndex, RaftTerm: s.RaftTerm, RaftAppliedIndex: s.AppliedIndex,
		StorageVersion: version.V3_6.String(), DbSizeQuota: s.DBSizeQuota,
		DowngradeInfo: &pb.DowngradeInfo{},
	}
	if s.Leader == "" {
		resp.Errors = append(resp.Errors, rpctypes.ErrorDesc(rpctypes.ErrGRPCNoLeader))
	} else if ms, err := g.st.Members(ctx); err == nil {
		// Whether this member is a learner is in the configuration, readable only through a leader.
		for _, m := range ms {
			resp.IsLearner = resp.IsLearner || m.ID == s.ID && m.IsLearner
		}
	}
	// As etcd, the raised alarms are listed among the errors (AlarmList reads them through the
	// leader, so only while there is one).
	if s.Leader != "" {
		if r, err := g.st.AlarmList(ctx); err == nil {
			for _, a := range r.Alarms {
				resp.Errors = append(resp.Errors, toAlarmMember(a).String())
			}
		}
	}
	return resp, nil
}

func toAlarmMember(a ember.AlarmMember) *pb.AlarmMember {
	return &pb.AlarmMember{MemberID: memberID(a.MemberID), Alarm: pb.AlarmType(a.Alarm)}
}

// Alarm serves etcd's Alarm: GET lists the raised alarms (of one type, or all for NONE),
// ACTIVATE raises one through the log (answering with it, raised now or before; NONE raises
// nothing), DEACTIVATE disarms one (answering with it, or with none if it was not raised).
func (g *gateway) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	check := g.checkAdmin
	if r.Action == pb.AlarmRequest_GET {
		check = g.checkKnown
	}
	if err := check(ctx); err != nil {
		return nil, err
	}
	if r.Action == pb.AlarmRequest_ACTIVATE {
		return g.activateAlarm(ctx, r)
	}
	list, err := g.st.AlarmList(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	resp := &pb.AlarmResponse{Header: g.header(ctx, list.Header)}
	for _, a := range list.Alarms {
		switch {
		case r.Action == pb.AlarmRequest_GET && (r.Alarm == pb.AlarmType_NONE || pb.AlarmType(a.Alarm) == r.Alarm):
			resp.Alarms = append(resp.Alarms, toAlarmMember(a))
		case r.Action == pb.AlarmRequest_DEACTIVATE && memberID(a.MemberID) == r.MemberID && pb.AlarmType(a.Alarm) == r.Alarm:
			if err := g.st.AlarmDisarm(ctx, a.MemberID, a.Alarm); err != nil {
				return nil, toGRPC(err)
			}
			resp.Alarms = append(resp.Alarms, toAlarmMember(a))
		}
	}
	return resp, nil
}

// activateAlarm serves ACTIVATE as etcd applies it, with one difference: ember keeps alarms
// under its members' IDs, so the member ID must be a member's (etcd keeps any ID).
func (g *gateway) activateAlarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	switch r.Alarm {
	case pb.AlarmType_NONE:
		h, err := g.localHeader(ctx)
		if err != nil {
			return nil, err
		}
		return &pb.AlarmResponse{Header: h}, nil
	case pb.AlarmType_NOSPACE, pb.AlarmType_CORRUPT:
	default:
		return nil, errUnknownAlarm
	}
	ms, err := g.st.Members(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	i := slices.IndexFunc(ms, func(m ember.Member) bool { return memberID(m.ID) == r.MemberID })
	if i < 0 {
		return nil, rpctypes.ErrGRPCMemberNotFound
	}
	if err := g.st.AlarmActivate(ctx, ms[i].ID, ember.AlarmType(r.Alarm)); err != nil {
		return nil, toGRPC(err)
	}
	h, err := g.localHeader(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.AlarmResponse{Header: h, Alarms: []*pb.AlarmMember{{MemberID: r.MemberID, Alarm: r.Alarm}}}, nil
}

// Defragment rewrites this member's backend without the space compaction freed
// (ember.Store.Defragment).
func (g *gateway) Defragment(ctx context.Context, _ *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := g.checkAdmin(ctx); err != nil {
		return nil, err
	}
	if _, err := g.st.Defragment(ctx); err != nil {
		return nil, toGRPC(err)
	}
	h, err := g.localHeader(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.DefragmentResponse{Header: h}, nil
}

// Hash serves etcd's deprecated Hash with the hash of the whole kept history.
func (g *gateway) Hash(ctx context.Context, _ *pb.HashRequest) (*pb.HashResponse, error) {
	if err := g.checkAdmin(ctx); err != nil {
		return nil, err
	}
	res, err := g.st.HashKV(ctx, 0)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.HashResponse{Header: g.header(ctx, res.Header), Hash: res.Hash}, nil
}

// HashKV serves etcd's HashKV from ember's. The hash function differs from etcd's, so hashes are
// comparable between ember members only.
func (g *gateway) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	if err := g.checkAdmin(ctx); err != nil {
		return nil, err
	}
	res, err := g.st.HashKV(ctx, r.Revision)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.HashKVResponse{Header: g.header(ctx, res.Header), Hash: res.Hash,
		CompactRevision: res.CompactRevision, HashRevision: res.HashRevision}, nil
}

// MoveLeader serves etcd's MoveLeader with ember's leadership transfer. Unlike etcd it is
// accepted by any member, not only the leader.
func (g *gateway) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if err := g.checkAdmin(ctx); err != nil {
		return nil, err
	}
	m, err := g.member(ctx, r.TargetID)
	if errors.Is(err, rpctypes.ErrGRPCMemberNotFound) || err == nil && m.IsLearner {
		return nil, rpctypes.ErrGRPCBadLeaderTransferee
	}
	if err != nil {
		return nil, err
	}
	if err := g.st.TransferLeadership(ctx, m.ID); err != nil {
		return nil, toGRPC(err)
	}
	h, err := g.localHeader(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.MoveLeaderResponse{Header: h}, nil
}

// Snapshot streams this member's ember backup (Store.Snapshot) in etcd's framing, which
// etcdctl checks: the backup, then padding that brings it to a multiple of 512 bytes, then the
// SHA-256 of everything before it. The padding is zeros followed by the backup's length as 8
// big-endian bytes, so that Restore can cut the backup back out. RemainingBytes is 0: the
// backup is streamed as it is written, its size unknown until it ends.
func (g *gateway) Snapshot(_ *pb.SnapshotRequest, stream pb.Maintenance_SnapshotServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	if err := g.checkAdmin(ctx); err != nil {
		return err
	}
	h, err := g.localHeader(ctx)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(g.st.Snapshot(ctx, pw))
	}()
	defer func() {
		pr.CloseWithError(context.Canceled) // unblocks the writer if sending failed
		<-done
	}()

	sum := sha256.New()
	var n int64
	buf := make([]byte, snapshotChunk)
	send := func(b []byte) error {
		sum.Write(b)
		return stream.Send(&pb.SnapshotResponse{Header: h, Blob: b, Version: version.Version})
	}
	for {
		k, err := io.ReadFull(pr, buf)
		if k > 0 {
			n += int64(k)
			if err := send(append([]byte(nil), buf[:k]...)); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return toGRPC(err)
		}
	}
	if err := send(snapshotPadding(n)); err != nil {
		return err
	}
	return stream.Send(&pb.SnapshotResponse{Header: h, Blob: sum.Sum(nil), Version: version.Version})
}

// snapshotPadding returns the bytes that follow a backup of n bytes: zeros, then n as 8
// big-endian bytes, making the total a multiple of 512.
func snapshotPadding(n int64) []byte {
	size := 512 - (n+8)%512
	if size == 512 {
		size = 0
	}
	pad := make([]byte, size+8)
	binary.BigEndian.PutUint64(pad[size:], uint64(n))
	return pad
}

// Restore creates an ember data dir at dir from a snapshot in etcd's framing, as written by
// `etcdctl snapshot save` or clientv3's Maintenance.Snapshot against this gateway. It checks the
// SHA-256 and the framing, then calls ember.Restore with opts. The snapshot is read into memory
// whole: its end must be seen before the backup inside can be cut out.
func Restore(r io.Reader, dir string, opts ...ember.Option) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	backup, err := unframeSnapshot(b)
	if err != nil {
		return err
	}
	return ember.Restore(bytes.NewReader(backup), dir, opts...)
}

func unframeSnapshot(b []byte) ([]byte, error) {
	if len(b) < sha256.Size+8 || (len(b)-sha256.Size)%512 != 0 {
		return nil, fmt.Errorf("etcdapi: snapshot of %d bytes is not in etcd's framing: %w", len(b), ember.ErrCorrupt)
	}
	body, want := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); string(got[:]) != string(want) {
		return nil, fmt.Errorf("etcdapi: snapshot SHA-256 mismatch: %w", ember.ErrCorrupt)
	}
	n := binary.BigEndian.Uint64(body[len(body)-8:])
	if n > uint64(len(body)-8) || uint64(len(body)-8)-n >= 512 {
		return nil, fmt.Errorf("etcdapi: snapshot length %d does not match its framing: %w", n, ember.ErrCorrupt)
	}
	return body[:n], nil
}
