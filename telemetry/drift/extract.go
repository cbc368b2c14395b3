package drift

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// ErrShape is returned by Extract when a tensor does not fit the feature spec.
var ErrShape = errors.New("drift: tensor shape does not fit the feature")

// Extract computes the feature's value for every sample of a batch, from the tensor the spec
// names (row-major data, shape with the batch on axis 0; a rank-1 output is one sample). It lives
// here, not in the agent, so the bundle builder computing the reference and the agent computing
// windows cannot disagree on what a feature is. class_mix values are argmax classes as floats.
func (s *FeatureSpec) Extract(data []float32, shape []int64) ([]float64, error) {
	if len(shape) == 0 {
		return nil, fmt.Errorf("feature %q: scalar tensor: %w", s.Name, ErrShape)
	}
	dims := slices.Clone(shape)
	if len(dims) == 1 && (s.Source == SourceOutput || s.Source == SourceEmbedding) && s.Kind != KindValue {
		dims = append([]int64{1}, dims...)
	}
	size := int64(1)
	for _, d := range dims {
		if d < 0 {
			return nil, fmt.Errorf("feature %q: dynamic dimension in shape %v: %w", s.Name, shape, ErrShape)
		}
		size *= d
	}
	if size != int64(len(data)) {
		return nil, fmt.Errorf("feature %q: shape %v holds %d values, got %d: %w", s.Name, shape, size, len(data), ErrShape)
	}
	batch := int(dims[0])
	per := 0
	if batch > 0 {
		per = len(data) / batch
	}
	out := make([]float64, batch)
	switch {
	case s.Source == SourceInput || s.Kind == KindValue:
		if s.Index >= per {
			return nil, fmt.Errorf("feature %q: index %d outside %d values per sample: %w", s.Name, s.Index, per, ErrShape)
		}
		for b := range batch {
			out[b] = float64(data[b*per+s.Index])
		}
	case s.Source == SourceReduction:
		sel, err := s.reductionElements(dims)
		if err != nil {
			return nil, err
		}
		for b := range batch {
			out[b] = reduce(s.Reduction, data[b*per:(b+1)*per], sel)
		}
	default: // class_mix, confidence, embedding_norm over the per-sample vector
		if per == 0 {
			return nil, fmt.Errorf("feature %q: empty output per sample: %w", s.Name, ErrShape)
		}
		for b := range batch {
			out[b] = vectorFeature(s.Kind, data[b*per:(b+1)*per])
		}
	}
	return out, nil
}

// reductionElements lists the flat per-sample offsets that reduce into element Index of the
// reduced tensor: those whose coordinates on the kept (non-reduced) axes flatten to Index.
func (s *FeatureSpec) reductionElements(dims []int64) ([]int, error) {
	rank := len(dims)
	reduced := make([]bool, rank)
	for _, a := range s.Axes {
		if a < 1 || a >= rank {
			return nil, fmt.Errorf("feature %q: axis %d outside rank %d: %w", s.Name, a, rank, ErrShape)
		}
		reduced[a] = true
	}
	kept := 1
	for a := 1; a < rank; a++ {
		if !reduced[a] {
			kept *= int(dims[a])
		}
	}
	if s.Index >= kept {
		return nil, fmt.Errorf("feature %q: index %d outside %d reduced values: %w", s.Name, s.Index, kept, ErrShape)
	}
	per := 1
	for a := 1; a < rank; a++ {
		per *= int(dims[a])
	}
	var sel []int
	coord := make([]int, rank)
	for off := range per {
		// Row-major coordinates of off within one sample, then the kept axes' flat index.
		rem := off
		for a := rank - 1; a >= 1; a-- {
			coord[a] = rem % int(dims[a])
			rem /= int(dims[a])
		}
		k := 0
		for a := 1; a < rank; a++ {
			if !reduced[a] {
				k = k*int(dims[a]) + coord[a]
			}
		}
		if k == s.Index {
			sel = append(sel, off)
		}
	}
	if len(sel) == 0 {
		return nil, fmt.Errorf("feature %q: reduction over an empty axis: %w", s.Name, ErrShape)
	}
	return sel, nil
}

func reduce(r Reduction, x []float32, sel []int) float64 {
	switch r {
	case ReduceMin, ReduceMax:
		v := float64(x[sel[0]])
		for _, i := range sel[1:] {
			if r == ReduceMin {
				v = min(v, float64(x[i]))
			} else {
				v = max(v, float64(x[i]))
			}
		}
		return v
	}
	var m moments
	for _, i := range sel {
		m.add(float64(x[i]))
	}
	if r == ReduceStd {
		return math.Sqrt(m.variance())
	}
	return m.mean
}

func vectorFeature(k Kind, v []float32) float64 {
	switch k {
	case KindClassMix, KindConfidence:
		best := 0
		for i := range v {
			if v[i] > v[best] {
				best = i
			}
		}
		if k == KindClassMix {
			return float64(best)
		}
		return float64(v[best])
	default: // embedding_norm
		var s float64
		for _, x := range v {
			s += float64(x) * float64(x)
		}
		return math.Sqrt(s)
	}
}
