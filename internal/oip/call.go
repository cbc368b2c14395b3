package oip

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unsafe"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// Binary tensor extension (Triton's binary_tensor_data): the HTTP body is the JSON header of
// HeaderLengthKey bytes followed by the raw tensors, each little-endian and row-major, in the
// order of the inputs (or outputs) that carry a binary_data_size parameter.
const (
	// HeaderLengthKey is the HTTP header (and response header) that gives the JSON part's length.
	HeaderLengthKey = "Inference-Header-Content-Length"
	// ParamBinarySize on an input or output says its data is binary, of this many bytes.
	ParamBinarySize = "binary_data_size"
	// ParamBinaryData on a requested output asks for it in binary.
	ParamBinaryData = "binary_data"
	// ParamBinaryOutput on the request asks for every output in binary.
	ParamBinaryOutput = "binary_data_output"
	// ExtensionBinary is the extension's name as GET /v2 lists it.
	ExtensionBinary = "binary_tensor_data"
)

// Call is an inference request whose inputs are decoded into runtime tensors: what the agent's
// HTTP and MQTT front ends hand to the model. Parsing goes straight from the body's bytes into
// typed slices (no intermediate []any or json.RawMessage per element), because for a model of a
// few thousand inputs the JSON decode is most of what a request costs over the run itself.
type Call struct {
	ID         string
	Parameters map[string]any
	Inputs     []onnxrt.Tensor
	Outputs    []RequestOutput
	// Extra holds top-level members that are not part of the protocol (the MQTT front end's
	// reply_to and correlation_id), only those named in ParseOptions.Extra.
	Extra map[string]string
}

// ParseOptions tunes ParseCall.
type ParseOptions struct {
	// Extra names top-level string members to keep in Call.Extra.
	Extra []string
	// AliasBinary lets binary inputs view bin in place instead of copying it, where the host is
	// little-endian and the input's bytes are aligned for its element type (the HTTP front end
	// aligns them, see Server.infer). The caller must then keep bin unchanged until it is done
	// with the Call. For a 110 KB input this saves an allocation and a copy per request.
	AliasBinary bool
}

// BinaryOutput reports whether the caller wants output name in binary: by its own
// binary_data parameter, or else by the request's binary_data_output.
func (c *Call) BinaryOutput(name string) bool {
	for _, o := range c.Outputs {
		if o.Name == name {
			if v, ok := o.Parameters[ParamBinaryData]; ok {
				b, _ := v.(bool)
				return b
			}
		}
	}
	b, _ := c.Parameters[ParamBinaryOutput].(bool)
	return b
}

