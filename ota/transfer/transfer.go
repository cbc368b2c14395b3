// Package transfer moves a bundle to a device over MQTT in blocks the device pulls: the wire format
// of block requests and block frames, and the device-side Download that verifies every block
// against the signed manifest before writing it and resumes from whatever verified blocks are
// already on disk. It knows nothing about brokers or clients.
package transfer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Names of the two head files, sent whole before any payload block.
const (
	HeadManifest  = "manifest.json"
	HeadSignature = "manifest.sig"
)

// Request asks for blocks of one file of a bundle. A request for a head file needs no Blocks.
type Request struct {
	Bundle string  `json:"bundle"`
	File   string  `json:"file"`
	Blocks []int64 `json:"blocks,omitempty"`
}

// MaxRequestBlocks bounds one request, so a device cannot make the control plane queue a whole
// bundle with one message.
const MaxRequestBlocks = 64

// ErrRequest is returned for a request that is malformed or asks for too much.
var ErrRequest = errors.New("bad block request")

// ParseRequest decodes and bounds a request.
func ParseRequest(b []byte) (Request, error) {
	if len(b) > 8<<10 {
		return Request{}, fmt.Errorf("%w: %d bytes", ErrRequest, len(b))
	}
	var r Request
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrRequest, err)
	}
	if len(r.Bundle) != 64 || r.File == "" {
		return Request{}, fmt.Errorf("%w: bundle id and file are required", ErrRequest)
	}
	if len(r.Blocks) > MaxRequestBlocks {
		return Request{}, fmt.Errorf("%w: %d blocks in one request, at most %d", ErrRequest, len(r.Blocks), MaxRequestBlocks)
	}
	for _, i := range r.Blocks {
		if i < 0 {
			return Request{}, fmt.Errorf("%w: negative block index", ErrRequest)
		}
	}
	return r, nil
}

// Frame is one block (or head file) on the wire.
type Frame struct {
	Bundle string `json:"bundle"`
	File   string `json:"file"`
	Index  int64  `json:"index"`
	Data   []byte `json:"-"`
}

// frameMagic starts every frame; the version digit lets the format change later.
var frameMagic = []byte("EFB1")

// ErrFrame is returned for a frame that cannot be decoded.
var ErrFrame = errors.New("bad block frame")

// Encode writes magic, a 4-byte big-endian header length, the JSON header and the raw data: block
// data travels as bytes, not base64, so a 64 KiB block costs 64 KiB on the wire.
func (f Frame) Encode() []byte {
	hdr, _ := json.Marshal(f)
	out := make([]byte, 0, len(frameMagic)+4+len(hdr)+len(f.Data))
	out = append(out, frameMagic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(hdr)))
	out = append(out, hdr...)
	return append(out, f.Data...)
}

// DecodeFrame parses a frame. Data aliases b.
func DecodeFrame(b []byte) (Frame, error) {
	if len(b) < len(frameMagic)+4 || !bytes.Equal(b[:4], frameMagic) {
		return Frame{}, fmt.Errorf("%w: missing magic", ErrFrame)
	}
	n := binary.BigEndian.Uint32(b[4:8])
	if n > 1024 || int(n) > len(b)-8 {
		return Frame{}, fmt.Errorf("%w: header length %d", ErrFrame, n)
	}
	var f Frame
	if err := json.Unmarshal(b[8:8+n], &f); err != nil {
		return Frame{}, fmt.Errorf("%w: header: %v", ErrFrame, err)
	}
	if f.Index < 0 || f.File == "" || len(f.Bundle) != 64 {
		return Frame{}, fmt.Errorf("%w: header fields", ErrFrame)
	}
	f.Data = b[8+n:]
	return f, nil
}

// Coalesce groups block indices of one file into requests of at most MaxRequestBlocks.
func Coalesce(bundle, file string, blocks []int64) []Request {
	blocks = slices.Clone(blocks)
	slices.Sort(blocks)
	var out []Request
	for len(blocks) > 0 {
		n := min(len(blocks), MaxRequestBlocks)
		out = append(out, Request{Bundle: bundle, File: file, Blocks: blocks[:n]})
		blocks = blocks[n:]
	}
	return out
}
