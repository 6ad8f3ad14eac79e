package wire

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
)

// Format versions, written first so that a later format can be told apart from this one.
// Version 2 of the command format ends with a checksum.
const (
	commandVersion = 2
	resultVersion  = 1
)

// A command lives in the raft log on every member's disk for as long as the log keeps it, and
// raft-boltdb stores entries without a checksum of its own: each command carries a CRC-32C of
// its bytes, so that a member whose disk altered an entry stops instead of applying it.
var (
	crcTable = crc32.MakeTable(crc32.Castagnoli)

	// ErrChecksum is wrapped by UnmarshalCommand's error when the command's bytes do not match
	// their checksum. It wraps ErrMalformed.
	ErrChecksum = fmt.Errorf("%w: checksum mismatch", ErrMalformed)
)

const checksumSize = 4

// kindAuthRev is set in the kind byte of a command that carries an AuthRev (after its
// RetryFloor), so that commands without one encode as before it existed.
const kindAuthRev = 0x80

// kindGrant is set in the kind byte of a KindTxn command that grants a lease before its
// transaction runs (LeaseID, LeaseTTL after the AuthRev). A member of an earlier version cannot
// decode it: such commands are for clusters whose members all know them.
const kindGrant = 0x40

// maxTxnDepth bounds how deeply Txns may nest (the outermost Txn is depth 1), so a hostile
// message cannot exhaust the stack.
const maxTxnDepth = 32

// Smallest encodings of list elements. Counts are checked against Remaining()/min, which bounds
// what a decoder allocates by a small multiple of its input. TestMinSizes keeps them honest.
const (
	minCompareSize    = 5 // target, result, key, end, int or value
	minOpSize         = 4 // OpDelete: kind, key, end, flags
	minCheckpointSize = 2
	minKVSize         = 6
	minOpResultSize   = 3 // OpPut: kind, presence, PrevKV presence
)

// Op flag bits. Each kind packs its booleans into one byte; unknown bits are rejected.
const (
	flagSerializable = 1 << iota
	flagKeysOnly
	flagCountOnly
	rangeFlags = flagSerializable | flagKeysOnly | flagCountOnly

	flagPrevKV      = 1 << 0
	flagIgnoreValue = 1 << 1
	flagIgnoreLease = 1 << 2
	putFlags        = flagPrevKV | flagIgnoreValue | flagIgnoreLease
	deleteFlags     = flagPrevKV
)

// Marshal appends the encoding of c to dst and returns the extended slice. Only the fields that
// c.Kind uses are encoded. A KindTxn command with a nil Txn encodes, but does not decode.
func (c *Command) Marshal(dst []byte) []byte {
	e := Encoder{B: slices.Grow(dst, c.sizeHint())}
	e.Byte(commandVersion)
	kind := byte(c.Kind)
	if c.AuthRev != 0 {
		kind |= kindAuthRev
	}
	grants := c.Kind == KindTxn && c.LeaseTTL != 0
	if grants {
		kind |= kindGrant
	}
	e.Byte(kind)
	e.Uvarint(c.ID.Client)
	e.Uvarint(c.ID.Seq)
	e.Uvarint(c.RetryFloor)
	if c.AuthRev != 0 {
		e.Uvarint(c.AuthRev)
	}
	switch c.Kind {
	case KindTxn:
		if grants {
			e.Varint(c.LeaseID)
			e.Varint(c.LeaseTTL)
		}
		encodeTxnPtr(&e, c.Txn)
	case KindCompact:
		e.Varint(c.Revision)
	case KindLeaseGrant:
		e.Varint(c.LeaseID)
		e.Varint(c.LeaseTTL)
	case KindLeaseRevoke:
		e.Varint(c.LeaseID)
	case KindLeaseCheckpoint:
		e.Uvarint(uint64(len(c.Checkpoints)))
		for _, cp := range c.Checkpoints {
			e.Varint(cp.ID)
			e.Varint(cp.RemainingMs)
		}
	case KindLeaderStart:
		e.Uvarint(c.Term)
		e.String(c.NodeID)
	case KindAlarm:
		e.Byte(c.AlarmAction)
		e.Byte(c.AlarmType)
		e.String(c.NodeID)
	case KindAuth:
		encodeAuthPtr(&e, c.Auth)
	}

	start := len(dst)
	return binary.LittleEndian.AppendUint32(e.B, crc32.Checksum(e.B[start:], crcTable))
}