// ParseCall parses a request: header is the JSON body (or its JSON part under the binary
// extension), bin the binary part after it (nil without the extension). Every problem is an
// ErrBadRequest or an *onnxrt.InputError that names the input.
func ParseCall(header, bin []byte, po ParseOptions) (*Call, error) {
	s := &scanner{b: header}
	c := &Call{}
	type pending struct {
		idx     int
		data    []byte
		decoded any   // data parsed in place (datatype and shape came first)
		derr    error // why in-place parsing failed
		size    int64 // binary_data_size, -1 when absent
	}
	var inputs []pending
	err := s.object(func(key string) error {
		switch key {
		case "id":
			v, err := s.str()
			c.ID = v
			return err
		case "parameters":
			raw, err := s.raw()
			if err != nil {
				return err
			}
			return unmarshalParams(raw, &c.Parameters, "request parameters")
		case "outputs":
			raw, err := s.raw()
			if err != nil {
				return err
			}
			if err := json.Unmarshal(raw, &c.Outputs); err != nil {
				return fmt.Errorf("outputs: %v", err)
			}
			return nil
		case "inputs":
			return s.array(func() error {
				var t onnxrt.Tensor
				p := pending{size: -1}
				var params map[string]any
				err := s.object(func(k string) error {
					switch k {
					case "name":
						v, err := s.str()
						t.Name = v
						return err
					case "datatype":
						v, err := s.str()
						t.DType = onnxrt.DType(v)
						return err
					case "shape":
						t.Shape = []int64{}
						return s.array(func() error {
							v, err := s.integer()
							t.Shape = append(t.Shape, v)
							return err
						})
					case "parameters":
						raw, err := s.raw()
						if err != nil {
							return err
						}
						return unmarshalParams(raw, &params, "input parameters")
					case "data":
						// Clients write name, shape and datatype before data; then the
						// elements are parsed in place, in one pass over the bytes.
						if n, err := onnxrt.NumElements(t.Shape); err == nil && t.DType.Supported() {
							s.ws()
							start := s.i
							p.decoded, p.derr = decodeAt(s, t.DType, int(n))
							p.data = s.b[start:s.i]
							if p.derr != nil {
								return &onnxrt.InputError{Input: t.Name, Reason: p.derr.Error()}
							}
							return nil
						}
						raw, err := s.raw()
						p.data = raw
						return err
					}
					_, err := s.raw()
					return err
				})
				if err != nil {
					return err
				}
				if v, ok := params[ParamBinarySize]; ok {
					f, isNum := v.(float64)
					if !isNum || f < 0 || f != math.Trunc(f) {
						return &onnxrt.InputError{Input: t.Name, Reason: fmt.Sprintf("%s must be a non-negative integer, got %v", ParamBinarySize, v)}
					}
					p.size = int64(f)
				}
				for k := range params {
					if k == "shared_memory_region" {
						return &onnxrt.InputError{Input: t.Name, Reason: "shared memory inputs are not supported; send the data in the body"}
					}
				}
				p.idx = len(c.Inputs)
				c.Inputs = append(c.Inputs, t)
				inputs = append(inputs, p)
				return nil
			})
		}
		for _, x := range po.Extra {
			if key == x {
				v, err := s.str()
				if err != nil {
					return err
				}
				if c.Extra == nil {
					c.Extra = map[string]string{}
				}
				c.Extra[key] = v
				return nil
			}
		}
		_, err := s.raw()
		return err
	})
	if err == nil {
		s.ws()
		if s.i != len(s.b) {
			err = s.errf("trailing data after the request object")
		}
	}
	if err != nil {
		if _, ok := err.(*onnxrt.InputError); ok {
			return nil, err
		}
		return nil, fmt.Errorf("%w: body is not a JSON inference request: %v", ErrBadRequest, err)
	}
	if len(c.Inputs) == 0 {
		return nil, fmt.Errorf("%w: no inputs", ErrBadRequest)
	}
	off := int64(0)
	for _, p := range inputs {
		t := &c.Inputs[p.idx]
		if t.Name == "" {
			return nil, fmt.Errorf("%w: an input has no name", ErrBadRequest)
		}
		if t.DType == onnxrt.BYTES {
			return nil, &onnxrt.InputError{Input: t.Name, Reason: "datatype BYTES (strings) is not supported by this model; it takes numeric tensors"}
		}
		if !t.DType.Supported() {
			return nil, &onnxrt.InputError{Input: t.Name, Reason: fmt.Sprintf("datatype %q is not an Open Inference Protocol datatype this server runs", string(t.DType))}
		}
		if t.Shape == nil {
			return nil, &onnxrt.InputError{Input: t.Name, Reason: "no shape"}
		}
		n, err := onnxrt.NumElements(t.Shape)
		if err != nil {
			return nil, &onnxrt.InputError{Input: t.Name, Reason: err.Error()}
		}
		if p.size >= 0 {
			if p.data != nil {
				return nil, &onnxrt.InputError{Input: t.Name, Reason: "has both data and " + ParamBinarySize}
			}
			if want := n * elemSize(t.DType); p.size != want {
				return nil, &onnxrt.InputError{Input: t.Name, Reason: fmt.Sprintf("%s is %d bytes, shape %s of %s needs %d", ParamBinarySize, p.size, onnxrt.FormatShape(t.Shape), t.DType, want)}
			}
			if off+p.size > int64(len(bin)) {
				return nil, &onnxrt.InputError{Input: t.Name, Reason: fmt.Sprintf("binary data ends at byte %d, the body's binary part has %d", off+p.size, len(bin))}
			}
			if t.Data, err = decodeBinary(t.DType, int(n), bin[off:off+p.size], po.AliasBinary); err != nil {
				return nil, &onnxrt.InputError{Input: t.Name, Reason: err.Error()}
			}
			off += p.size
			continue
		}
		if p.data == nil {
			return nil, &onnxrt.InputError{Input: t.Name, Reason: "no data (and no " + ParamBinarySize + " parameter)"}
		}
		if p.decoded != nil {
			t.Data = p.decoded
			continue
		}
		if t.Data, err = decodeJSONData(t.DType, int(n), p.data); err != nil {
			return nil, &onnxrt.InputError{Input: t.Name, Reason: err.Error()}
		}
	}
	if off != int64(len(bin)) {
		return nil, fmt.Errorf("%w: the binary part has %d bytes, the inputs' %s add up to %d", ErrBadRequest, len(bin), ParamBinarySize, off)
	}
	return c, nil
}

