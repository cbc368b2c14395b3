package telemetry

import (
	"fmt"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/telemetry/drift"
	"github.com/edgefleet/edgefleet/telemetry/hist"
)

// InferenceWindow summarises one model version's traffic over a window: counts, a latency
// histogram and, when the bundle has a drift reference, the distribution of its features on the
// reference's bins. It is what devices send instead of raw data.
type InferenceWindow struct {
	Model          string            `json:"model"`
	Version        string            `json:"version"`
	Bundle         string            `json:"bundle"`
	Start          time.Time         `json:"start"`
	End            time.Time         `json:"end"`
	Requests       uint64            `json:"requests"`
	Errors         uint64            `json:"errors"`
	ErrorsByReason map[string]uint64 `json:"errors_by_reason,omitempty"`
	Latency        hist.Snapshot     `json:"latency"`
	Drift          *drift.Summary    `json:"drift,omitempty"`
	// DriftMoments replaces Drift when the device's byte budget could not carry the histograms.
	DriftMoments *DriftMoments `json:"drift_moments,omitempty"`
	// Labeled predictions of this version that got ground truth in the window, Correct of them.
	Correct uint64 `json:"correct,omitempty"`
	Labeled uint64 `json:"labeled,omitempty"`
}

// maxDriftSamples bounds feature extraction per window: a reduction over a large image costs about
// a millisecond, and a few hundred samples already give the drift tests their power.
const maxDriftSamples = 500

// Collector accumulates one model version's window. Safe for concurrent use.
type Collector struct {
	model, version, bundle string

	mu       sync.Mutex
	start    time.Time
	lat      *hist.Latency
	requests uint64
	errors   uint64
	reasons  map[string]uint64
	specs    []drift.FeatureSpec
	window   *drift.Window
	sampled  int
	correct  uint64
	labeled  uint64
}

// NewCollector starts a window for a model version; ref may be nil (no drift profile).
func NewCollector(model, version, bundle string, ref *drift.Reference, now time.Time) (*Collector, error) {
	c := &Collector{model: model, version: version, bundle: bundle, start: now, lat: hist.NewLatency(), reasons: map[string]uint64{}}
	if ref != nil {
		w, err := drift.NewWindow(ref)
		if err != nil {
			return nil, fmt.Errorf("drift window: %w", err)
		}
		c.window = w
		for _, f := range ref.Features {
			c.specs = append(c.specs, f.FeatureSpec)
		}
	}
	return c, nil
}

// Observe records one call. errReason is "" for success. inputs and outputs feed the drift
// profile (a bounded sample of calls).
func (c *Collector) Observe(d time.Duration, errReason string, inputs, outputs []onnxrt.Tensor) {
	c.lat.Observe(d)
	c.mu.Lock()
	c.requests++
	if errReason != "" {
		c.errors++
		c.reasons[errReason]++
	}
	sample := c.window != nil && errReason == "" && c.sampled < maxDriftSamples
	if sample {
		c.sampled++
	}
	w := c.window
	c.mu.Unlock()
	if !sample {
		return
	}
	all := make(map[string]onnxrt.Tensor, len(inputs)+len(outputs))
	for _, t := range inputs {
		all[t.Name] = t
	}
	for _, t := range outputs {
		all[t.Name] = t
	}
	vals, err := FeatureValues(c.specs, all)
	if err != nil {
		return
	}
	for name, vs := range vals {
		for _, v := range vs {
			w.Add(name, v)
		}
	}
}

// ObserveLabel records the outcome of one ground-truth label for a prediction of this version.
func (c *Collector) ObserveLabel(correct bool) {
	c.mu.Lock()
	c.labeled++
	if correct {
		c.correct++
	}
	c.mu.Unlock()
}

// Flush returns the window so far and starts the next one.
func (c *Collector) Flush(now time.Time) InferenceWindow {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := InferenceWindow{Model: c.model, Version: c.version, Bundle: c.bundle, Start: c.start, End: now,
		Requests: c.requests, Errors: c.errors, Latency: c.lat.Snapshot(), Correct: c.correct, Labeled: c.labeled}
	if len(c.reasons) > 0 {
		w.ErrorsByReason = c.reasons
	}
	if c.window != nil {
		s := c.window.Flush()
		w.Drift = &s
	}
	c.start, c.lat, c.requests, c.errors, c.reasons, c.sampled = now, hist.NewLatency(), 0, 0, map[string]uint64{}, 0
	c.correct, c.labeled = 0, 0
	return w
}

// FeatureValues extracts every feature's values from one call's named input and output tensors.
// The bundle builder uses it on reference samples and devices on live traffic, so both compute
// features the same way.
func FeatureValues(specs []drift.FeatureSpec, tensors map[string]onnxrt.Tensor) (map[string][]float64, error) {
	out := map[string][]float64{}
	for i := range specs {
		s := &specs[i]
		t, ok := tensors[s.Tensor]
		if !ok {
			continue
		}
		data, ok := t.Data.([]float32)
		if !ok {
			continue
		}
		v, err := s.Extract(data, t.Shape)
		if err != nil {
			return nil, fmt.Errorf("feature %s: %w", s.Name, err)
		}
		out[s.Name] = v
	}
	return out, nil
}
