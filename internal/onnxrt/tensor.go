package onnxrt

import (
	"fmt"
	"math"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
)

// DType is a tensor element type, spelled as in the Open Inference Protocol (KServe v2), which is
// also what the local inference API and bundle manifests use.
type DType string

// Element types a Session can run, and the Go slice type Tensor.Data must hold for each.
const (
	FP32   DType = "FP32"   // []float32
	FP16   DType = "FP16"   // []uint16, IEEE 754 half-precision bits (see Float16Bits)
	FP64   DType = "FP64"   // []float64
	INT8   DType = "INT8"   // []int8
	UINT8  DType = "UINT8"  // []uint8
	INT16  DType = "INT16"  // []int16
	UINT16 DType = "UINT16" // []uint16
	INT32  DType = "INT32"  // []int32
	UINT32 DType = "UINT32" // []uint32
	INT64  DType = "INT64"  // []int64
	UINT64 DType = "UINT64" // []uint64
	BOOL   DType = "BOOL"   // []bool
)

// Element types Inspect may report that a Session cannot run.
const (
	BYTES DType = "BYTES" // ONNX string tensors
	BF16  DType = "BF16"
)

var dtypeToORT = map[DType]ort.TensorElementDataType{
	FP32: ort.TensorElementDataTypeFloat, FP16: ort.TensorElementDataTypeFloat16,
	FP64: ort.TensorElementDataTypeDouble, INT8: ort.TensorElementDataTypeInt8,
	UINT8: ort.TensorElementDataTypeUint8, INT16: ort.TensorElementDataTypeInt16,
	UINT16: ort.TensorElementDataTypeUint16, INT32: ort.TensorElementDataTypeInt32,
	UINT32: ort.TensorElementDataTypeUint32, INT64: ort.TensorElementDataTypeInt64,
	UINT64: ort.TensorElementDataTypeUint64, BOOL: ort.TensorElementDataTypeBool,
}

// dtypeFromORT names an ORT element type. Types without an edgefleet name come back as
// "ONNX:<ORT's name>" so that a schema can still say what the model wants.
func dtypeFromORT(t ort.TensorElementDataType) DType {
	for d, o := range dtypeToORT {
		if o == t {
			return d
		}
	}
	switch t {
	case ort.TensorElementDataTypeString:
		return BYTES
	case ort.TensorElementDataTypeBFloat16:
		return BF16
	}
	return DType("ONNX:" + strings.TrimPrefix(t.String(), "ONNX_TENSOR_ELEMENT_DATA_TYPE_"))
}

// Supported reports whether a Session can feed and return tensors of this type.
func (d DType) Supported() bool {
	_, ok := dtypeToORT[d]
	return ok
}

// goType names the slice type Tensor.Data must hold, for error messages.
func (d DType) goType() string {
	switch d {
	case FP32:
		return "[]float32"
	case FP16, UINT16:
		return "[]uint16"
	case FP64:
		return "[]float64"
	case INT8:
		return "[]int8"
	case UINT8:
		return "[]uint8"
	case INT16:
		return "[]int16"
	case INT32:
		return "[]int32"
	case UINT32:
		return "[]uint32"
	case INT64:
		return "[]int64"
	case UINT64:
		return "[]uint64"
	case BOOL:
		return "[]bool"
	}
	return "(unsupported)"
}

// Tensor is a named, typed, dense tensor in row-major order. Data holds the Go slice that
// DType names (see the DType constants). A rank-0 (scalar) tensor has an empty, non-nil or nil
// Shape and one element.
type Tensor struct {
	Name  string  `json:"name"`
	DType DType   `json:"datatype"`
	Shape []int64 `json:"shape"`
	Data  any     `json:"data"`
}