func unmarshalParams(raw []byte, dst *map[string]any, what string) error {
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%s: %v", what, err)
	}
	return nil
}

// elemSize is the binary extension's element size of a datatype (BOOL is one byte).
func elemSize(d onnxrt.DType) int64 {
	switch d {
	case onnxrt.FP64, onnxrt.INT64, onnxrt.UINT64:
		return 8
	case onnxrt.FP32, onnxrt.INT32, onnxrt.UINT32:
		return 4
	case onnxrt.FP16, onnxrt.INT16, onnxrt.UINT16:
		return 2
	}
	return 1
}

// decodeBinary reads n little-endian elements.
func decodeBinary(d onnxrt.DType, n int, b []byte, alias bool) (any, error) {
	switch d {
	case onnxrt.FP32:
		return decodeLE[float32](n, b, alias)
	case onnxrt.FP64:
		return decodeLE[float64](n, b, alias)
	case onnxrt.FP16, onnxrt.UINT16:
		return decodeLE[uint16](n, b, alias)
	case onnxrt.INT8:
		return decodeLE[int8](n, b, alias)
	case onnxrt.UINT8:
		x := make([]uint8, n)
		copy(x, b)
		return x, nil
	case onnxrt.INT16:
		return decodeLE[int16](n, b, alias)
	case onnxrt.INT32:
		return decodeLE[int32](n, b, alias)
	case onnxrt.UINT32:
		return decodeLE[uint32](n, b, alias)
	case onnxrt.INT64:
		return decodeLE[int64](n, b, alias)
	case onnxrt.UINT64:
		return decodeLE[uint64](n, b, alias)
	case onnxrt.BOOL:
		x := make([]bool, n)
		for i, c := range b {
			if c > 1 {
				return nil, fmt.Errorf("BOOL element %d is byte %d; booleans are 0 or 1", i, c)
			}
			x[i] = c == 1
		}
		return x, nil
	}
	return nil, fmt.Errorf("datatype %s has no binary form here", d)
}

// hostLittleEndian is true on the hosts edgefleet ships for (x86-64, arm64), where the
// protocol's little-endian bytes are already the memory layout of the typed slice.
var hostLittleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// decodeLE returns n little-endian elements of b (exactly n elements' worth of bytes): with
// alias, b itself where the host is little-endian and b is aligned for T; else a new slice, one
// memory copy on a little-endian host, where encoding/binary would convert element by element
// (for ocr_cls's 110 KB input, tens of µs per request).
func decodeLE[T int8 | int16 | uint16 | int32 | uint32 | int64 | uint64 | float32 | float64](n int, b []byte, alias bool) (any, error) {
	var zero T
	size := int(unsafe.Sizeof(zero))
	if len(b) != n*size {
		return nil, fmt.Errorf("binary data: %d bytes for %d elements of %d bytes", len(b), n, size)
	}
	if alias && hostLittleEndian && n > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(b)))%unsafe.Alignof(zero) == 0 {
		return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), n), nil
	}
	x := make([]T, n)
	if hostLittleEndian {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), len(b)), b)
		return x, nil
	}
	if _, err := binary.Decode(b, binary.LittleEndian, x); err != nil {
		return nil, fmt.Errorf("binary data: %w", err)
	}
	return x, nil
}

