package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// recordVersion is the first byte of every stored record. Bump it (and keep a decoder for the old
// one) if the layout changes: spools outlive agent upgrades.
const recordVersion = 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encode lays out one record:
//
//	u8 version | uvarint len(kind) kind | varint windowStart ns | varint windowEnd ns |
//	uvarint n | n × (uvarint first, uvarint last-first) | uvarint len(body) body | u32 CRC-32C
//
// The CRC covers everything before it: bbolt checksums only its meta pages, so without it a
// flipped bit in a record would be sent to the control plane as data.
func encode(e *Entry) []byte {
	b := make([]byte, 0, 32+len(e.Kind)+len(e.Body)+8*len(e.Seqs))
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, uint64(len(e.Kind)))
	b = append(b, e.Kind...)
	b = binary.AppendVarint(b, unixNano(e.WindowStart))
	b = binary.AppendVarint(b, unixNano(e.WindowEnd))
	b = binary.AppendUvarint(b, uint64(len(e.Seqs)))
	for _, r := range e.Seqs {
		b = binary.AppendUvarint(b, r.First)
		b = binary.AppendUvarint(b, r.Last-r.First)
	}
	b = binary.AppendUvarint(b, uint64(len(e.Body)))
	b = append(b, e.Body...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

var errRecord = errors.New("bad record")

// decode parses a record stored under key. withBody false skips copying the body (Open reads only
// the headers into its index).
func decode(key uint64, b []byte, withBody bool) (Entry, error) {
	var e Entry
	if len(b) < 5 {
		return e, fmt.Errorf("record %d: %w: %d bytes", key, errRecord, len(b))
	}
	payload, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(payload, castagnoli) != sum {
		return e, fmt.Errorf("record %d: %w: checksum mismatch", key, errRecord)
	}
	if payload[0] != recordVersion {
		return e, fmt.Errorf("record %d: %w: version %d", key, errRecord, payload[0])
	}
	r := reader{b: payload[1:]}
	kind := r.bytes()
	e.Kind = string(kind)
	e.WindowStart = fromUnixNano(r.varint())
	e.WindowEnd = fromUnixNano(r.varint())
	n := r.uvarint()
	if n == 0 || n > uint64(len(payload)) {
		r.err = true
	}
	if !r.err {
		e.Seqs = make([]Range, 0, n)
		var prev uint64
		for i := uint64(0); i < n && !r.err; i++ {
			first := r.uvarint()
			last := first + r.uvarint()
			if last < first || (i > 0 && first <= prev+1) {
				r.err = true // ranges are stored ascending, disjoint and not adjacent
			}
			e.Seqs = append(e.Seqs, Range{First: first, Last: last})
			prev = last
		}
	}
	body := r.bytes()
	if r.err || len(r.b) != 0 {
		return Entry{}, fmt.Errorf("record %d: %w: malformed", key, errRecord)
	}
	e.FirstSeq, e.LastSeq = e.Seqs[0].First, e.Seqs[len(e.Seqs)-1].Last
	if e.FirstSeq != key {
		return Entry{}, fmt.Errorf("record %d: %w: first sequence %d", key, errRecord, e.FirstSeq)
	}
	if withBody {
		e.Body = append([]byte(nil), body...)
	}
	return e, nil
}

type reader struct {
	b   []byte
	err bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err || n > uint64(len(r.b)) {
		r.err = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