// sizeHint estimates the encoded size of c so that Marshal usually allocates once. Varints are
// assumed short; if they are not, append grows the slice.
func (c *Command) sizeHint() int {
	n := 32 + checksumSize + len(c.NodeID) + 4*len(c.Checkpoints)
	if c.Kind == KindTxn {
		n += c.Txn.sizeHint()
	}
	return n
}

func (t *Txn) sizeHint() int {
	if t == nil {
		return 0
	}
	n := 4
	for i := range t.Compares {
		c := &t.Compares[i]
		n += 16 + len(c.Key) + len(c.End) + len(c.Value)
	}
	for _, ops := range [2][]Op{t.Success, t.Failure} {
		for i := range ops {
			op := &ops[i]
			n += 24 + len(op.Key) + len(op.End) + len(op.Value) + op.Txn.sizeHint()
		}
	}
	return n
}

// UnmarshalCommand decodes a Command written by Command.Marshal. The result shares no memory
// with b. Bytes that fail their checksum give an error wrapping ErrChecksum.
func UnmarshalCommand(b []byte) (*Command, error) { return unmarshalCommand(b, false) }

// UnmarshalCommandShared is UnmarshalCommand for a caller done with the command before b
// changes (the state machine applying a log entry): the keys and values of a txn are slices of b,
// not copies, which saves two allocations per put.
func UnmarshalCommandShared(b []byte) (*Command, error) { return unmarshalCommand(b, true) }

func unmarshalCommand(b []byte, shared bool) (*Command, error) {
	if len(b) > 0 && b[0] != commandVersion {
		return nil, fmt.Errorf("%w: unknown command version %d", ErrMalformed, b[0])
	}
	if len(b) < 1+checksumSize {
		return nil, fmt.Errorf("%w: command of %d bytes", ErrMalformed, len(b))
	}
	body := b[:len(b)-checksumSize]
	if got, want := crc32.Checksum(body, crcTable), binary.LittleEndian.Uint32(b[len(body):]); got != want {
		return nil, fmt.Errorf("%w: crc32c %08x, recorded %08x", ErrChecksum, got, want)
	}
	d := Decoder{buf: body[1:]}
	kind := d.Byte()
	c := &Command{Kind: Kind(kind &^ (kindAuthRev | kindGrant))}
	c.ID.Client = d.Uvarint()
	c.ID.Seq = d.Uvarint()
	c.RetryFloor = d.Uvarint()
	if kind&kindAuthRev != 0 {
		c.AuthRev = d.Uvarint()
		if c.AuthRev == 0 || c.Kind != KindTxn && c.Kind != KindLeaseRevoke {
			d.fail("auth revision %d on a command of kind %d", c.AuthRev, c.Kind)
		}
	}
	if kind&kindGrant != 0 && c.Kind != KindTxn {
		d.fail("lease grant on a command of kind %d", c.Kind)
	}
	switch c.Kind {
	case KindTxn:
		if kind&kindGrant != 0 {
			c.LeaseID, c.LeaseTTL = d.Varint(), d.Varint()
			if c.LeaseID == 0 || c.LeaseTTL <= 0 {
				d.fail("lease grant of lease %d for %d s", c.LeaseID, c.LeaseTTL)
			}
		}
		// Only a txn's bytes are shared: the state copies what it keeps of them.
		d.shared = shared
		c.Txn = decodeTxnPtr(&d, 1)
	case KindCompact:
		c.Revision = d.Varint()
	case KindLeaseGrant:
		c.LeaseID = d.Varint()
		c.LeaseTTL = d.Varint()
	case KindLeaseRevoke:
		c.LeaseID = d.Varint()
	case KindLeaseCheckpoint:
		if n := d.Len(d.Remaining() / minCheckpointSize); n > 0 {
			c.Checkpoints = make([]LeaseCheckpoint, n)
			for i := range c.Checkpoints {
				c.Checkpoints[i].ID = d.Varint()
				c.Checkpoints[i].RemainingMs = d.Varint()
			}
		}
	case KindLeaderStart:
		c.Term = d.Uvarint()
		c.NodeID = d.String()
	case KindAlarm:
		c.AlarmAction, c.AlarmType, c.NodeID = d.Byte(), d.Byte(), d.String()
		switch {
		case c.AlarmAction != AlarmActivate && c.AlarmAction != AlarmDeactivate:
			d.fail("unknown alarm action %d", c.AlarmAction)
		case c.AlarmType != AlarmNoSpace && c.AlarmType != AlarmCorrupt:
			d.fail("unknown alarm type %d", c.AlarmType)
		case c.NodeID == "":
			d.fail("alarm without a member")
		}
	case KindAuth:
		c.Auth = decodeAuthPtr(&d)
	default:
		d.fail("unknown command kind %d", c.Kind)
	}

	if err := d.Finish(); err != nil {
		return nil, err
	}
	return c, nil
}

