package wire

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
)

func TestDecoder_RoundTrip(t *testing.T) {
	var e Encoder
	e.Uvarint(0)
	e.Uvarint(math.MaxUint64)
	e.Varint(math.MinInt64)
	e.Varint(-1)
	e.Uint64(0x0102030405060708)
	e.Byte(0xfe)
	e.Bool(true)
	e.Bool(false)
	e.Bytes([]byte("hello"))
	e.Bytes(nil)
	e.String("world")
	e.String("")
	e.Uvarint(3) // a list count
	e.B = append(e.B, 1, 2, 3)

	if !bytes.Equal(e.B[22:30], []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("Uint64 is not big-endian: % x", e.B[22:30])
	}
	d := NewDecoder(e.B)
	got := []any{
		d.Uvarint(), d.Uvarint(), d.Varint(), d.Varint(), d.Uint64(), d.Byte(), d.Bool(), d.Bool(),
		d.Bytes(), d.Bytes(), d.String(), d.String(), d.Len(3),
	}
	want := []any{
		uint64(0), uint64(math.MaxUint64), int64(math.MinInt64), int64(-1), uint64(0x0102030405060708),
		byte(0xfe), true, false, []byte("hello"), []byte(nil), "world", "", 3,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if d.Remaining() != 3 {
		t.Fatalf("Remaining = %d, want 3", d.Remaining())
	}
	wantMalformed(t, d.Finish())
}

func TestDecoder_Errors(t *testing.T) {
	cases := map[string]struct {
		in   []byte
		read func(d *Decoder)
	}{
		"byte empty":         {nil, func(d *Decoder) { d.Byte() }},
		"bool 2":             {[]byte{2}, func(d *Decoder) { d.Bool() }},
		"uint64 short":       {make([]byte, 7), func(d *Decoder) { d.Uint64() }},
		"uvarint truncated":  {[]byte{0x80}, func(d *Decoder) { d.Uvarint() }},
		"uvarint overflow":   {bytes.Repeat([]byte{0xff}, 11), func(d *Decoder) { d.Uvarint() }},
		"varint overflow":    {bytes.Repeat([]byte{0xff}, 11), func(d *Decoder) { d.Varint() }},
		"bytes past end":     {[]byte{4, 'a', 'b', 'c'}, func(d *Decoder) { d.Bytes() }},
		"bytes huge":         {binaryUvarint(math.MaxUint64), func(d *Decoder) { d.Bytes() }},
		"string past end":    {[]byte{2, 'a'}, func(d *Decoder) { _ = d.String() }},
		"len over max":       {[]byte{3, 0, 0, 0}, func(d *Decoder) { d.Len(2) }},
		"len over remaining": {[]byte{3, 0, 0}, func(d *Decoder) { d.Len(100) }},
		"len negative max":   {[]byte{0}, func(d *Decoder) { d.Len(-1) }},
		"trailing":           {[]byte{1, 2}, func(d *Decoder) { d.Byte() }},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := NewDecoder(tc.in)
			tc.read(d)
			wantMalformed(t, d.Finish())
		})
	}
}

func binaryUvarint(v uint64) []byte {
	var e Encoder
	e.Uvarint(v)
	return e.B
}

// TestDecoder_Sticky checks that after the first error every read returns zero and the error
// stays the first one.
func TestDecoder_Sticky(t *testing.T) {
	d := NewDecoder([]byte{2, 1, 1, 1, 1, 1, 1, 1, 1, 1})
	d.Bool()
	first := d.Err()
	wantMalformed(t, first)
	got := []any{d.Uvarint(), d.Varint(), d.Uint64(), d.Byte(), d.Bool(), d.Bytes(), d.String(), d.Len(10), d.Remaining()}
	want := []any{uint64(0), int64(0), uint64(0), byte(0), false, []byte(nil), "", 0, 0}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("reads after error = %v, want zeros", got)
	}
	if err := d.Finish(); err != first {
		t.Fatalf("Finish = %v, want first error %v", err, first)
	}
}

// FuzzDecoder reads data with the primitives that ops selects, then checks that re-encoding what
// was read and reading it back the same way yields the same values and no leftover bytes.
func FuzzDecoder(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7}, []byte{5, 3, 0, 0, 0, 0, 0, 0, 0, 1, 9, 1, 3, 'a', 'b', 'c', 1, 'x', 2, 0, 0})
	f.Add([]byte{0}, bytes.Repeat([]byte{0xff}, 11))
	f.Fuzz(func(t *testing.T, ops, data []byte) {
		read := func(d *Decoder, op byte) any {
			switch op % 8 {
			case 0:
				return d.Uvarint()
			case 1:
				return d.Varint()
			case 2:
				return d.Uint64()
			case 3:
				return d.Byte()
			case 4:
				return d.Bool()
			case 5:
				return d.Bytes()
			case 6:
				return d.String()
			default:
				before := d.Remaining()
				n := d.Len(int(op))
				if n < 0 || n > int(op) || n > before {
					t.Fatalf("Len(%d) = %d with %d bytes left", op, n, before)
				}
				return uint64(n) // re-encoded as the uvarint it was read from
			}
		}
		d := NewDecoder(data)
		var vals []any
		for _, op := range ops {
			before := d.Remaining()
			v := read(d, op)
			if d.Remaining() > before {
				t.Fatalf("Remaining grew from %d to %d", before, d.Remaining())
			}
			if d.Err() != nil {
				if !errors.Is(d.Err(), ErrMalformed) || d.Remaining() != 0 {
					t.Fatalf("after error %v: Remaining = %d", d.Err(), d.Remaining())
				}
				if !reflect.ValueOf(v).IsZero() {
					t.Fatalf("failed read returned %v", v)
				}
				break
			}
			vals = append(vals, v)
		}

		var e Encoder
		for _, v := range vals {
			switch v := v.(type) {
			case uint64:
				e.Uvarint(v)
			case int64:
				e.Varint(v)
			case byte:
				e.Byte(v)
			case bool:
				e.Bool(v)
			case []byte:
				e.Bytes(v)
			case string:
				e.String(v)
			}
		}
		// Uint64 and Len values are re-encoded as uvarints, so read them back that way.
		d = NewDecoder(e.B)
		for i, op := range ops[:len(vals)] {
			var v any
			switch op % 8 {
			case 2, 7:
				v = d.Uvarint()
			default:
				v = read(d, op)
			}
			if !reflect.DeepEqual(v, vals[i]) {
				t.Fatalf("value %d: re-read %#v, want %#v", i, v, vals[i])
			}
		}
		if err := d.Finish(); err != nil {
			t.Fatal(err)
		}
	})
}
