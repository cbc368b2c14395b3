package oip

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// ResponseWriter appends an inference response to a caller-owned buffer, so a server can reuse
// buffers across requests and floats are formatted without reflection or boxing (encoding/json
// would box every element of a []any for the NaN case and reflect over the rest).
type ResponseWriter struct {
	// JSON is the response's JSON part; Binary the binary part (outputs sent in binary, in
	// order), empty when none.
	JSON, Binary []byte
}

// Reset empties both parts, keeping their capacity.
func (w *ResponseWriter) Reset() { w.JSON, w.Binary = w.JSON[:0], w.Binary[:0] }

// Begin writes the response up to the outputs array. extra, when set, adds top-level string
// members (the MQTT front end's correlation_id).
func (w *ResponseWriter) Begin(model, version, id string, extra ...[2]string) {
	b := append(w.JSON, `{"model_name":`...)
	b = appendString(b, model)
	if version != "" {
		b = append(b, `,"model_version":`...)
		b = appendString(b, version)
	}
	if id != "" {
		b = append(b, `,"id":`...)
		b = appendString(b, id)
	}
	for _, kv := range extra {
		b = append(b, ',')
		b = appendString(b, kv[0])
		b = append(b, ':')
		b = appendString(b, kv[1])
	}
	w.JSON = append(b, `,"outputs":[`...)
}

// Output appends one output, its data in the JSON part or, when binary, in the binary part with
// a binary_data_size parameter.
func (w *ResponseWriter) Output(t onnxrt.Tensor, bin bool) {
	b := w.JSON
	if b[len(b)-1] != '[' {
		b = append(b, ',')
	}
	b = append(b, `{"name":`...)
	b = appendString(b, t.Name)
	b = append(b, `,"datatype":`...)
	b = appendString(b, string(t.DType))
	b = append(b, `,"shape":[`...)
	for i, d := range t.Shape {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, d, 10)
	}
	b = append(b, ']')
	if bin {
		n := len(w.Binary)
		w.Binary = appendBinary(w.Binary, t.Data)
		b = append(b, `,"parameters":{"binary_data_size":`...)
		b = strconv.AppendInt(b, int64(len(w.Binary)-n), 10)
		b = append(b, "}}"...)
		w.JSON = b
		return
	}
	b = append(b, `,"data":`...)
	b = AppendData(b, t)
	w.JSON = append(b, '}')
}

// End closes the response.
func (w *ResponseWriter) End() { w.JSON = append(w.JSON, "]}"...) }

func appendBinary(b []byte, data any) []byte {
	if d, ok := data.([]bool); ok {
		for _, v := range d {
			if v {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		}
		return b
	}
	if hostLittleEndian {
		if raw, ok := rawBytes(data); ok {
			return append(b, raw...)
		}
	}
	out, err := binary.Append(b, binary.LittleEndian, data)
	if err != nil {
		// Only fixed-size slices reach here (onnxrt outputs); keep the bytes we had.
		return b
	}
	return out
}

// AppendData appends a tensor's elements as a flat JSON array. JSON has no NaN or Inf, so
// non-finite floats become null and the caller sees them plainly.
func AppendData(b []byte, t onnxrt.Tensor) []byte {
	b = append(b, '[')
	switch d := t.Data.(type) {
	case []float32:
		for i, v := range d {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFloat(b, float64(v), 32)
		}
	case []float64:
		for i, v := range d {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFloat(b, v, 64)
		}
	case []uint16:
		for i, v := range d {
			if i > 0 {
				b = append(b, ',')
			}
			if t.DType == onnxrt.FP16 {
				b = appendFloat(b, float64(onnxrt.Float16Value(v)), 32)
			} else {
				b = strconv.AppendUint(b, uint64(v), 10)
			}
		}
	case []int8:
		b = appendInts(b, d)
	case []int16:
		b = appendInts(b, d)
	case []int32:
		b = appendInts(b, d)
	case []int64:
		b = appendInts(b, d)
	case []uint8:
		b = appendUints(b, d)
	case []uint32:
		b = appendUints(b, d)
	case []uint64:
		b = appendUints(b, d)
	case []bool:
		for i, v := range d {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendBool(b, v)
		}
	}
	return append(b, ']')
}

func appendFloat(b []byte, v float64, bits int) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, bits)
}

func appendInts[T int8 | int16 | int32 | int64](b []byte, d []T) []byte {
	for i, v := range d {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(v), 10)
	}
	return b
}

func appendUints[T uint8 | uint32 | uint64](b []byte, d []T) []byte {
	for i, v := range d {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(v), 10)
	}
	return b
}

// appendString writes a JSON string; plain ASCII (every name and version we produce) is copied
// as is, anything else goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// AppendError appends {"error": msg} plus extra string members.
func AppendError(b []byte, msg string, extra ...[2]string) []byte {
	b = append(b, `{"error":`...)
	b = appendString(b, msg)
	for _, kv := range extra {
		b = append(b, ',')
		b = appendString(b, kv[0])
		b = append(b, ':')
		b = appendString(b, kv[1])
	}
	return append(b, '}')
}

// rawBytes views a numeric slice's memory as bytes (the protocol's layout on a little-endian host).
func rawBytes(data any) ([]byte, bool) {
	switch d := data.(type) {
	case []float32:
		return asBytes(d), true
	case []float64:
		return asBytes(d), true
	case []int8:
		return asBytes(d), true
	case []uint8:
		return d, true
	case []int16:
		return asBytes(d), true
	case []uint16:
		return asBytes(d), true
	case []int32:
		return asBytes(d), true
	case []uint32:
		return asBytes(d), true
	case []int64:
		return asBytes(d), true
	case []uint64:
		return asBytes(d), true
	}
	return nil, false
}

func asBytes[T any](d []T) []byte {
	if len(d) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(d))), len(d)*int(unsafe.Sizeof(d[0])))
}
