package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("ember: malformed message")

// Encoder appends binary encodings to B. It cannot fail; the zero value is ready to use.
type Encoder struct{ B []byte }

// Uvarint appends v as an unsigned varint.
func (e *Encoder) Uvarint(v uint64) { e.B = binary.AppendUvarint(e.B, v) }

// Varint appends v as a zig-zag varint, so small negative numbers stay short.
func (e *Encoder) Varint(v int64) { e.B = binary.AppendVarint(e.B, v) }

// Uint64 appends v as 8 big-endian bytes.
func (e *Encoder) Uint64(v uint64) { e.B = binary.BigEndian.AppendUint64(e.B, v) }

// Byte appends v.
func (e *Encoder) Byte(v byte) { e.B = append(e.B, v) }

// Bool appends v as 0 or 1.
func (e *Encoder) Bool(v bool) {
	if v {
		e.B = append(e.B, 1)
	} else {
		e.B = append(e.B, 0)
	}
}

// Bytes appends b prefixed by its length.
func (e *Encoder) Bytes(b []byte) {
	e.Uvarint(uint64(len(b)))
	e.B = append(e.B, b...)
}

// String appends s exactly as Bytes would append []byte(s).
func (e *Encoder) String(s string) {
	e.Uvarint(uint64(len(s)))
	e.B = append(e.B, s...)
}

// present writes a presence byte for an optional value and reports whether to encode the value.
func (e *Encoder) present(ok bool) bool {
	e.Bool(ok)
	return ok
}

// Decoder reads what an Encoder wrote. Its error is sticky: after the first failure every method
// returns the zero value, so callers can decode a whole message and check Err or Finish once.
type Decoder struct {
	buf []byte
	err error
	// shared makes Bytes return slices of buf instead of copies (UnmarshalCommandShared).
	shared bool
}

// NewDecoder returns a Decoder reading b. Bytes and String return copies, so b may be reused once
// decoding is done.
func NewDecoder(b []byte) *Decoder { return &Decoder{buf: b} }

// fail records the first error and drops the input so that later reads return zero values.
func (d *Decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	d.buf = nil
}

// Err returns the first error encountered, if any.
func (d *Decoder) Err() error { return d.err }

// Remaining returns the number of unread bytes.
func (d *Decoder) Remaining() int { return len(d.buf) }

// Finish returns the first error, or an error if any input is left unread.
func (d *Decoder) Finish() error {
	if d.err == nil && len(d.buf) > 0 {
		d.fail("%d trailing bytes", len(d.buf))
	}
	return d.err
}

// Uvarint reads an unsigned varint.
func (d *Decoder) Uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		if n == 0 {
			d.fail("truncated varint")
		} else {
			d.fail("varint overflows 64 bits")
		}
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// Varint reads a zig-zag varint.
func (d *Decoder) Varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		if n == 0 {
			d.fail("truncated varint")
		} else {
			d.fail("varint overflows 64 bits")
		}
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// Uint64 reads 8 big-endian bytes.
func (d *Decoder) Uint64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.buf) < 8 {
		d.fail("truncated uint64")
		return 0
	}
	v := binary.BigEndian.Uint64(d.buf)
	d.buf = d.buf[8:]
	return v
}

// Byte reads one byte.
func (d *Decoder) Byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) == 0 {
		d.fail("truncated")
		return 0
	}
	v := d.buf[0]
	d.buf = d.buf[1:]
	return v
}

// Bool reads a byte that must be 0 or 1, so that every value has exactly one encoding.
func (d *Decoder) Bool() bool {
	v := d.Byte()
	if v > 1 {
		d.fail("bool byte %d", v)
		return false
	}
	return v == 1
}

// length reads a length prefix and checks that that many bytes follow.
func (d *Decoder) length() int {
	n := d.Uvarint()
	if n > uint64(len(d.buf)) {
		d.fail("length %d exceeds the %d bytes left", n, len(d.buf))
		return 0
	}
	return int(n)
}

// Bytes reads a length-prefixed byte slice. It returns a copy, so the caller may keep it after
// the input is reused, unless the decoder is shared; an empty slice decodes as nil.
func (d *Decoder) Bytes() []byte {
	n := d.length()
	if n == 0 {
		return nil
	}
	var b []byte
	if d.shared {
		b = d.buf[:n:n]
	} else {
		b = make([]byte, n)
		copy(b, d.buf)
	}
	d.buf = d.buf[n:]
	return b
}

// View reads a length-prefixed byte slice without copying it: the result aliases the input, so
// it is valid only as long as the input is.
func (d *Decoder) View() []byte {
	n := d.length()
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	return b
}

// String reads what Encoder.String wrote.
func (d *Decoder) String() string {
	n := d.length()
	if n == 0 {
		return ""
	}
	s := string(d.buf[:n])
	d.buf = d.buf[n:]
	return s
}

// Len reads the element count of a following list. The count must not exceed max, nor the bytes
// left (every element takes at least one byte), so a hostile count cannot force a huge allocation.
// Callers whose elements take more than a byte pass Remaining()/minimum size as max.
func (d *Decoder) Len(max int) int {
	n := d.Uvarint()
	if d.err != nil {
		return 0
	}
	if max < 0 || n > uint64(max) || n > uint64(len(d.buf)) {
		d.fail("count %d exceeds limit %d or the %d bytes left", n, max, len(d.buf))
		return 0
	}
	return int(n)
}
