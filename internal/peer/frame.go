package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ember-kv/ember/internal/wire"
)

// Every RPC frame, in both directions, is
//
//	4-byte big-endian length of the rest | 8-byte call ID | 1 byte kind | payload
//
// where kind is the method in a request and the status in a response. An error response's
// payload is one wire.Code byte followed by the message.
const (
	lenSize    = 4
	frameFixed = 8 + 1 // call ID + kind: the smallest legal value of the length field
	headerSize = lenSize + frameFixed

	statusOK    byte = 0
	statusError byte = 1

	// DefaultMaxFrame is the default limit on a frame's length field, for both Client and
	// Server.
	DefaultMaxFrame = 64 << 20

	// readChunk caps how much is allocated for a frame before its bytes have arrived, so a
	// peer announcing a huge frame and then sending nothing costs little memory.
	readChunk = 1 << 20
)

// errMalformedFrame means the stream is out of sync or hostile; the connection must be dropped.
var errMalformedFrame = errors.New("ember: malformed peer frame")

// Error is an error carried as a value over the peer RPC: a handler returns it to choose the
// code the caller sees, and Client.Call returns it (as *Error) when the remote handler did. It
// is a plain value, not modified once returned, so it may be shared between goroutines.
type Error struct {
	Code wire.Code
	Msg  string
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	return fmt.Sprintf("ember: peer error code %d", e.Code)
}

func appendHeader(b []byte, payloadLen int, id uint64, kind byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(frameFixed+payloadLen))
	b = binary.BigEndian.AppendUint64(b, id)
	return append(b, kind)
}

// fits reports whether a frame with an n-byte payload respects maxFrame.
func fits(n, maxFrame int) bool { return frameFixed+n <= maxFrame }

// readFrame reads one frame. The returned payload is freshly allocated and owned by the caller.
// Any error leaves r at an unknown position, so the connection must be closed.
func readFrame(r io.Reader, maxFrame int) (id uint64, kind byte, payload []byte, err error) {
	var hdr [headerSize]byte
	// The length is checked before anything else is read, so a bad length is rejected without
	// waiting for bytes that may never come.
	if _, err := io.ReadFull(r, hdr[:lenSize]); err != nil {
		return 0, 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:lenSize]))
	if n < frameFixed || n > maxFrame {
		return 0, 0, nil, fmt.Errorf("%w: length %d not in [%d, %d]", errMalformedFrame, n, frameFixed, maxFrame)
	}
	if _, err := io.ReadFull(r, hdr[lenSize:]); err != nil {
		return 0, 0, nil, noEOF(err)
	}
	payload, err = readPayload(r, n-frameFixed)
	if err != nil {
		return 0, 0, nil, noEOF(err)
	}
	return binary.BigEndian.Uint64(hdr[lenSize:]), hdr[headerSize-1], payload, nil
}

// readPayload reads exactly n bytes, growing the buffer as data arrives rather than trusting n
// up front.
func readPayload(r io.Reader, n int) ([]byte, error) {
	if n <= readChunk {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	b := make([]byte, 0, readChunk)
	for len(b) < n {
		if len(b) == cap(b) {
			b = append(b, make([]byte, min(cap(b), n-len(b)))...)[:len(b)]
		}
		m, err := io.ReadFull(r, b[len(b):min(cap(b), n)])
		b = b[:len(b)+m]
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// noEOF turns a clean EOF inside a frame into ErrUnexpectedEOF: only EOF between frames is a
// clean close.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func encodeError(err error) []byte {
	var pe *Error
	if !errors.As(err, &pe) {
		pe = &Error{Code: wire.CodeInternal, Msg: err.Error()}
	}
	return append([]byte{byte(pe.Code)}, pe.Msg...)
}

func decodeError(payload []byte) (*Error, error) {
	if len(payload) < 1 {
		return nil, fmt.Errorf("%w: empty error payload", errMalformedFrame)
	}
	return &Error{Code: wire.Code(payload[0]), Msg: string(payload[1:])}, nil
}
