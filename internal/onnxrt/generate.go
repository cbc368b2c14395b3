package onnxrt

import (
	"fmt"
	"slices"
)

// SampleRateInputName is the input name GenerateInputs fills with 16000: audio models such as
// silero VAD take their sample rate as an int64 input and reject other values.
const SampleRateInputName = "sr"

// GenerateInputs returns n deterministic input sets for s, for golden tests and smoke tests: the
// same schema, n and seed give the same tensors on every machine and Go version (the generator
// is a fixed SplitMix64, not math/rand).
//
// Shapes: shapes[name], when given, is used for that input and must fit its schema (models
// often need a realistic size, e.g. silero's 512 samples); otherwise every dynamic dimension is 1
// and an input of unknown rank is a scalar.
//
// Values: floats are uniform in [-1, 1); integers are uniform in [0, 10), small and
// non-negative so that they are valid as indices, lengths or class ids; an integer input named
// "sr" is 16000 (a sample rate); booleans are fair coin flips.
func GenerateInputs(s Schema, n int, seed uint64, shapes map[string][]int64) ([][]Tensor, error) {
	if err := s.Runnable(); err != nil {
		return nil, err
	}
	for name := range shapes {
		if _, ok := s.Input(name); !ok {
			return nil, &InputError{Input: name, Reason: "shape given for an input the model does not have"}
		}
	}
	rng := splitMix64(seed)
	sets := make([][]Tensor, n)
	for k := range sets {
		set := make([]Tensor, len(s.Inputs))
		for i, ti := range s.Inputs {
			shape, ok := shapes[ti.Name]
			if ok {
				shape = slices.Clone(shape)
			} else {
				shape = make([]int64, len(ti.Shape))
				for j, d := range ti.Shape {
					shape[j] = max(d, 1)
				}
			}
			t := Tensor{Name: ti.Name, DType: ti.DType, Shape: shape}
			count, err := NumElements(shape)
			if err != nil {
				return nil, &InputError{Input: ti.Name, Reason: err.Error()}
			}
			t.Data = randomData(ti.DType, int(count), ti.Name == SampleRateInputName, &rng)
			if reason := checkAgainst(ti, t); reason != "" {
				return nil, &InputError{Input: ti.Name, Reason: reason}
			}
			set[i] = t
		}
		sets[k] = set
	}
	return sets, nil
}

func randomData(d DType, n int, sampleRate bool, rng *splitMix64) any {
	unit := func() float64 { return float64(rng.next()>>11)/(1<<53)*2 - 1 } // [-1, 1)
	small := func() uint64 {
		if sampleRate {
			return 16000
		}
		return rng.next() % 10
	}
	switch d {
	case FP32:
		return fill(n, func() float32 { return float32(unit()) })
	case FP64:
		return fill(n, unit)
	case FP16:
		return fill(n, func() uint16 { return Float16Bits(float32(unit())) })
	case INT8:
		return fill(n, func() int8 { return int8(rng.next() % 10) })
	case UINT8:
		return fill(n, func() uint8 { return uint8(rng.next() % 10) })
	case INT16:
		return fill(n, func() int16 { return int16(small()) })
	case UINT16:
		return fill(n, func() uint16 { return uint16(small()) })
	case INT32:
		return fill(n, func() int32 { return int32(small()) })
	case UINT32:
		return fill(n, func() uint32 { return uint32(small()) })
	case INT64:
		return fill(n, func() int64 { return int64(small()) })
	case UINT64:
		return fill(n, small)
	case BOOL:
		return fill(n, func() bool { return rng.next()&1 == 1 })
	}
	panic(fmt.Sprintf("onnxrt: randomData: unsupported datatype %s passed Runnable", d))
}

func fill[T any](n int, f func() T) []T {
	s := make([]T, n)
	for i := range s {
		s[i] = f()
	}
	return s
}

// splitMix64 is Steele, Lea and Flood's generator: tiny, fast, and fixed forever, which golden
// data needs.
type splitMix64 uint64

func (s *splitMix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133b111f
	return z ^ z>>31
}
