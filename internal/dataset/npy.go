package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// npyDescr maps a tensor element type to NumPy's dtype string (little-endian).
var npyDescr = map[onnxrt.DType]string{
	onnxrt.FP32: "<f4", onnxrt.FP64: "<f8", onnxrt.FP16: "<f2",
	onnxrt.INT8: "|i1", onnxrt.UINT8: "|u1", onnxrt.INT16: "<i2", onnxrt.UINT16: "<u2",
	onnxrt.INT32: "<i4", onnxrt.UINT32: "<u4", onnxrt.INT64: "<i8", onnxrt.UINT64: "<u8",
	onnxrt.BOOL: "|b1",
}

// ErrNPY is returned when samples cannot be one .npy array.
var ErrNPY = errors.New("samples do not fit one .npy array")

// NPYHeader returns the .npy version 1.0 preamble for an array of dtype and shape: magic,
// version, header length, and the header dict padded with spaces and a newline so the data
// starts on a 64-byte boundary.
func NPYHeader(dtype onnxrt.DType, shape []int64) ([]byte, error) {
	descr, ok := npyDescr[dtype]
	if !ok {
		return nil, fmt.Errorf("%w: element type %s has no NumPy dtype", ErrNPY, dtype)
	}
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.FormatInt(d, 10)
	}
	tuple := "(" + strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	tuple += ")"
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, tuple)
	const pre = 10 // magic (6) + version (2) + header length (2)
	total := pre + len(dict) + 1
	pad := (64 - total%64) % 64
	hlen := len(dict) + pad + 1
	if hlen > 65535 {
		return nil, fmt.Errorf("%w: header too long", ErrNPY)
	}
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	binary.Write(&b, binary.LittleEndian, uint16(hlen))
	b.WriteString(dict)
	b.WriteString(strings.Repeat(" ", pad))
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// WriteNPY writes one array: data is the flat Go slice an onnxrt.Tensor of dtype holds.
func WriteNPY(w io.Writer, dtype onnxrt.DType, shape []int64, data any) error {
	h, err := NPYHeader(dtype, shape)
	if err != nil {
		return err
	}
	if _, err := w.Write(h); err != nil {
		return err
	}
	return binary.Write(w, binary.LittleEndian, data)
}

// Stack concatenates the single input of every sample along the first axis (the batch axis; a
// scalar input becomes one row), as a training job reads it: shape [rows, ...]. Samples must
// have exactly one input, all of the same element type and the same shape past the first axis.
type Stack struct {
	DType onnxrt.DType
	Shape []int64
	parts []onnxrt.Tensor
}

// Add appends one sample's input.
func (s *Stack) Add(smp Sample) error {
	if len(smp.Inputs) != 1 {
		return fmt.Errorf("%w: a sample has %d inputs; .npy holds one array, use format=jsonl", ErrNPY, len(smp.Inputs))
	}
	t, err := oip.Decode(smp.Inputs[0])
	if err != nil {
		return fmt.Errorf("decode sample input: %w", err)
	}
	shape := t.Shape
	if len(shape) == 0 {
		shape = []int64{1}
	}
	if s.Shape == nil {
		s.DType, s.Shape = t.DType, append([]int64{0}, shape[1:]...)
	}
	if t.DType != s.DType || !slices.Equal(shape[1:], s.Shape[1:]) {
		return fmt.Errorf("%w: input %s %v does not stack on %s %v", ErrNPY, t.DType, shape, s.DType, s.Shape)
	}
	s.Shape[0] += shape[0]
	s.parts = append(s.parts, t)
	return nil
}

// WriteTo writes the stacked array as .npy.
func (s *Stack) WriteTo(w io.Writer) (int64, error) {
	if s.Shape == nil {
		return 0, fmt.Errorf("%w: no samples", ErrNPY)
	}
	h, err := NPYHeader(s.DType, s.Shape)
	if err != nil {
		return 0, err
	}
	n, err := w.Write(h)
	if err != nil {
		return int64(n), err
	}
	cw := &countWriter{w: w}
	for _, t := range s.parts {
		if err := binary.Write(cw, binary.LittleEndian, t.Data); err != nil {
			return int64(n) + cw.n, err
		}
	}
	return int64(n) + cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