// encodeTxnPtr writes a presence byte before t, so that a nil Txn where one is required is
// caught by the decoder instead of being applied as an empty transaction.
func encodeTxnPtr(e *Encoder, t *Txn) {
	if e.present(t != nil) {
		t.encode(e)
	}
}

func decodeTxnPtr(d *Decoder, depth int) *Txn {
	if !d.required("txn") {
		return nil
	}
	return decodeTxn(d, depth)
}

// required reads the presence byte of a value that must be present.
func (d *Decoder) required(what string) bool {
	if !d.Bool() {
		d.fail("missing %s", what)
		return false
	}
	return true
}

func (t *Txn) encode(e *Encoder) {
	e.Uvarint(uint64(len(t.Compares)))
	for i := range t.Compares {
		encodeCompare(e, &t.Compares[i])
	}
	encodeOps(e, t.Success)
	encodeOps(e, t.Failure)
}

func decodeTxn(d *Decoder, depth int) *Txn {
	if depth > maxTxnDepth {
		d.fail("txn nested deeper than %d", maxTxnDepth)
		return nil
	}
	t := &Txn{}
	if n := d.Len(d.Remaining() / minCompareSize); n > 0 {
		t.Compares = make([]Compare, n)
		for i := range t.Compares {
			decodeCompare(d, &t.Compares[i])
		}
	}
	t.Success = decodeOps(d, depth)
	t.Failure = decodeOps(d, depth)
	if d.err != nil {
		return nil
	}
	return t
}

func encodeCompare(e *Encoder, c *Compare) {
	e.Byte(byte(c.Target))
	e.Byte(byte(c.Result))
	e.Bytes(c.Key)
	e.Bytes(c.End)
	if c.Target == TargetValue {
		e.Bytes(c.Value)
	} else {
		e.Varint(c.Int)
	}
}

func decodeCompare(d *Decoder, c *Compare) {
	c.Target = CompareTarget(d.Byte())
	if c.Target > TargetLease {
		d.fail("unknown compare target %d", c.Target)
	}
	c.Result = CompareResult(d.Byte())
	if c.Result > CompareNotEqual {
		d.fail("unknown compare result %d", c.Result)
	}
	c.Key = d.Bytes()
	c.End = d.Bytes()
	if c.Target == TargetValue {
		c.Value = d.Bytes()
	} else {
		c.Int = d.Varint()
	}
}

func encodeOps(e *Encoder, ops []Op) {
	e.Uvarint(uint64(len(ops)))
	for i := range ops {
		encodeOp(e, &ops[i])
	}
}

func decodeOps(d *Decoder, depth int) []Op {
	n := d.Len(d.Remaining() / minOpSize)
	if n == 0 {
		return nil
	}
	ops := make([]Op, n)
	for i := range ops {
		decodeOp(d, &ops[i], depth)
	}
	return ops
}

// flags packs bools into a byte, bit i set when bs[i] is true.
func flags(bs ...bool) byte {
	var f byte
	for i, b := range bs {
		if b {
			f |= 1 << i
		}
	}
	return f
}

