package drift

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/edgefleet/edgefleet/telemetry/hist"
)

// ErrMismatch is returned when summaries (or a summary and a reference) are not on the same
// features and edges, and for values of a feature the window does not have.
var ErrMismatch = errors.New("drift: summaries are not on the same reference")

// Window accumulates one window of feature values on a device against the bundle's reference:
// per feature a histogram on the reference's edges, count, mean and variance, min and max, and
// the number of missing (NaN, infinite, or for class_mix out-of-range) values. It is safe for
// concurrent use; the lock is held for one value or one sample, never across I/O.
type Window struct {
	ref   *Reference
	index map[string]int

	mu    sync.Mutex
	feats []featureAcc
}

type featureAcc struct {
	edges    []float64
	counts   []uint64
	m        moments
	min, max float64
	missing  uint64
	classes  int // > 0 for class_mix
}

// NewWindow returns an empty window on ref, which must be valid and must not change while the
// window lives (the window bins on its edges without copying them).
func NewWindow(ref *Reference) (*Window, error) {
	if err := ref.Validate(); err != nil {
		return nil, fmt.Errorf("new drift window: %w", err)
	}
	w := &Window{ref: ref, index: make(map[string]int, len(ref.Features))}
	for i, f := range ref.Features {
		w.index[f.Name] = i
	}
	w.feats = w.empty()
	return w, nil
}

func (w *Window) empty() []featureAcc {
	fs := make([]featureAcc, len(w.ref.Features))
	for i, f := range w.ref.Features {
		fs[i] = featureAcc{edges: f.Edges, counts: make([]uint64, len(f.Edges)+1), classes: f.Classes}
	}
	return fs
}

// Reference returns the reference the window bins against.
func (w *Window) Reference() *Reference { return w.ref }

// Add records one value of the feature named name.
func (w *Window) Add(name string, v float64) error {
	i, ok := w.index[name]
	if !ok {
		return fmt.Errorf("drift window: feature %q: %w", name, ErrMismatch)
	}
	w.mu.Lock()
	w.feats[i].add(v)
	w.mu.Unlock()
	return nil
}

// AddSample records one value per feature, in the reference's feature order, under one lock:
// the usual call after an inference. Use NaN for a feature that could not be computed.
func (w *Window) AddSample(values []float64) error {
	if len(values) != len(w.feats) {
		return fmt.Errorf("drift window: %d values for %d features: %w", len(values), len(w.feats), ErrMismatch)
	}
	w.mu.Lock()
	for i, v := range values {
		w.feats[i].add(v)
	}
	w.mu.Unlock()
	return nil
}

func (a *featureAcc) add(v float64) {
	if !finite(v) || (a.classes > 0 && (v != math.Trunc(v) || v < 0 || v >= float64(a.classes))) {
		a.missing++
		return
	}
	a.counts[hist.Bin(a.edges, v)]++
	if a.m.n == 0 {
		a.min, a.max = v, v
	} else {
		a.min, a.max = min(a.min, v), max(a.max, v)
	}
	a.m.add(v)
}

// Summary returns the window's summary so far; the window keeps accumulating.
func (w *Window) Summary() Summary {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.summaryLocked()
}

// Flush returns the window's summary and starts a new, empty window in the same step, so no
// value falls between two windows.
func (w *Window) Flush() Summary {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.summaryLocked()
	w.feats = w.empty()
	return s
}

func (w *Window) summaryLocked() Summary {
	s := Summary{SchemaVersion: SchemaVersion, Reference: w.ref.Fingerprint(), Features: make([]FeatureSummary, len(w.feats))}
	for i, a := range w.feats {
		s.Features[i] = FeatureSummary{
			Name:     w.ref.Features[i].Name,
			Counts:   slices.Clone(a.counts),
			Count:    a.m.n,
			Missing:  a.missing,
			Mean:     a.m.mean,
			Variance: a.m.variance(),
			Min:      a.min,
			Max:      a.max,
		}
	}
	return s
}

// Summary is what a device sends per window and model version, what the spool folds old windows
// into, and what the control plane adds up over a fleet. It carries no time: the message that
// wraps it says which window it covers.
type Summary struct {
	SchemaVersion int `json:"schema_version"`
	// Reference is the reference's Fingerprint: only summaries with equal fingerprints merge.
	Reference string           `json:"reference"`
	Features  []FeatureSummary `json:"features"`
}

