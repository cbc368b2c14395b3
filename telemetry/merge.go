package telemetry

import (
	"fmt"

	"github.com/edgefleet/edgefleet/telemetry/drift"
)

// MergeInference folds two consecutive windows of one model version (older first) into one that
// spans both: counts, errors, labels, latency and drift histograms add up exactly, so a coarser
// window loses time resolution and nothing else. Windows of different bundles do not merge.
func MergeInference(o, n InferenceWindow) (InferenceWindow, error) {
	if o.Bundle != n.Bundle || o.Model != n.Model {
		return InferenceWindow{}, fmt.Errorf("merge windows of %s/%s and %s/%s: different model versions", o.Model, o.Bundle, n.Model, n.Bundle)
	}
	m := n
	if !o.Start.IsZero() && (m.Start.IsZero() || o.Start.Before(m.Start)) {
		m.Start = o.Start
	}
	if o.End.After(m.End) {
		m.End = o.End
	}
	m.Requests += o.Requests
	m.Errors += o.Errors
	m.Correct += o.Correct
	m.Labeled += o.Labeled
	if len(o.ErrorsByReason) > 0 || len(n.ErrorsByReason) > 0 {
		m.ErrorsByReason = map[string]uint64{}
		for k, v := range o.ErrorsByReason {
			m.ErrorsByReason[k] += v
		}
		for k, v := range n.ErrorsByReason {
			m.ErrorsByReason[k] += v
		}
	}
	if o.Latency.Count > 0 {
		l, err := o.Latency.Merge(n.Latency)
		if err != nil {
			return InferenceWindow{}, fmt.Errorf("merge latency of %s: %w", o.Bundle, err)
		}
		m.Latency = l
	}
	if o.DriftMoments != nil || n.DriftMoments != nil {
		// One side was sent without histograms: the merge can keep only moments.
		om, nm := o.WithoutHistograms().DriftMoments, n.WithoutHistograms().DriftMoments
		m.Drift = nil
		switch {
		case om == nil:
			m.DriftMoments = nm
		case nm == nil:
			m.DriftMoments = om
		default:
			dm, err := mergeMoments(*om, *nm)
			if err != nil {
				return InferenceWindow{}, fmt.Errorf("merge drift moments of %s: %w", o.Bundle, err)
			}
			m.DriftMoments = &dm
		}
		return m, nil
	}
	switch {
	case o.Drift != nil && n.Drift != nil:
		d, err := drift.Merge(*o.Drift, *n.Drift)
		if err != nil {
			return InferenceWindow{}, fmt.Errorf("merge drift of %s: %w", o.Bundle, err)
		}
		m.Drift = &d
	case o.Drift != nil:
		m.Drift = o.Drift
	}
	return m, nil
}

// DriftMoments is what is left of a window's drift histograms when a device's byte budget cannot
// carry them: per feature the count, missing count, mean, variance and range. The control plane
// cannot test drift on it, but the counts are exact and the moments show a gross shift.
type DriftMoments struct {
	Reference string           `json:"reference"`
	Features  []FeatureMoments `json:"features"`
}

// FeatureMoments is one feature of DriftMoments.
type FeatureMoments struct {
	Name     string  `json:"name"`
	Count    uint64  `json:"count"`
	Missing  uint64  `json:"missing,omitempty"`
	Mean     float64 `json:"mean"`
	Variance float64 `json:"variance"`
	Min      float64 `json:"min"`
	Max      float64 `json:"max"`
}

// WithoutHistograms returns w with its drift histograms replaced by their moments.
func (w InferenceWindow) WithoutHistograms() InferenceWindow {
	if w.Drift == nil {
		return w
	}
	dm := &DriftMoments{Reference: w.Drift.Reference}
	for _, f := range w.Drift.Features {
		dm.Features = append(dm.Features, FeatureMoments{Name: f.Name, Count: f.Count, Missing: f.Missing, Mean: f.Mean, Variance: f.Variance, Min: f.Min, Max: f.Max})
	}
	w.Drift, w.DriftMoments = nil, dm
	return w
}

// BudgetReport is a device's telemetry byte budget as it stands, sent with its health.
type BudgetReport struct {
	BytesPerDay int64 `json:"bytes_per_day"`
	// Used is what the device spent in the last 24 hours (counted per hour, so it can include up to
	// one hour more).
	Used int64 `json:"used_24h"`
	// Level is the detail of this message: 0 full windows, 1 lengthened windows, 2 drift histograms
	// reduced to moments.
	Level int `json:"level"`
	// Stretch is how many telemetry intervals this message's windows span.
	Stretch int `json:"stretch"`
	// Held counts the intervals whose summaries were held back to be merged into a later message
	// (the device was over its budget); Reduced the windows sent without drift histograms.
	Held    uint64 `json:"held"`
	Reduced uint64 `json:"reduced"`
}

// mergeMoments pools two sets of per-feature moments (population variance, Chan et al.).
func mergeMoments(a, b DriftMoments) (DriftMoments, error) {
	if a.Reference != b.Reference || len(a.Features) != len(b.Features) {
		return DriftMoments{}, drift.ErrMismatch
	}
	out := DriftMoments{Reference: a.Reference, Features: make([]FeatureMoments, len(a.Features))}
	for i, x := range a.Features {
		y := b.Features[i]
		if x.Name != y.Name {
			return DriftMoments{}, drift.ErrMismatch
		}
		f := FeatureMoments{Name: x.Name, Count: x.Count + y.Count, Missing: x.Missing + y.Missing}
		switch {
		case x.Count == 0:
			f.Mean, f.Variance, f.Min, f.Max = y.Mean, y.Variance, y.Min, y.Max
		case y.Count == 0:
			f.Mean, f.Variance, f.Min, f.Max = x.Mean, x.Variance, x.Min, x.Max
		default:
			nx, ny, n := float64(x.Count), float64(y.Count), float64(f.Count)
			d := y.Mean - x.Mean
			f.Mean = x.Mean + d*ny/n
			f.Variance = (nx*x.Variance + ny*y.Variance + d*d*nx*ny/n) / n
			f.Min, f.Max = min(x.Min, y.Min), max(x.Max, y.Max)
		}
		out.Features[i] = f
	}
	return out, nil
}
