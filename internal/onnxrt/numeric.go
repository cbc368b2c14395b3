package onnxrt

import (
	"fmt"
	"math"
)

// Float64s returns the tensor's elements as float64 (bool as 0/1, FP16 decoded), for comparisons,
// statistics and JSON. INT64/UINT64 beyond 2^53 lose precision here; use the typed Data for those.
func (t Tensor) Float64s() ([]float64, error) {
	switch d := t.Data.(type) {
	case []float32:
		return conv(d, func(v float32) float64 { return float64(v) }), nil
	case []float64:
		return append([]float64(nil), d...), nil
	case []uint16:
		if t.DType == FP16 {
			return conv(d, func(v uint16) float64 { return float64(Float16Value(v)) }), nil
		}
		return conv(d, func(v uint16) float64 { return float64(v) }), nil
	case []int8:
		return conv(d, func(v int8) float64 { return float64(v) }), nil
	case []uint8:
		return conv(d, func(v uint8) float64 { return float64(v) }), nil
	case []int16:
		return conv(d, func(v int16) float64 { return float64(v) }), nil
	case []int32:
		return conv(d, func(v int32) float64 { return float64(v) }), nil
	case []uint32:
		return conv(d, func(v uint32) float64 { return float64(v) }), nil
	case []int64:
		return conv(d, func(v int64) float64 { return float64(v) }), nil
	case []uint64:
		return conv(d, func(v uint64) float64 { return float64(v) }), nil
	case []bool:
		return conv(d, func(v bool) float64 {
			if v {
				return 1
			}
			return 0
		}), nil
	}
	return nil, fmt.Errorf("tensor %q: no numeric view of %T", t.Name, t.Data)
}

func conv[T any](in []T, f func(T) float64) []float64 {
	out := make([]float64, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}

// FromFloat64s builds a tensor of dtype from float64 values, refusing values the type cannot hold
// (fractions for integers, out-of-range numbers), so a request never silently changes meaning.
func FromFloat64s(name string, dtype DType, shape []int64, vals []float64) (Tensor, error) {
	t := Tensor{Name: name, DType: dtype, Shape: append([]int64(nil), shape...)}
	bad := func(i int, why string) error {
		return &InputError{Input: name, Reason: fmt.Sprintf("element %d (%v) %s for %s", i, vals[i], why, dtype)}
	}
	ints := func(lo, hi float64) error {
		for i, v := range vals {
			if v != math.Trunc(v) || math.IsNaN(v) {
				return bad(i, "is not an integer")
			}
			if v < lo || v > hi {
				return bad(i, "is out of range")
			}
		}
		return nil
	}
	var err error
	switch dtype {
	case FP32:
		d := make([]float32, len(vals))
		for i, v := range vals {
			d[i] = float32(v)
		}
		t.Data = d
	case FP64:
		t.Data = append([]float64(nil), vals...)
	case FP16:
		d := make([]uint16, len(vals))
		for i, v := range vals {
			d[i] = Float16Bits(float32(v))
		}
		t.Data = d
	case INT8:
		err = ints(math.MinInt8, math.MaxInt8)
		t.Data = castTo[int8](vals)
	case UINT8:
		err = ints(0, math.MaxUint8)
		t.Data = castTo[uint8](vals)
	case INT16:
		err = ints(math.MinInt16, math.MaxInt16)
		t.Data = castTo[int16](vals)
	case UINT16:
		err = ints(0, math.MaxUint16)
		t.Data = castTo[uint16](vals)
	case INT32:
		err = ints(math.MinInt32, math.MaxInt32)
		t.Data = castTo[int32](vals)
	case UINT32:
		err = ints(0, math.MaxUint32)
		t.Data = castTo[uint32](vals)
	case INT64:
		err = ints(-(1 << 63), 1<<63-1)
		t.Data = castTo[int64](vals)
	case UINT64:
		err = ints(0, 1<<64-1)
		t.Data = castTo[uint64](vals)
	case BOOL:
		d := make([]bool, len(vals))
		for i, v := range vals {
			if v != 0 && v != 1 {
				return Tensor{}, bad(i, "is not 0/1 or true/false")
			}
			d[i] = v == 1
		}
		t.Data = d
	default:
		return Tensor{}, &InputError{Input: name, Reason: fmt.Sprintf("datatype %s is not supported", dtype)}
	}
	if err != nil {
		return Tensor{}, err
	}
	return t, nil
}

func castTo[T int8 | uint8 | int16 | uint16 | int32 | uint32 | int64 | uint64](vals []float64) []T {
	out := make([]T, len(vals))
	for i, v := range vals {
		out[i] = T(v)
	}
	return out
}