// FeatureSummary is one feature of a Summary. Counts are per bin of the reference's edges;
// Count is their sum (finite values); Min and Max are meaningful only when Count > 0.
type FeatureSummary struct {
	Name     string   `json:"name"`
	Counts   []uint64 `json:"counts"`
	Count    uint64   `json:"count"`
	Missing  uint64   `json:"missing,omitempty"`
	Mean     float64  `json:"mean"`
	Variance float64  `json:"variance"` // population variance
	Min      float64  `json:"min"`
	Max      float64  `json:"max"`
}

// Summary returns the reference's own distribution as a summary, so that a reference and a
// window (or two windows: canary and baseline) are compared by the same code.
func (r *Reference) Summary() Summary {
	s := Summary{SchemaVersion: SchemaVersion, Reference: r.Fingerprint(), Features: make([]FeatureSummary, len(r.Features))}
	for i, f := range r.Features {
		fs := FeatureSummary{Name: f.Name, Counts: slices.Clone(f.RefCounts), Count: f.Count, Missing: f.Missing, Mean: f.Mean, Variance: f.Variance}
		if n := len(f.Quantiles); n > 0 {
			// The reference keeps quantiles, not extremes; its 1% and 99% stand in.
			fs.Min, fs.Max = f.Quantiles[0].Value, f.Quantiles[n-1].Value
		}
		s.Features[i] = fs
	}
	return s
}

// Check reports whether s is well formed: counts add up, statistics are finite.
func (s Summary) Check() error {
	if s.SchemaVersion != SchemaVersion {
		return fmt.Errorf("summary schema_version %d, want %d: %w", s.SchemaVersion, SchemaVersion, ErrSchemaVersion)
	}
	for _, f := range s.Features {
		var n uint64
		for _, c := range f.Counts {
			n += c
		}
		if n != f.Count || len(f.Counts) == 0 {
			return fmt.Errorf("summary feature %q: counts sum to %d, count is %d: %w", f.Name, n, f.Count, ErrMismatch)
		}
		if !finite(f.Mean) || !finite(f.Variance) || f.Variance < 0 || !finite(f.Min) || !finite(f.Max) {
			return fmt.Errorf("summary feature %q: non-finite statistics: %w", f.Name, ErrMismatch)
		}
	}
	return nil
}

// Merge returns the summary of all the inputs' values together. Bin counts, counts and missing
// counts add exactly; mean and variance combine by Chan's pairwise update, exact up to rounding.
// Merging is therefore associative and commutative. All inputs must share a reference
// fingerprint and feature layout; merging nothing is an error.
func Merge(summaries ...Summary) (Summary, error) {
	if len(summaries) == 0 {
		return Summary{}, fmt.Errorf("merge no summaries: %w", ErrMismatch)
	}
	first := summaries[0]
	out := Summary{SchemaVersion: SchemaVersion, Reference: first.Reference, Features: make([]FeatureSummary, len(first.Features))}
	for i, f := range first.Features {
		out.Features[i] = FeatureSummary{Name: f.Name, Counts: make([]uint64, len(f.Counts))}
	}
	for k, s := range summaries {
		if err := s.Check(); err != nil {
			return Summary{}, fmt.Errorf("merge summary %d: %w", k, err)
		}
		if s.Reference != first.Reference || len(s.Features) != len(first.Features) {
			return Summary{}, fmt.Errorf("merge summary %d: reference %s vs %s: %w", k, s.Reference, first.Reference, ErrMismatch)
		}
		for i, f := range s.Features {
			o := &out.Features[i]
			if f.Name != o.Name || len(f.Counts) != len(o.Counts) {
				return Summary{}, fmt.Errorf("merge summary %d: feature %d is %q with %d bins, want %q with %d: %w", k, i, f.Name, len(f.Counts), o.Name, len(o.Counts), ErrMismatch)
			}
			for b, c := range f.Counts {
				o.Counts[b] += c
			}
			if f.Count > 0 {
				if o.Count == 0 {
					o.Min, o.Max = f.Min, f.Max
				} else {
					o.Min, o.Max = min(o.Min, f.Min), max(o.Max, f.Max)
				}
			}
			m := moments{n: o.Count, mean: o.Mean, m2: o.Variance * float64(o.Count)}.
				merge(moments{n: f.Count, mean: f.Mean, m2: f.Variance * float64(f.Count)})
			o.Count, o.Mean, o.Variance = m.n, m.mean, m.variance()
			o.Missing += f.Missing
		}
	}
	return out, nil
}