// encodeOp writes only the fields op.Kind uses. An unknown kind is written as is, for the
// decoder to reject.
func encodeOp(e *Encoder, op *Op) {
	e.Byte(byte(op.Kind))
	switch op.Kind {
	case OpRange:
		e.Bytes(op.Key)
		e.Bytes(op.End)
		e.Varint(op.Revision)
		e.Varint(op.Limit)
		e.Byte(op.SortOrder)
		e.Byte(op.SortTarget)
		e.Byte(flags(op.Serializable, op.KeysOnly, op.CountOnly))
		e.Varint(op.MinModRev)
		e.Varint(op.MaxModRev)
		e.Varint(op.MinCreateRev)
		e.Varint(op.MaxCreateRev)
	case OpPut:
		e.Bytes(op.Key)
		e.Bytes(op.Value)
		e.Varint(op.Lease)
		e.Byte(flags(op.PrevKV, op.IgnoreValue, op.IgnoreLease))
	case OpDelete:
		e.Bytes(op.Key)
		e.Bytes(op.End)
		e.Byte(flags(op.PrevKV))
	case OpTxn:
		encodeTxnPtr(e, op.Txn)
	}
}

// decodeFlags reads a flag byte, rejecting bits outside valid.
func decodeFlags(d *Decoder, valid byte) byte {
	f := d.Byte()
	if f&^valid != 0 {
		d.fail("unknown op flags %#x", f)
	}
	return f
}

func decodeOp(d *Decoder, op *Op, depth int) {
	op.Kind = OpKind(d.Byte())
	switch op.Kind {
	case OpRange:
		op.Key = d.Bytes()
		op.End = d.Bytes()
		op.Revision = d.Varint()
		op.Limit = d.Varint()
		op.SortOrder = d.Byte()
		if op.SortOrder > SortDescend {
			d.fail("unknown sort order %d", op.SortOrder)
		}
		op.SortTarget = d.Byte()
		if op.SortTarget > SortByValue {
			d.fail("unknown sort target %d", op.SortTarget)
		}
		f := decodeFlags(d, rangeFlags)
		op.Serializable = f&flagSerializable != 0
		op.KeysOnly = f&flagKeysOnly != 0
		op.CountOnly = f&flagCountOnly != 0
		op.MinModRev = d.Varint()
		op.MaxModRev = d.Varint()
		op.MinCreateRev = d.Varint()
		op.MaxCreateRev = d.Varint()
	case OpPut:
		op.Key = d.Bytes()
		op.Value = d.Bytes()
		op.Lease = d.Varint()
		f := decodeFlags(d, putFlags)
		op.PrevKV = f&flagPrevKV != 0
		op.IgnoreValue = f&flagIgnoreValue != 0
		op.IgnoreLease = f&flagIgnoreLease != 0
	case OpDelete:
		op.Key = d.Bytes()
		op.End = d.Bytes()
		op.PrevKV = decodeFlags(d, deleteFlags)&flagPrevKV != 0
	case OpTxn:
		op.Txn = decodeTxnPtr(d, depth+1)
	default:
		d.fail("unknown op kind %d", op.Kind)
	}
}

// EncodeKV appends kv. A nil kv encodes as an empty KV, so that encoding never panics.
func EncodeKV(e *Encoder, kv *KV) {
	if kv == nil {
		kv = &KV{}
	}
	e.Bytes(kv.Key)
	e.Bytes(kv.Value)
	e.Varint(kv.CreateRevision)
	e.Varint(kv.ModRevision)
	e.Varint(kv.Version)
	e.Varint(kv.Lease)
}

// DecodeKV reads what EncodeKV wrote; it returns nil if d has failed.
func DecodeKV(d *Decoder) *KV {
	kv := &KV{}
	decodeKV(d, kv)
	if d.err != nil {
		return nil
	}
	return kv
}

func decodeKV(d *Decoder, kv *KV) {
	kv.Key = d.Bytes()
	kv.Value = d.Bytes()
	kv.CreateRevision = d.Varint()
	kv.ModRevision = d.Varint()
	kv.Version = d.Varint()
	kv.Lease = d.Varint()
}

func encodeKVs(e *Encoder, kvs []*KV) {
	e.Uvarint(uint64(len(kvs)))
	for _, kv := range kvs {
		EncodeKV(e, kv)
	}
}

func decodeKVs(d *Decoder) []*KV {
	n := d.Len(d.Remaining() / minKVSize)
	if n == 0 {
		return nil
	}
	kvs := make([]*KV, n)
	backing := make([]KV, n) // one allocation for all KVs instead of one each
	for i := range kvs {
		decodeKV(d, &backing[i])
		kvs[i] = &backing[i]
	}
	return kvs
}

