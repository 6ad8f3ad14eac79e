package etcdapi

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/ember-kv/ember"
)

// Range serves etcd's Range with every option: ember implements them all natively.
func (g *gateway) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	op, err := rangeOp(r)
	if err != nil {
		return nil, err
	}
	c, err := g.checkRange(ctx, r)
	if err != nil {
		return nil, err
	}
	res, err := g.st.Do(ctx, op)
	if err != nil {
		return nil, toGRPC(err)
	}
	if err := c.stale(g); err != nil {
		return nil, err
	}
	resp := rangeResponse(res.Get())
	resp.Header = g.header(ctx, res.Get().Header)
	return resp, nil
}

// Put serves etcd's Put.
func (g *gateway) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	op, err := putOp(r)
	if err != nil {
		return nil, err
	}
	c, err := g.checkPut(ctx, r)
	if err != nil {
		return nil, err
	}
	res, err := g.st.Do(c.authorize(ctx), op)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.PutResponse{Header: g.header(ctx, res.Put().Header), PrevKv: kv(res.Put().PrevKv)}, nil
}

// DeleteRange serves etcd's DeleteRange.
func (g *gateway) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	op, err := deleteOp(r)
	if err != nil {
		return nil, err
	}
	c, err := g.checkDelete(ctx, r)
	if err != nil {
		return nil, err
	}
	res, err := g.st.Do(c.authorize(ctx), op)
	if err != nil {
		return nil, toGRPC(err)
	}
	resp := deleteResponse(res.Del())
	resp.Header = g.header(ctx, res.Del().Header)
	return resp, nil
}

// Txn serves etcd's Txn, nested transactions included.
func (g *gateway) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	op, err := txnOp(r)
	if err != nil {
		return nil, err
	}
	c, err := g.checkTxn(ctx, r)
	if err != nil {
		return nil, err
	}
	res, err := g.st.Do(c.authorize(ctx), op)
	if err != nil {
		return nil, toGRPC(err)
	}
	if readOnly(r) {
		if err := c.stale(g); err != nil {
			return nil, err
		}
	}
	resp := txnResponse(res.Txn())
	resp.Header = g.header(ctx, res.Txn().Header)
	return resp, nil
}

// Compact serves etcd's Compact; physical waits until this member has applied it.
func (g *gateway) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := g.checkAdmin(ctx); err != nil {
		return nil, err
	}
	var opts []ember.CompactOption
	if r.Physical {
		opts = append(opts, ember.WithCompactPhysical())
	}
	res, err := g.st.Compact(ctx, r.Revision, opts...)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.CompactionResponse{Header: g.header(ctx, res.Header)}, nil
}

func rangeOp(r *pb.RangeRequest) (ember.Op, error) {
	if len(r.Key) == 0 {
		return ember.Op{}, rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.SortOrder)]; !ok {
		return ember.Op{}, rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.SortTarget)]; !ok {
		return ember.Op{}, rpctypes.ErrGRPCInvalidSortOption
	}
	var opts []ember.OpOption
	if len(r.RangeEnd) > 0 {
		opts = append(opts, ember.WithRange(string(r.RangeEnd)))
	}
	// As etcd: a sort target without an order sorts ascending; key order needs no sort.
	order := r.SortOrder
	if order == pb.RangeRequest_NONE && r.SortTarget != pb.RangeRequest_KEY {
		order = pb.RangeRequest_ASCEND
	}
	if order != pb.RangeRequest_NONE {
		opts = append(opts, ember.WithSort(ember.SortTarget(r.SortTarget), ember.SortOrder(order)))
	}
	opts = append(opts,
		ember.WithRev(r.Revision), ember.WithLimit(r.Limit),
		ember.WithMinModRev(r.MinModRevision), ember.WithMaxModRev(r.MaxModRevision),
		ember.WithMinCreateRev(r.MinCreateRevision), ember.WithMaxCreateRev(r.MaxCreateRevision))
	if r.Serializable {
		opts = append(opts, ember.WithSerializable())
	}
	if r.KeysOnly {
		opts = append(opts, ember.WithKeysOnly())
	}
	if r.CountOnly {
		opts = append(opts, ember.WithCountOnly())
	}
	return ember.OpGet(string(r.Key), opts...), nil
}

func putOp(r *pb.PutRequest) (ember.Op, error) {
	if len(r.Key) == 0 {
		return ember.Op{}, rpctypes.ErrGRPCEmptyKey
	}
	var opts []ember.OpOption
	if r.Lease != 0 {
		opts = append(opts, ember.WithLease(ember.LeaseID(r.Lease)))
	}
	if r.PrevKv {
		opts = append(opts, ember.WithPrevKV())
	}
	if r.IgnoreValue {
		opts = append(opts, ember.WithIgnoreValue())
	}
	if r.IgnoreLease {
		opts = append(opts, ember.WithIgnoreLease())
	}
	return ember.OpPut(string(r.Key), string(r.Value), opts...), nil
}

func deleteOp(r *pb.DeleteRangeRequest) (ember.Op, error) {
	if len(r.Key) == 0 {
		return ember.Op{}, rpctypes.ErrGRPCEmptyKey
	}
	var opts []ember.OpOption
	if len(r.RangeEnd) > 0 {
		opts = append(opts, ember.WithRange(string(r.RangeEnd)))
	}
	if r.PrevKv {
		opts = append(opts, ember.WithPrevKV())
	}
	return ember.OpDelete(string(r.Key), opts...), nil
}

