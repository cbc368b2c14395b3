package onnxrt

import (
	"fmt"
	"slices"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// toValue wraps t's data in an ORT value without copying it (a scalar is copied). The caller
// must keep t.Data alive and unmodified until the value is destroyed, and destroy it. t must
// have passed validation.
func toValue(t Tensor) (ort.Value, error) {
	switch d := t.Data.(type) {
	case []float32:
		return newValue(t.Shape, d)
	case []float64:
		return newValue(t.Shape, d)
	case []int8:
		return newValue(t.Shape, d)
	case []uint8:
		return newValue(t.Shape, d)
	case []int16:
		return newValue(t.Shape, d)
	case []uint16:
		if t.DType == FP16 {
			// The binding has no Go type for half floats; hand ORT the same bytes, typed FLOAT16.
			// Native byte order is what ORT expects.
			b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(d))), len(d)*2)
			shape := ort.Shape(t.Shape)
			if len(shape) == 0 {
				return nil, fmt.Errorf("scalar FP16 tensors are not supported by onnxruntime_go")
			}
			return ort.NewCustomDataTensor(shape, b, ort.TensorElementDataTypeFloat16)
		}
		return newValue(t.Shape, d)
	case []int32:
		return newValue(t.Shape, d)
	case []uint32:
		return newValue(t.Shape, d)
	case []int64:
		return newValue(t.Shape, d)
	case []uint64:
		return newValue(t.Shape, d)
	case []bool:
		return newValue(t.Shape, d)
	}
	return nil, fmt.Errorf("unsupported data type %T", t.Data)
}

func newValue[T ort.TensorData](shape []int64, d []T) (ort.Value, error) {
	if len(shape) == 0 {
		// ort.NewTensor rejects rank 0; silero's sample rate is such a scalar.
		return ort.NewScalar(d[0])
	}
	return ort.NewTensor(ort.Shape(shape), d)
}

// emptyScalar pre-allocates a rank-0 output: the binding cannot turn an ORT-allocated scalar
// into a Go value (it rejects a shape with no dimensions), but it can fill one we provide.
func emptyScalar(d DType) (ort.Value, error) {
	switch d {
	case FP32:
		return ort.NewEmptyScalar[float32]()
	case FP64:
		return ort.NewEmptyScalar[float64]()
	case INT8:
		return ort.NewEmptyScalar[int8]()
	case UINT8:
		return ort.NewEmptyScalar[uint8]()
	case INT16:
		return ort.NewEmptyScalar[int16]()
	case UINT16:
		return ort.NewEmptyScalar[uint16]()
	case INT32:
		return ort.NewEmptyScalar[int32]()
	case UINT32:
		return ort.NewEmptyScalar[uint32]()
	case INT64:
		return ort.NewEmptyScalar[int64]()
	case UINT64:
		return ort.NewEmptyScalar[uint64]()
	case BOOL:
		return ort.NewEmptyScalar[bool]()
	}
	return nil, fmt.Errorf("scalar outputs of datatype %s are not supported", d)
}

// fromValue copies an ORT output into a Tensor. The binding already copied ORT's buffer into Go
// memory, so the returned slice stays valid after v is destroyed.
func fromValue(name string, v ort.Value) (Tensor, error) {
	t := Tensor{Name: name, Shape: []int64(v.GetShape())}
	if t.Shape == nil {
		t.Shape = []int64{}
	}
	switch x := v.(type) {
	case *ort.Tensor[float32]:
		t.DType, t.Data = FP32, x.GetData()
	case *ort.Tensor[float64]:
		t.DType, t.Data = FP64, x.GetData()
	case *ort.Tensor[int8]:
		t.DType, t.Data = INT8, x.GetData()
	case *ort.Tensor[uint8]:
		t.DType, t.Data = UINT8, x.GetData()
	case *ort.Tensor[int16]:
		t.DType, t.Data = INT16, x.GetData()
	case *ort.Tensor[uint16]:
		t.DType, t.Data = UINT16, x.GetData()
	case *ort.Tensor[int32]:
		t.DType, t.Data = INT32, x.GetData()
	case *ort.Tensor[uint32]:
		t.DType, t.Data = UINT32, x.GetData()
	case *ort.Tensor[int64]:
		t.DType, t.Data = INT64, x.GetData()
	case *ort.Tensor[uint64]:
		t.DType, t.Data = UINT64, x.GetData()
	case *ort.Tensor[bool]:
		t.DType, t.Data = BOOL, x.GetData()
	case *ort.Scalar[float32]:
		t.DType, t.Data = FP32, []float32{x.GetData()}
	case *ort.Scalar[float64]:
		t.DType, t.Data = FP64, []float64{x.GetData()}
	case *ort.Scalar[int8]:
		t.DType, t.Data = INT8, []int8{x.GetData()}
	case *ort.Scalar[uint8]:
		t.DType, t.Data = UINT8, []uint8{x.GetData()}
	case *ort.Scalar[int16]:
		t.DType, t.Data = INT16, []int16{x.GetData()}
	case *ort.Scalar[uint16]:
		t.DType, t.Data = UINT16, []uint16{x.GetData()}
	case *ort.Scalar[int32]:
		t.DType, t.Data = INT32, []int32{x.GetData()}
	case *ort.Scalar[uint32]:
		t.DType, t.Data = UINT32, []uint32{x.GetData()}
	case *ort.Scalar[int64]:
		t.DType, t.Data = INT64, []int64{x.GetData()}
	case *ort.Scalar[uint64]:
		t.DType, t.Data = UINT64, []uint64{x.GetData()}
	case *ort.Scalar[bool]:
		t.DType, t.Data = BOOL, []bool{x.GetData()}
	case *ort.CustomDataTensor:
		if ort.TensorElementDataType(x.DataType()) != ort.TensorElementDataTypeFloat16 {
			return Tensor{}, fmt.Errorf("output %q: datatype %s is not supported", name, dtypeFromORT(ort.TensorElementDataType(x.DataType())))
		}
		b := x.GetData()
		h := make([]uint16, len(b)/2)
		copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(h))), len(h)*2), b)
		t.DType, t.Data = FP16, h
	default:
		return Tensor{}, fmt.Errorf("output %q: value of type %T is not supported", name, v)
	}
	return t, nil
}