// decodeJSONData parses a flat or nested JSON array of exactly n scalars into d's slice type.
func decodeJSONData(d onnxrt.DType, n int, raw []byte) (any, error) {
	s := &scanner{b: raw}
	out, err := decodeAt(s, d, n)
	if err != nil {
		return nil, err
	}
	s.ws()
	if s.i != len(s.b) {
		return nil, s.errf("trailing data")
	}
	return out, nil
}

// decodeAt parses the data value at the scanner's position.
func decodeAt(s *scanner, d onnxrt.DType, n int) (any, error) {
	count := 0
	var put func(tok []byte, i int) error
	var out any
	intoInt := func(lo, hi int64, set func(i int, v int64)) func([]byte, int) error {
		return func(tok []byte, i int) error {
			v, err := parseInt(tok)
			if err != nil {
				return fmt.Errorf("element %d (%s) %v for %s", i, tok, err, d)
			}
			if v < lo || v > hi {
				return fmt.Errorf("element %d (%s) is out of range for %s", i, tok, d)
			}
			set(i, v)
			return nil
		}
	}
	switch d {
	case onnxrt.FP32:
		x := make([]float32, n)
		start := s.i
		if fastFloats(s, x, true) {
			return x, nil
		}
		s.i = start
		out = x
		put = func(tok []byte, i int) error {
			v, err := parseFloat(tok, 32)
			x[i] = float32(v)
			return elemErr(err, i, tok, d)
		}
	case onnxrt.FP64:
		x := make([]float64, n)
		start := s.i
		if fastFloats(s, x, false) {
			return x, nil
		}
		s.i = start
		out = x
		put = func(tok []byte, i int) error {
			v, err := parseFloat(tok, 64)
			x[i] = v
			return elemErr(err, i, tok, d)
		}
	case onnxrt.FP16:
		x := make([]uint16, n)
		out = x
		put = func(tok []byte, i int) error {
			v, err := parseFloat(tok, 32)
			x[i] = onnxrt.Float16Bits(float32(v))
			return elemErr(err, i, tok, d)
		}
	case onnxrt.BOOL:
		x := make([]bool, n)
		out = x
		put = func(tok []byte, i int) error {
			switch string(tok) {
			case "true", "1":
				x[i] = true
			case "false", "0":
			default:
				return fmt.Errorf("element %d (%s) is not true/false or 0/1 for BOOL", i, tok)
			}
			return nil
		}
	case onnxrt.INT8:
		x := make([]int8, n)
		out = x
		put = intoInt(math.MinInt8, math.MaxInt8, func(i int, v int64) { x[i] = int8(v) })
	case onnxrt.UINT8:
		x := make([]uint8, n)
		out = x
		put = intoInt(0, math.MaxUint8, func(i int, v int64) { x[i] = uint8(v) })
	case onnxrt.INT16:
		x := make([]int16, n)
		out = x
		put = intoInt(math.MinInt16, math.MaxInt16, func(i int, v int64) { x[i] = int16(v) })
	case onnxrt.UINT16:
		x := make([]uint16, n)
		out = x
		put = intoInt(0, math.MaxUint16, func(i int, v int64) { x[i] = uint16(v) })
	case onnxrt.INT32:
		x := make([]int32, n)
		out = x
		put = intoInt(math.MinInt32, math.MaxInt32, func(i int, v int64) { x[i] = int32(v) })
	case onnxrt.UINT32:
		x := make([]uint32, n)
		out = x
		put = intoInt(0, math.MaxUint32, func(i int, v int64) { x[i] = uint32(v) })
	case onnxrt.INT64:
		x := make([]int64, n)
		out = x
		put = intoInt(math.MinInt64, math.MaxInt64, func(i int, v int64) { x[i] = v })
	case onnxrt.UINT64:
		x := make([]uint64, n)
		out = x
		put = func(tok []byte, i int) error {
			v, err := strconv.ParseUint(bstr(tok), 10, 64)
			x[i] = v
			if err != nil {
				return fmt.Errorf("element %d (%s) is not a UINT64", i, tok)
			}
			return nil
		}
	default:
		return nil, fmt.Errorf("datatype %s is not supported", d)
	}
	var walk func(depth int) error
	walk = func(depth int) error {
		if depth > 32 {
			return s.errf("data nested deeper than 32 levels")
		}
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == '[' {
			return s.array(func() error { return walk(depth + 1) })
		}
		tok, err := s.scalar()
		if err != nil {
			return err
		}
		if count >= n {
			count++
			return nil // counted for the error message below
		}
		if err := put(tok, count); err != nil {
			return err
		}
		count++
		return nil
	}
	if err := walk(0); err != nil {
		return nil, err
	}
	if count != n {
		return nil, fmt.Errorf("shape needs %d elements, data has %d", n, count)
	}
	return out, nil
}

