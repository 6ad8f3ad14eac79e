package ember

import "github.com/ember-kv/ember/internal/wire"

// ResponseHeader describes the state of the member that answered.
type ResponseHeader struct {
	// Revision is the store revision when the request was applied (writes) or served (reads).
	Revision int64
	// RaftTerm is the raft term of the answering member at answer time.
	RaftTerm uint64
	// MemberID is the ID of the answering member.
	MemberID string
}

// KeyValue is one version of a key.
type KeyValue struct {
	Key            []byte
	Value          []byte
	CreateRevision int64 // revision of the key's last creation
	ModRevision    int64 // revision of the key's last modification
	Version        int64 // 1 at creation, +1 per put; a delete resets it to 0
	Lease          int64 // the lease the key is attached to, 0 for none
}

// GetResponse answers Get.
type GetResponse struct {
	Header ResponseHeader
	Kvs    []*KeyValue
	// More reports that keys beyond the limit exist in the range.
	More bool
	// Count is the number of keys in the range, whatever the limit.
	Count int64
}

// PutResponse answers Put.
type PutResponse struct {
	Header ResponseHeader
	PrevKv *KeyValue // with WithPrevKV, the key's previous version (nil if it did not exist)
}

// DeleteResponse answers Delete.
type DeleteResponse struct {
	Header  ResponseHeader
	Deleted int64
	PrevKvs []*KeyValue // with WithPrevKV, the deleted pairs
}

// TxnResponse answers a transaction's Commit.
type TxnResponse struct {
	Header    ResponseHeader
	Succeeded bool         // whether every compare held (the Then branch ran)
	Responses []OpResponse // one per op of the branch that ran, in order
}

// CompactResponse answers Compact.
type CompactResponse struct {
	Header ResponseHeader
}

// OpResponse answers one Op; exactly one of Get, Put, Del, Txn is non-nil.
type OpResponse struct {
	get *GetResponse
	put *PutResponse
	del *DeleteResponse
	txn *TxnResponse
}

// Get returns the answer to a get, or nil.
func (r OpResponse) Get() *GetResponse { return r.get }

// Put returns the answer to a put, or nil.
func (r OpResponse) Put() *PutResponse { return r.put }

// Del returns the answer to a delete, or nil.
func (r OpResponse) Del() *DeleteResponse { return r.del }

// Txn returns the answer to a nested transaction, or nil.
func (r OpResponse) Txn() *TxnResponse { return r.txn }

// keyValueOf is the one conversion of a stored pair to the API's KeyValue: the state machine
// turns a record into a wire.KV (record.toWire), which reaches kv.go's answers through
// kvFromWire and kvsFromWire, and watch events through eventOf.
func keyValueOf(kv *wire.KV) KeyValue {
	return KeyValue{Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision,
		ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
}

func kvFromWire(kv *wire.KV) *KeyValue {
	if kv == nil {
		return nil
	}
	out := keyValueOf(kv)
	return &out
}

func kvsFromWire(kvs []*wire.KV) []*KeyValue {
	if len(kvs) == 0 {
		return nil
	}
	// One allocation for all pairs: ranges can return many.
	out := make([]*KeyValue, len(kvs))
	buf := make([]KeyValue, len(kvs))
	for i, kv := range kvs {
		buf[i] = keyValueOf(kv)
		out[i] = &buf[i]
	}
	return out
}

func txnFromWire(h ResponseHeader, t *wire.TxnResult) *TxnResponse {
	r := &TxnResponse{Header: h, Succeeded: t.Succeeded, Responses: make([]OpResponse, len(t.Responses))}
	for i, or := range t.Responses {
		r.Responses[i] = opResponseFromWire(h, &or)
	}
	return r
}

func opResponseFromWire(h ResponseHeader, r *wire.OpResult) OpResponse {
	switch r.Kind {
	case wire.OpRange:
		return OpResponse{get: getFromWire(h, r.Range)}
	case wire.OpPut:
		return OpResponse{put: &PutResponse{Header: h, PrevKv: kvFromWire(r.Put.PrevKV)}}
	case wire.OpDelete:
		return OpResponse{del: &DeleteResponse{Header: h, Deleted: r.Delete.Deleted, PrevKvs: kvsFromWire(r.Delete.PrevKVs)}}
	default:
		return OpResponse{txn: txnFromWire(h, r.Txn)}
	}
}

func getFromWire(h ResponseHeader, r *wire.RangeResult) *GetResponse {
	return &GetResponse{Header: h, Kvs: kvsFromWire(r.Kvs), More: r.More, Count: r.Count}
}