// Len returns the number of elements in Data, or -1 if Data is not a slice type a Tensor can hold.
func (t Tensor) Len() int {
	switch d := t.Data.(type) {
	case []float32:
		return len(d)
	case []float64:
		return len(d)
	case []int8:
		return len(d)
	case []uint8:
		return len(d)
	case []int16:
		return len(d)
	case []uint16:
		return len(d)
	case []int32:
		return len(d)
	case []uint32:
		return len(d)
	case []int64:
		return len(d)
	case []uint64:
		return len(d)
	case []bool:
		return len(d)
	}
	return -1
}

// dataMatches reports whether Data holds the slice type DType needs.
func (t Tensor) dataMatches() bool {
	switch t.Data.(type) {
	case []float32:
		return t.DType == FP32
	case []float64:
		return t.DType == FP64
	case []int8:
		return t.DType == INT8
	case []uint8:
		return t.DType == UINT8
	case []int16:
		return t.DType == INT16
	case []uint16:
		return t.DType == UINT16 || t.DType == FP16
	case []int32:
		return t.DType == INT32
	case []uint32:
		return t.DType == UINT32
	case []int64:
		return t.DType == INT64
	case []uint64:
		return t.DType == UINT64
	case []bool:
		return t.DType == BOOL
	}
	return false
}

// NumElements returns the number of elements a shape holds (1 for a scalar). Dimensions must be
// positive: ONNX allows zero-size dimensions but onnxruntime_go cannot create such tensors.
func NumElements(shape []int64) (int64, error) {
	n := int64(1)
	for i, d := range shape {
		if d <= 0 {
			return 0, fmt.Errorf("dimension %d is %d; dimensions must be positive", i, d)
		}
		if n > math.MaxInt32/d {
			// 2^31 elements is far beyond anything an edge model takes as one input.
			return 0, fmt.Errorf("shape %s has more than %d elements", FormatShape(shape), math.MaxInt32)
		}
		n *= d
	}
	return n, nil
}

// Validate checks that the tensor is well formed on its own: a runnable DType, Data of the
// matching slice type, positive dimensions, and exactly as many elements as the shape needs.
func (t Tensor) Validate() error {
	if reason := t.check(); reason != "" {
		return fmt.Errorf("tensor %q: %s", t.Name, reason)
	}
	return nil
}

// check returns why the tensor is malformed, or "".
func (t Tensor) check() string {
	if !t.DType.Supported() {
		return fmt.Sprintf("datatype %q is not supported", t.DType)
	}
	if !t.dataMatches() {
		return fmt.Sprintf("data is %T, datatype %s needs %s", t.Data, t.DType, t.DType.goType())
	}
	n, err := NumElements(t.Shape)
	if err != nil {
		return fmt.Sprintf("shape %s: %v", FormatShape(t.Shape), err)
	}
	if got := t.Len(); int64(got) != n {
		return fmt.Sprintf("data has %d elements, shape %s needs %d", got, FormatShape(t.Shape), n)
	}
	return ""
}

// FormatShape writes a shape as [1,3,-1,-1]; dynamic dimensions print as -1.
func FormatShape(shape []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range shape {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, d)
	}
	b.WriteByte(']')
	return b.String()
}

// Float16Bits converts a float32 to IEEE 754 half-precision bits, rounding to nearest even, as
// FP16 tensors need.
func Float16Bits(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	switch {
	case exp == 0xff: // Inf or NaN; keep NaN a NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp-127+15 >= 0x1f: // overflow
		return sign | 0x7c00
	case exp-127+15 <= 0: // subnormal half or zero
		e := exp - 127 + 15
		if e < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - e)
		half := uint16(mant >> shift)
		rem := mant & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | half
	}
	e := uint16(exp - 127 + 15)
	half := sign | e<<10 | uint16(mant>>13)
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++ // may carry into the exponent, which is the correct rounding
	}
	return half
}

// Float16Value converts IEEE 754 half-precision bits to a float32.
func Float16Value(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		f := float32(mant) / (1 << 24) // subnormal: mant * 2^-24
		if sign != 0 {
			return -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}