// size is the element size in bytes (0 for types a Session cannot run).
func (d DType) size() int {
	switch d {
	case FP64, INT64, UINT64:
		return 8
	case FP32, INT32, UINT32:
		return 4
	case FP16, INT16, UINT16:
		return 2
	case INT8, UINT8, BOOL:
		return 1
	}
	return 0
}

// emptyValue allocates an output of dtype d and the given shape for ORT to fill.
func emptyValue(d DType, shape ort.Shape) (ort.Value, error) {
	if len(shape) == 0 {
		return emptyScalar(d)
	}
	switch d {
	case FP32:
		return ort.NewEmptyTensor[float32](shape)
	case FP64:
		return ort.NewEmptyTensor[float64](shape)
	case FP16:
		return ort.NewCustomDataTensor(shape, make([]byte, 2*shape.FlattenedSize()), ort.TensorElementDataTypeFloat16)
	case INT8:
		return ort.NewEmptyTensor[int8](shape)
	case UINT8:
		return ort.NewEmptyTensor[uint8](shape)
	case INT16:
		return ort.NewEmptyTensor[int16](shape)
	case UINT16:
		return ort.NewEmptyTensor[uint16](shape)
	case INT32:
		return ort.NewEmptyTensor[int32](shape)
	case UINT32:
		return ort.NewEmptyTensor[uint32](shape)
	case INT64:
		return ort.NewEmptyTensor[int64](shape)
	case UINT64:
		return ort.NewEmptyTensor[uint64](shape)
	case BOOL:
		return ort.NewEmptyTensor[bool](shape)
	}
	return nil, fmt.Errorf("outputs of datatype %s are not supported", d)
}

// isGoTensor reports whether fromValue hands out v's own Go slice (rather than a copy), so that
// a reused value's data must be cloned before it leaves Run.
func isGoTensor(v ort.Value) bool {
	switch v.(type) {
	case *ort.Tensor[float32], *ort.Tensor[float64], *ort.Tensor[int8], *ort.Tensor[uint8], *ort.Tensor[int16],
		*ort.Tensor[uint16], *ort.Tensor[int32], *ort.Tensor[uint32], *ort.Tensor[int64], *ort.Tensor[uint64], *ort.Tensor[bool]:
		return true
	}
	return false
}

// cloneData returns a copy of a Tensor's Data slice.
func cloneData(d any) any {
	switch x := d.(type) {
	case []float32:
		return slices.Clone(x)
	case []float64:
		return slices.Clone(x)
	case []int8:
		return slices.Clone(x)
	case []uint8:
		return slices.Clone(x)
	case []int16:
		return slices.Clone(x)
	case []uint16:
		return slices.Clone(x)
	case []int32:
		return slices.Clone(x)
	case []uint32:
		return slices.Clone(x)
	case []int64:
		return slices.Clone(x)
	case []uint64:
		return slices.Clone(x)
	case []bool:
		return slices.Clone(x)
	}
	return d
}

// copyData copies src into dst, slices of the same type and length (validated inputs into the
// buffers newState made for their shapes).
func copyData(dst, src any) {
	switch x := src.(type) {
	case []float32:
		copy(dst.([]float32), x)
	case []float64:
		copy(dst.([]float64), x)
	case []int8:
		copy(dst.([]int8), x)
	case []uint8:
		copy(dst.([]uint8), x)
	case []int16:
		copy(dst.([]int16), x)
	case []uint16:
		copy(dst.([]uint16), x)
	case []int32:
		copy(dst.([]int32), x)
	case []uint32:
		copy(dst.([]uint32), x)
	case []int64:
		copy(dst.([]int64), x)
	case []uint64:
		copy(dst.([]uint64), x)
	case []bool:
		copy(dst.([]bool), x)
	}
}