// Marshal appends the encoding of r to dst and returns the extended slice.
func (r *Result) Marshal(dst []byte) []byte {
	e := Encoder{B: dst}
	e.Byte(resultVersion)
	e.Byte(byte(r.Code))
	e.Varint(r.Revision)
	if e.present(r.Txn != nil) {
		encodeTxnResult(&e, r.Txn)
	}
	e.Varint(r.LeaseID)
	e.Varint(r.LeaseTTL)
	return e.B
}

// UnmarshalResult decodes a Result written by Result.Marshal. The result shares no memory with b.
func UnmarshalResult(b []byte) (*Result, error) {
	d := Decoder{buf: b}
	if v := d.Byte(); v != resultVersion {
		d.fail("unknown result version %d", v)
	}
	r := &Result{Code: Code(d.Byte())}
	if !r.Code.Valid() {
		d.fail("unknown code %d", r.Code)
	}
	r.Revision = d.Varint()
	if d.Bool() {
		r.Txn = decodeTxnResult(&d, 1)
	}
	r.LeaseID = d.Varint()
	r.LeaseTTL = d.Varint()
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return r, nil
}

// ResultHead decodes only the code and the revision of an encoded Result, for a caller that
// needs no more from a result that may be large.
func ResultHead(b []byte) (Code, int64, error) {
	d := Decoder{buf: b}
	if v := d.Byte(); v != resultVersion {
		d.fail("unknown result version %d", v)
	}
	c := Code(d.Byte())
	if !c.Valid() {
		d.fail("unknown code %d", c)
	}
	rev := d.Varint()
	return c, rev, d.Err()
}

func encodeTxnResult(e *Encoder, t *TxnResult) {
	e.Bool(t.Succeeded)
	e.Uvarint(uint64(len(t.Responses)))
	for i := range t.Responses {
		encodeOpResult(e, &t.Responses[i])
	}
}

func decodeTxnResult(d *Decoder, depth int) *TxnResult {
	if depth > maxTxnDepth {
		d.fail("txn result nested deeper than %d", maxTxnDepth)
		return nil
	}
	t := &TxnResult{Succeeded: d.Bool()}
	if n := d.Len(d.Remaining() / minOpResultSize); n > 0 {
		t.Responses = make([]OpResult, n)
		for i := range t.Responses {
			decodeOpResult(d, &t.Responses[i], depth)
		}
	}
	if d.err != nil {
		return nil
	}
	return t
}

// encodeOpResult writes the sub-result matching r.Kind behind a presence byte; a missing one
// encodes, but does not decode, since the state machine always sets it.
func encodeOpResult(e *Encoder, r *OpResult) {
	e.Byte(byte(r.Kind))
	switch r.Kind {
	case OpRange:
		if e.present(r.Range != nil) {
			encodeKVs(e, r.Range.Kvs)
			e.Bool(r.Range.More)
			e.Varint(r.Range.Count)
		}
	case OpPut:
		if e.present(r.Put != nil) && e.present(r.Put.PrevKV != nil) {
			EncodeKV(e, r.Put.PrevKV)
		}
	case OpDelete:
		if e.present(r.Delete != nil) {
			e.Varint(r.Delete.Deleted)
			encodeKVs(e, r.Delete.PrevKVs)
		}
	case OpTxn:
		if e.present(r.Txn != nil) {
			encodeTxnResult(e, r.Txn)
		}
	}
}

func decodeOpResult(d *Decoder, r *OpResult, depth int) {
	r.Kind = OpKind(d.Byte())
	switch r.Kind {
	case OpRange:
		if d.required("range result") {
			r.Range = &RangeResult{Kvs: decodeKVs(d), More: d.Bool(), Count: d.Varint()}
		}
	case OpPut:
		if d.required("put result") {
			r.Put = &PutResult{}
			if d.Bool() {
				r.Put.PrevKV = DecodeKV(d)
			}
		}
	case OpDelete:
		if d.required("delete result") {
			r.Delete = &DeleteResult{Deleted: d.Varint(), PrevKVs: decodeKVs(d)}
		}
	case OpTxn:
		if d.required("txn result") {
			r.Txn = decodeTxnResult(d, depth+1)
		}
	default:
		d.fail("unknown op result kind %d", r.Kind)
	}
}
