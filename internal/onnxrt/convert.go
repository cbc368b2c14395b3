package onnxrt

import (
	"fmt"
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
