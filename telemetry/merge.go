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