func elemErr(err error, i int, tok []byte, d onnxrt.DType) error {
	if err != nil {
		return fmt.Errorf("element %d (%s) is not a number for %s", i, tok, d)
	}
	return nil
}

// bstr views b as a string without copying, for strconv calls that do not keep it.
func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseFloat parses a JSON number, or the strings NaN, Infinity and -Infinity (JSON has no
// literal for them; clients such as tritonclient write them as strings). Plain decimals take an
// exact fast path (mantissa below 2^53 and a power of ten that float64 holds exactly, so one
// correctly rounded multiply or divide); for 32 bits the float64 result is rounded again, which
// is exact unless it sits on a float32 midpoint, and those go to strconv.
func parseFloat(tok []byte, bits int) (float64, error) {
	if len(tok) > 0 && tok[0] == '"' {
		switch string(tok) {
		case `"NaN"`, `"nan"`:
			return math.NaN(), nil
		case `"Infinity"`, `"inf"`, `"+inf"`, `"Inf"`:
			return math.Inf(1), nil
		case `"-Infinity"`, `"-inf"`, `"-Inf"`:
			return math.Inf(-1), nil
		}
		return 0, strconv.ErrSyntax
	}
	if f, ok := fastFloat(tok); ok {
		if bits == 32 {
			if math.Float64bits(f)&(1<<29-1) == 1<<28 {
				return strconv.ParseFloat(bstr(tok), 32)
			}
		}
		return f, nil
	}
	return strconv.ParseFloat(bstr(tok), bits)
}

func fastFloat(b []byte) (float64, bool) {
	i, neg := 0, false
	if i < len(b) && b[i] == '-' {
		neg, i = true, 1
	}
	var mant uint64
	digits, exp := 0, 0
	start := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		mant = mant*10 + uint64(b[i]-'0')
		digits++
	}
	if i == start {
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		fs := i
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			mant = mant*10 + uint64(b[i]-'0')
			digits++
		}
		if i == fs {
			return 0, false
		}
		exp -= i - fs
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg, i = b[i] == '-', i+1
		}
		es, e := i, 0
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9' && e < 1000; i++ {
			e = e*10 + int(b[i]-'0')
		}
		if i == es {
			return 0, false
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	if i != len(b) || digits > 15 || mant >= 1<<53 {
		return 0, false
	}
	f := float64(mant)
	switch {
	case exp == 0:
	case exp > 0 && exp <= 22:
		f *= pow10[exp]
	case exp < 0 && exp >= -22:
		f /= pow10[-exp]
	default:
		return 0, false
	}
	if neg {
		f = -f
	}
	return f, true
}

// parseInt parses an integer token; 3.0 and 3e0 are accepted, 3.5 is not.
func parseInt(tok []byte) (int64, error) {
	if v, err := strconv.ParseInt(bstr(tok), 10, 64); err == nil {
		return v, nil
	}
	if len(tok) > 0 && tok[0] == '"' {
		return 0, fmt.Errorf("is a string")
	}
	f, err := strconv.ParseFloat(bstr(tok), 64)
	if err != nil {
		return 0, fmt.Errorf("is not a number")
	}
	if f != math.Trunc(f) {
		return 0, fmt.Errorf("is not an integer")
	}
	if f < -(1<<63) || f >= 1<<63 {
		return 0, fmt.Errorf("is out of range")
	}
	return int64(f), nil
}