func txnOp(r *pb.TxnRequest) (ember.Op, error) {
	cmps := make([]ember.Cmp, len(r.Compare))
	for i, c := range r.Compare {
		cmp, err := compare(c)
		if err != nil {
			return ember.Op{}, err
		}
		cmps[i] = cmp
	}
	thenOps, err := requestOps(r.Success)
	if err != nil {
		return ember.Op{}, err
	}
	elseOps, err := requestOps(r.Failure)
	if err != nil {
		return ember.Op{}, err
	}
	return ember.OpTxn(cmps, thenOps, elseOps), nil
}

var cmpResults = map[pb.Compare_CompareResult]string{
	pb.Compare_EQUAL: "=", pb.Compare_NOT_EQUAL: "!=", pb.Compare_GREATER: ">", pb.Compare_LESS: "<",
}

func compare(c *pb.Compare) (ember.Cmp, error) {
	if c == nil || len(c.Key) == 0 {
		return ember.Cmp{}, rpctypes.ErrGRPCEmptyKey
	}
	rel, ok := cmpResults[c.Result]
	if !ok {
		return ember.Cmp{}, errBadCompare
	}
	key := string(c.Key)
	var cmp ember.Cmp
	switch c.Target {
	case pb.Compare_VERSION:
		cmp = ember.Compare(ember.Version(key), rel, c.GetVersion())
	case pb.Compare_CREATE:
		cmp = ember.Compare(ember.CreateRevision(key), rel, c.GetCreateRevision())
	case pb.Compare_MOD:
		cmp = ember.Compare(ember.ModRevision(key), rel, c.GetModRevision())
	case pb.Compare_VALUE:
		cmp = ember.Compare(ember.Value(key), rel, string(c.GetValue()))
	case pb.Compare_LEASE:
		cmp = ember.Compare(ember.LeaseValue(key), rel, c.GetLease())
	default:
		return ember.Cmp{}, errBadCompare
	}
	if len(c.RangeEnd) > 0 {
		cmp = cmp.WithRange(string(c.RangeEnd))
	}
	return cmp, nil
}

func requestOps(reqs []*pb.RequestOp) ([]ember.Op, error) {
	ops := make([]ember.Op, len(reqs))
	for i, req := range reqs {
		var err error
		switch {
		case req.GetRequestRange() != nil:
			ops[i], err = rangeOp(req.GetRequestRange())
		case req.GetRequestPut() != nil:
			ops[i], err = putOp(req.GetRequestPut())
		case req.GetRequestDeleteRange() != nil:
			ops[i], err = deleteOp(req.GetRequestDeleteRange())
		case req.GetRequestTxn() != nil:
			ops[i], err = txnOp(req.GetRequestTxn())
		default:
			err = rpctypes.ErrGRPCKeyNotFound // etcd's answer to an empty op
		}
		if err != nil {
			return nil, err
		}
	}
	return ops, nil
}

func kv(k *ember.KeyValue) *mvccpb.KeyValue {
	if k == nil {
		return nil
	}
	return &mvccpb.KeyValue{Key: k.Key, Value: k.Value, CreateRevision: k.CreateRevision,
		ModRevision: k.ModRevision, Version: k.Version, Lease: k.Lease}
}

func kvs(ks []*ember.KeyValue) []*mvccpb.KeyValue {
	if len(ks) == 0 {
		return nil
	}
	out := make([]*mvccpb.KeyValue, len(ks))
	for i, k := range ks {
		out[i] = kv(k)
	}
	return out
}

func rangeResponse(r *ember.GetResponse) *pb.RangeResponse {
	return &pb.RangeResponse{Kvs: kvs(r.Kvs), More: r.More, Count: r.Count}
}

func deleteResponse(r *ember.DeleteResponse) *pb.DeleteRangeResponse {
	return &pb.DeleteRangeResponse{Deleted: r.Deleted, PrevKvs: kvs(r.PrevKvs)}
}

// txnResponse converts a transaction's result. As etcd, the responses inside a transaction carry
// only the revision in their headers.
func txnResponse(r *ember.TxnResponse) *pb.TxnResponse {
	resp := &pb.TxnResponse{Succeeded: r.Succeeded, Responses: make([]*pb.ResponseOp, len(r.Responses))}
	for i, or := range r.Responses {
		var ro pb.ResponseOp
		switch {
		case or.Get() != nil:
			rr := rangeResponse(or.Get())
			rr.Header = &pb.ResponseHeader{Revision: or.Get().Header.Revision}
			ro.Response = &pb.ResponseOp_ResponseRange{ResponseRange: rr}
		case or.Put() != nil:
			ro.Response = &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{
				Header: &pb.ResponseHeader{Revision: or.Put().Header.Revision}, PrevKv: kv(or.Put().PrevKv)}}
		case or.Del() != nil:
			dr := deleteResponse(or.Del())
			dr.Header = &pb.ResponseHeader{Revision: or.Del().Header.Revision}
			ro.Response = &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: dr}
		default:
			tr := txnResponse(or.Txn())
			tr.Header = &pb.ResponseHeader{Revision: or.Txn().Header.Revision}
			ro.Response = &pb.ResponseOp_ResponseTxn{ResponseTxn: tr}
		}
		resp.Responses[i] = &ro
	}
	return resp
}
