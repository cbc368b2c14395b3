package drift

import (
	"fmt"
	"math"
	"slices"

	"github.com/edgefleet/edgefleet/telemetry/hist"
)

// DefaultBins is the number of bins BuildFeature aims for when asked for 0. Ten equal-mass bins
// keep a 500-sample window at 50 expected values per bin, well inside the chi-square test's
// comfort zone, while still resolving tails at the 10% level.
const DefaultBins = 10

// QuantileLevels are the reference quantiles stored per feature, for people and for dashboards;
// scoring uses the bins.
var QuantileLevels = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99}

// BuildFeature computes a numeric feature from reference values: equal-mass bin edges at the
// values' quantiles (bins of them, DefaultBins when 0), the reference counts on those edges,
// quantiles, mean and variance. Non-finite values are counted as Missing and left out.
//
// Tied quantiles (discrete or heavily rounded features) are merged, so a feature may end with
// fewer bins than asked. A tie that swallows a whole bin is a point mass; its value gets a bin of
// its own, [v, nextafter(v)), so a shift of mass onto or off it is seen. A constant feature thus
// gets three bins: below, at, and above the constant.
func BuildFeature(spec FeatureSpec, values []float64, bins int) (Feature, error) {
	if err := spec.validate(); err != nil {
		return Feature{}, fmt.Errorf("feature %q: %w", spec.Name, err)
	}
	if spec.Kind == KindClassMix {
		return Feature{}, fmt.Errorf("feature %q: use ClassMix for class_mix features: %w", spec.Name, ErrInvalidReference)
	}
	if bins <= 0 {
		bins = DefaultBins
	}
	xs := make([]float64, 0, len(values))
	for _, v := range values {
		if finite(v) {
			xs = append(xs, v)
		}
	}
	if len(xs) < 2 {
		return Feature{}, fmt.Errorf("feature %q: %d finite reference values, need at least 2: %w", spec.Name, len(xs), ErrInvalidReference)
	}
	slices.Sort(xs)

	var edges []float64
	add := func(e float64) {
		if len(edges) == 0 || e > edges[len(edges)-1] {
			edges = append(edges, e)
		}
	}
	for k := 1; k < bins; k++ {
		e := quantileSorted(xs, float64(k)/float64(bins))
		// A point mass covering this cut and the next: give it its own bin.
		if k+1 < bins && quantileSorted(xs, float64(k+1)/float64(bins)) == e {
			add(e)
			add(math.Nextafter(e, math.Inf(1)))
			continue
		}
		add(e)
	}
	if xs[0] == xs[len(xs)-1] { // constant: below, at, above
		edges = []float64{xs[0], math.Nextafter(xs[0], math.Inf(1))}
	}

	return onEdges(spec, xs, len(values)-len(xs), edges)
}

// BuildFeatureOnEdges is BuildFeature on given edges (a parent reference's, or hand-picked
// physical thresholds) instead of the values' quantiles.
func BuildFeatureOnEdges(spec FeatureSpec, values []float64, edges []float64) (Feature, error) {
	if err := spec.validate(); err != nil {
		return Feature{}, fmt.Errorf("feature %q: %w", spec.Name, err)
	}
	xs := make([]float64, 0, len(values))
	for _, v := range values {
		if finite(v) {
			xs = append(xs, v)
		}
	}
	if len(xs) < 2 {
		return Feature{}, fmt.Errorf("feature %q: %d finite reference values, need at least 2: %w", spec.Name, len(xs), ErrInvalidReference)
	}
	slices.Sort(xs)
	return onEdges(spec, xs, len(values)-len(xs), slices.Clone(edges))
}

// onEdges fills a feature from sorted finite values on edges.
func onEdges(spec FeatureSpec, xs []float64, missing int, edges []float64) (Feature, error) {
	f := Feature{FeatureSpec: spec, Edges: edges, Missing: uint64(missing)}
	h, err := hist.NewFixed(edges)
	if err != nil {
		return Feature{}, fmt.Errorf("feature %q: %w", spec.Name, err)
	}
	var m moments
	for _, v := range xs {
		h.Add(v)
		m.add(v)
	}
	f.RefCounts = h.Counts
	f.Count, f.Mean, f.Variance = m.n, m.mean, m.variance()
	for _, q := range QuantileLevels {
		f.Quantiles = append(f.Quantiles, Quantile{Q: q, Value: quantileSorted(xs, q)})
	}
	return f, nil
}

// ClassMix builds a categorical feature from the reference's argmax classes in [0, classes).
// Classes outside that range are counted as Missing: on a device they mean the output no longer
// has the shape the reference was built for.
func ClassMix(spec FeatureSpec, classes int, argmaxes []int) (Feature, error) {
	spec.Kind, spec.Classes = KindClassMix, classes
	if spec.Source == "" {
		spec.Source = SourceOutput
	}
	if err := spec.validate(); err != nil {
		return Feature{}, fmt.Errorf("feature %q: %w", spec.Name, err)
	}
	if classes < 2 {
		return Feature{}, fmt.Errorf("feature %q: %d classes, need at least 2: %w", spec.Name, classes, ErrInvalidReference)
	}
	f := Feature{FeatureSpec: spec, Edges: classEdges(classes), RefCounts: make([]uint64, classes)}
	var m moments
	for _, c := range argmaxes {
		if c < 0 || c >= classes {
			f.Missing++
			continue
		}
		f.RefCounts[c]++
		m.add(float64(c))
	}
	if m.n == 0 {
		return Feature{}, fmt.Errorf("feature %q: no reference classes: %w", spec.Name, ErrInvalidReference)
	}
	f.Count, f.Mean, f.Variance = m.n, m.mean, m.variance()
	return f, nil
}

