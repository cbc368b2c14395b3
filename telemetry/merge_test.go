package telemetry

import (
	"math"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/telemetry/drift"
)

// windowsOf runs values through a collector on the example reference, each slice after one failed
// call; one window per slice if flushEach, else one window for all.
func windowsOf(t *testing.T, flushEach bool, parts ...[]float32) []InferenceWindow {
	b, err := os.ReadFile("drift/testdata/reference_example.json")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := drift.ParseReference(b)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c, err := NewCollector("m", "1", "b1", ref, now)
	if err != nil {
		t.Fatal(err)
	}
	var out []InferenceWindow
	for _, vs := range parts {
		c.Observe(time.Millisecond, "runtime", nil, nil)
		for _, v := range vs {
			img := make([]float32, 3*2*2)
			for j := range img {
				img[j] = v
			}
			c.Observe(time.Millisecond, "", []onnxrt.Tensor{{Name: "input", Shape: []int64{1, 3, 2, 2}, Data: img}},
				[]onnxrt.Tensor{{Name: "probs", Shape: []int64{1, 4}, Data: []float32{0.1, 0.2, 0.3, 0.4}}})
		}
		now = now.Add(time.Minute)
		if flushEach {
			out = append(out, c.Flush(now))
		}
	}
	if !flushEach {
		out = append(out, c.Flush(now))
	}
	return out
}

// TestMergeInference: merging consecutive windows equals one window over the same calls, with or
// without histograms on either side; windows of another bundle are refused.
func TestMergeInference(t *testing.T) {
	a, b := []float32{0.3, 0.4, 0.5}, []float32{0.6, 0.45}
	parts := windowsOf(t, true, a, b)
	whole := windowsOf(t, false, a, b)[0]
	cases := []struct {
		name    string
		o, n    InferenceWindow
		moments bool
	}{
		{"histograms", parts[0], parts[1], false},
		{"older without histograms", parts[0].WithoutHistograms(), parts[1], true},
		{"both without histograms", parts[0].WithoutHistograms(), parts[1].WithoutHistograms(), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := MergeInference(c.o, c.n)
			if err != nil {
				t.Fatal(err)
			}
			if m.Requests != 7 || m.Errors != 2 || m.ErrorsByReason["runtime"] != 2 || m.Latency.Count != 7 || !m.Start.Equal(parts[0].Start) || !m.End.Equal(parts[1].End) {
				t.Fatalf("merged counts %+v", m)
			}
			want := whole.WithoutHistograms().DriftMoments
			if c.moments != (m.Drift == nil) || (m.DriftMoments == nil) != !c.moments {
				t.Fatalf("drift %v, moments %v", m.Drift != nil, m.DriftMoments != nil)
			}
			if !c.moments {
				for i, f := range m.Drift.Features {
					if !slices.Equal(f.Counts, whole.Drift.Features[i].Counts) {
						t.Fatalf("feature %s: merged histogram %v, whole %v", f.Name, f.Counts, whole.Drift.Features[i].Counts)
					}
				}
			}
			got := m.WithoutHistograms().DriftMoments
			for i, f := range got.Features {
				w := want.Features[i]
				if f.Count != w.Count || math.Abs(f.Mean-w.Mean) > 1e-9 || math.Abs(f.Variance-w.Variance) > 1e-9 || f.Min != w.Min || f.Max != w.Max {
					t.Fatalf("feature %s: merged %+v, whole %+v", f.Name, f, w)
				}
			}
		})
	}
	other := parts[1]
	other.Bundle = "b2"
	if _, err := MergeInference(parts[0], other); err == nil {
		t.Fatal("windows of two bundles merged")
	}
}
