package wire

// A batch of forwarded commands travels as one peer request, and its answer as one response
// holding each command's own answer, in the order of the request.
//
//	request:  version | uvarint count | count × (uvarint length | encoded Command)
//	response: version | uvarint count | count × (0 | uvarint length | encoded Result)
//	                                          or (1 | code | uvarint length | message)
const batchVersion = 1

// Reply kinds in a batch response.
const (
	replyResult = 0
	replyError  = 1
)

// BatchReply is one command's answer in a batch response: an encoded Result, or, when Code is
// not CodeOK, the error the command failed with, as a peer error carries it.
type BatchReply struct {
	Result []byte
	Code   Code
	Msg    string
}

// AppendBatch appends the batch request carrying the encoded commands cmds to dst.
func AppendBatch(dst []byte, cmds [][]byte) []byte {
	e := Encoder{B: dst}
	e.Byte(batchVersion)
	e.Uvarint(uint64(len(cmds)))
	for _, c := range cmds {
		e.Bytes(c)
	}
	return e.B
}

// UnmarshalBatch decodes a batch request of 1 to max commands. The commands it returns are
// sub-slices of b, not decoded: each is checked by UnmarshalCommand where it is used.
func UnmarshalBatch(b []byte, max int) ([][]byte, error) {
	d := Decoder{buf: b}
	if v := d.Byte(); v != batchVersion {
		d.fail("unknown batch version %d", v)
	}
	n := d.Len(max)
	if d.err == nil && n == 0 {
		d.fail("empty batch")
	}
	cmds := make([][]byte, 0, n)
	for range n {
		l := d.length()
		if d.err == nil && l == 0 {
			d.fail("empty command in batch")
		}
		if d.err != nil {
			break
		}
		cmds = append(cmds, d.buf[:l:l])
		d.buf = d.buf[l:]
	}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return cmds, nil
}

// AppendBatchReplies appends the batch response carrying replies to dst.
func AppendBatchReplies(dst []byte, replies []BatchReply) []byte {
	e := Encoder{B: dst}
	e.Byte(batchVersion)
	e.Uvarint(uint64(len(replies)))
	for _, r := range replies {
		if r.Code == CodeOK {
			e.Byte(replyResult)
			e.Bytes(r.Result)
			continue
		}
		e.Byte(replyError)
		e.Byte(byte(r.Code))
		e.String(r.Msg)
	}
	return e.B
}

// UnmarshalBatchReplies decodes a batch response that must hold exactly n replies. The replies
// share no memory with b. A result's own encoding is not checked here: UnmarshalResult does.
func UnmarshalBatchReplies(b []byte, n int) ([]BatchReply, error) {
	d := Decoder{buf: b}
	if v := d.Byte(); v != batchVersion {
		d.fail("unknown batch version %d", v)
	}
	if got := d.Uvarint(); d.err == nil && got != uint64(n) {
		d.fail("%d replies for %d commands", got, n)
	}
	var replies []BatchReply
	if d.err == nil {
		replies = make([]BatchReply, n)
	}
	for i := range replies {
		switch k := d.Byte(); k {
		case replyResult:
			replies[i].Result = d.Bytes()
			if d.err == nil && len(replies[i].Result) == 0 {
				d.fail("empty result in batch")
			}
		case replyError:
			c := Code(d.Byte())
			if d.err == nil && (c == CodeOK || !c.Valid()) {
				d.fail("error code %d in batch", c)
			}
			replies[i].Code, replies[i].Msg = c, d.String()
		default:
			d.fail("reply kind %d", k)
		}
		if d.err != nil {
			break
		}
	}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return replies, nil
}