// quantileSorted is the linear-interpolation quantile (R type 7, numpy's default) of sorted xs.
func quantileSorted(xs []float64, q float64) float64 {
	pos := q * float64(len(xs)-1)
	lo := int(math.Floor(pos))
	if lo >= len(xs)-1 {
		return xs[len(xs)-1]
	}
	frac := pos - float64(lo)
	return xs[lo] + frac*(xs[lo+1]-xs[lo])
}

// ReferenceBuilder collects reference values for a list of feature specs, then builds the
// reference. It keeps every value (reference sets are thousands to a few hundred thousand
// samples, built once per bundle on a workstation), because exact quantiles make the best edges.
type ReferenceBuilder struct {
	specs  []FeatureSpec
	bins   int
	values map[string][]float64
	keep   map[string][]float64 // edges inherited from a parent reference
}

// NewReferenceBuilder checks the specs (at most MaxFeatures, unique names, known sources) and
// returns a builder making bins bins per numeric feature (DefaultBins when 0).
func NewReferenceBuilder(specs []FeatureSpec, bins int) (*ReferenceBuilder, error) {
	if len(specs) == 0 || len(specs) > MaxFeatures {
		return nil, fmt.Errorf("%d feature specs, want 1 to %d: %w", len(specs), MaxFeatures, ErrInvalidReference)
	}
	b := &ReferenceBuilder{specs: slices.Clone(specs), bins: bins, values: make(map[string][]float64, len(specs))}
	for _, s := range specs {
		if err := s.validate(); err != nil {
			return nil, fmt.Errorf("feature spec %q: %w", s.Name, err)
		}
		if _, dup := b.values[s.Name]; dup {
			return nil, fmt.Errorf("feature spec %q appears twice: %w", s.Name, ErrInvalidReference)
		}
		b.values[s.Name] = nil
	}
	return b, nil
}

// Add appends values per feature name (for class_mix, the argmax class as a float). A name the
// builder does not know is an error, so a typo does not silently drop a feature.
func (b *ReferenceBuilder) Add(featureValues map[string][]float64) error {
	for name, vs := range featureValues {
		if _, ok := b.values[name]; !ok {
			return fmt.Errorf("add reference values for unknown feature %q: %w", name, ErrInvalidReference)
		}
		b.values[name] = append(b.values[name], vs...)
	}
	return nil
}

// KeepEdges makes Build reuse parent's edges for every feature with the same name, source,
// tensor, reduction, axes, index and kind, instead of fresh quantiles. Summaries of a canary on
// the new bundle and of its baseline on the parent then share bins for those features and can be
// compared (CompareCohorts); fresh edges would make them incomparable.
func (b *ReferenceBuilder) KeepEdges(parent *Reference) {
	b.keep = make(map[string][]float64)
	for _, s := range b.specs {
		if pf, _, ok := parent.Feature(s.Name); ok && sameSpec(pf.FeatureSpec, s) && s.Kind != KindClassMix {
			b.keep[s.Name] = pf.Edges
		}
	}
}

func sameSpec(a, b FeatureSpec) bool {
	return a.Name == b.Name && a.Source == b.Source && a.Tensor == b.Tensor && a.Reduction == b.Reduction &&
		slices.Equal(a.Axes, b.Axes) && a.Index == b.Index && a.Kind == b.Kind && a.Classes == b.Classes
}

// Build returns the validated reference.
func (b *ReferenceBuilder) Build() (*Reference, error) {
	r := &Reference{SchemaVersion: SchemaVersion}
	for _, s := range b.specs {
		var (
			f   Feature
			err error
		)
		if s.Kind == KindClassMix {
			classes := make([]int, len(b.values[s.Name]))
			for i, v := range b.values[s.Name] {
				classes[i] = -1
				if finite(v) && v == math.Trunc(v) && v >= 0 && v < float64(s.Classes) {
					classes[i] = int(v)
				}
			}
			f, err = ClassMix(s, s.Classes, classes)
		} else if edges, ok := b.keep[s.Name]; ok {
			f, err = BuildFeatureOnEdges(s, b.values[s.Name], edges)
		} else {
			f, err = BuildFeature(s, b.values[s.Name], b.bins)
		}
		if err != nil {
			return nil, fmt.Errorf("build reference: %w", err)
		}
		r.Features = append(r.Features, f)
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("build reference: %w", err)
	}
	return r, nil
}

// moments is Welford's running mean and sum of squared deviations: one pass, no catastrophic
// cancellation, and mergeable (Chan et al.) for window summaries.
type moments struct {
	n    uint64
	mean float64
	m2   float64
}

func (m *moments) add(v float64) {
	m.n++
	d := v - m.mean
	m.mean += d / float64(m.n)
	m.m2 += d * (v - m.mean)
}

func (m moments) variance() float64 {
	if m.n == 0 {
		return 0
	}
	return m.m2 / float64(m.n)
}

// merge combines two moment sets (Chan, Golub and LeVeque's pairwise update).
func (m moments) merge(o moments) moments {
	switch {
	case o.n == 0:
		return m
	case m.n == 0:
		return o
	}
	n := m.n + o.n
	d := o.mean - m.mean
	return moments{
		n:    n,
		mean: m.mean + d*float64(o.n)/float64(n),
		m2:   m.m2 + o.m2 + d*d*float64(m.n)*float64(o.n)/float64(n),
	}
}
