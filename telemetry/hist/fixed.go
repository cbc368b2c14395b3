package hist

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// ErrEdges is returned for edges that are not finite and strictly ascending, and for merging
// histograms on different edges.
var ErrEdges = errors.New("hist: invalid or mismatched bin edges")

// Fixed counts values on caller-given cut points. Edges e_1 < ... < e_m make m+1 bins:
// (-Inf, e_1), [e_1, e_2), ..., [e_m, +Inf), so every finite value lands in a bin and no edge
// needs to be infinite (JSON cannot carry infinities). It is not safe for concurrent use; the
// caller (a drift window) holds one lock over all its features.
type Fixed struct {
	Edges  []float64
	Counts []uint64
}

// CheckEdges reports whether edges are finite and strictly ascending.
func CheckEdges(edges []float64) error {
	for i, e := range edges {
		if math.IsNaN(e) || math.IsInf(e, 0) {
			return fmt.Errorf("edge %d is %v: %w", i, e, ErrEdges)
		}
		if i > 0 && e <= edges[i-1] {
			return fmt.Errorf("edge %d (%v) not above edge %d (%v): %w", i, e, i-1, edges[i-1], ErrEdges)
		}
	}
	return nil
}

// NewFixed returns an empty histogram on edges, which it keeps (not copies): edges come from a
// reference that outlives the window.
func NewFixed(edges []float64) (*Fixed, error) {
	if err := CheckEdges(edges); err != nil {
		return nil, err
	}
	return &Fixed{Edges: edges, Counts: make([]uint64, len(edges)+1)}, nil
}

// Bin returns the bin of v on edges: the number of edges at or below v. NaN has no bin; callers
// count it as missing before asking.
func Bin(edges []float64, v float64) int {
	// Reference features have 10 to 20 edges; a linear scan beats binary search up to about 16
	// and is branch-predictable, but sort.Search keeps the worst case flat for class_mix
	// features with many classes.
	if len(edges) <= 16 {
		for i, e := range edges {
			if v < e {
				return i
			}
		}
		return len(edges)
	}
	return sort.Search(len(edges), func(i int) bool { return v < edges[i] })
}

// Add counts one value.
func (f *Fixed) Add(v float64) { f.Counts[Bin(f.Edges, v)]++ }

// Total is the number of values counted.
func (f *Fixed) Total() uint64 {
	var n uint64
	for _, c := range f.Counts {
		n += c
	}
	return n
}

// Merge adds o's counts into f. Both must be on equal edges.
func (f *Fixed) Merge(o *Fixed) error {
	if !SameEdges(f.Edges, o.Edges) || len(f.Counts) != len(o.Counts) {
		return fmt.Errorf("merge fixed histograms: %w", ErrEdges)
	}
	for i, c := range o.Counts {
		f.Counts[i] += c
	}
	return nil
}

// SameEdges reports whether two edge lists are identical.
func SameEdges(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// CDF returns the empirical CDF at the upper end of each bin but the last (which is always 1):
// CDF()[i] is the fraction of values below Edges[i]. It is nil for an empty histogram.
func CDF(counts []uint64) []float64 {
	var n uint64
	for _, c := range counts {
		n += c
	}
	if n == 0 || len(counts) == 0 {
		return nil
	}
	out := make([]float64, len(counts)-1)
	var cum uint64
	for i := range out {
		cum += counts[i]
		out[i] = float64(cum) / float64(n)
	}
	return out
}
