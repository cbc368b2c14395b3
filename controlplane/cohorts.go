package controlplane

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/bundles"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/ingest"
	"github.com/edgefleet/edgefleet/deploy"
	"github.com/edgefleet/edgefleet/telemetry"
	"github.com/edgefleet/edgefleet/telemetry/drift"
	"github.com/edgefleet/edgefleet/telemetry/hist"
)

// minSelfHistory is the requests a canary device must have served on its previous bundle (in the
// hour before) for its own before/after comparison to count.
const minSelfHistory = 200

// cohorts turns devices' stored inference windows into the rollout gates' inputs.
type cohorts struct {
	ing       *ingest.Ingest
	reg       *fleet.Registry
	bundleDir string

	// release names a bundle's model version (kind/name@version), so that variants of one version
	// count as the same bundle; nil compares ids.
	release func(bundleID string) string

	// wins keeps decoded windows between reconciles (nil: every read decodes from the store).
	wins *windowCache

	mu       sync.Mutex
	refs     map[string]*drift.Reference // bundle id -> reference (nil: none)
	releases map[string]string           // bundle id -> release (bundles are immutable)
}

// same reports whether two bundle ids are the same model version (equal, or variants of it).
func (c *cohorts) same(a, b string) bool {
	if a == b || c.release == nil || a == "" || b == "" {
		return a == b
	}
	return c.rel(a) == c.rel(b)
}

func (c *cohorts) rel(id string) string {
	c.mu.Lock()
	r, ok := c.releases[id]
	c.mu.Unlock()
	if ok {
		return r
	}
	r = c.release(id)
	if r == "" {
		r = id
	}
	c.mu.Lock()
	if c.releases == nil {
		c.releases = map[string]string{}
	}
	c.releases[id] = r
	c.mu.Unlock()
	return r
}

// windows returns a device's inference windows of a model since a time, from the window cache
// when there is one.
func (c *cohorts) windows(ctx context.Context, device, model string, since time.Time) []telemetry.InferenceWindow {
	if c.wins != nil {
		return c.wins.windows(ctx, device, model, since)
	}
	return uncachedWindows(ctx, c.ing, device, model, since)
}

func (c *cohorts) reference(bundleID string) *drift.Reference {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.refs[bundleID]; ok {
		return r
	}
	var ref *drift.Reference
	b, err := os.ReadFile(filepath.Join(c.bundleDir, bundleID, bundles.DriftReferenceName)) // encrypted bundles
	if err != nil {
		b, err = os.ReadFile(filepath.Join(c.bundleDir, bundleID, "reference.json"))
	}
	if err == nil {
		ref, _ = drift.ParseReference(b)
	}
	c.refs[bundleID] = ref
	return ref
}

// latencySamples turns a histogram into evenly spaced quantiles (at most 400), the sample the rank
// test gets: it keeps the distribution's shape, and fewer points than requests makes the test
// conservative rather than over-confident.
func latencySamples(s hist.Snapshot) []float64 {
	if s.Count == 0 {
		return nil
	}
	k := int(min(s.Count, 400))
	out := make([]float64, k)
	for i := range out {
		out[i] = float64(s.Quantile((float64(i)+0.5)/float64(k))) / float64(time.Millisecond)
	}
	return out
}

type agg struct {
	devices  int
	requests int64
	errors   int64
	lat      hist.Sum // summed in place: Merge would allocate a snapshot per window
	drifts   []drift.Summary
	bundle   string
	correct  int64
	labeled  int64
}

func (a *agg) add(w telemetry.InferenceWindow) {
	a.requests += int64(w.Requests)
	a.errors += int64(w.Errors)
	a.correct += int64(w.Correct)
	a.labeled += int64(w.Labeled)
	if a.lat.Count() == 0 {
		a.lat.Set(w.Latency)
	} else {
		_ = a.lat.Add(w.Latency) // a window of another histogram layout is left out, as Merge would
	}
	if w.Drift != nil {
		a.drifts = append(a.drifts, *w.Drift)
	}
	a.bundle = w.Bundle
}

func (a *agg) window() deploy.Window {
	lat := a.lat.Snapshot()
	return deploy.Window{Requests: a.requests, Errors: a.errors, LatenciesMS: latencySamples(lat),
		P95MS: float64(lat.Quantile(0.95)) / float64(time.Millisecond)}
}

// scores compares the cohort's merged feature distributions with the bundle's reference:
// the largest KS distance over output features (output shift) and over input features.
func (c *cohorts) scores(a *agg) (out, in *deploy.Score) {
	if len(a.drifts) == 0 || a.bundle == "" {
		return nil, nil
	}
	ref := c.reference(a.bundle)
	if ref == nil {
		return nil, nil
	}
	merged, err := drift.Merge(a.drifts...)
	if err != nil {
		return nil, nil
	}
	rep, err := drift.Compare(ref, merged, drift.Options{})
	if err != nil {
		return nil, nil
	}
	for _, fs := range rep.Features {
		f, _, ok := ref.Feature(fs.Feature)
		if !ok {
			continue
		}
		sc := &deploy.Score{Value: fs.KS, Samples: int64(fs.NCur), RefSamples: int64(fs.NRef)}
		isOut := f.Source == drift.SourceOutput || f.Source == drift.SourceEmbedding
		switch {
		case isOut && (out == nil || sc.Value > out.Value):
			out = sc
		case !isOut && (in == nil || sc.Value > in.Value):
			in = sc
		}
	}
	return out, in
}

// active is the bundle a device reports serving for a model.
func (c *cohorts) active(device, model string) string {
	d, err := c.reg.Get(device)
	if err != nil || d.Reported == nil {
		return ""
	}
	return d.Reported.Models[model].Active
}

// CohortMetrics builds the model-aware gate inputs: the canary devices' windows on the bundle they
// now serve since the stage's window began, the baseline devices' windows on the bundle they serve
// over the same window, and each canary device's own windows before (any other bundle, the hour
// before) and after.
func (c *cohorts) CohortMetrics(ctx context.Context, model string, canary, baseline []string, since time.Time) (deploy.Metrics, error) {
	var m deploy.Metrics
	var can, base agg
	m.PerDevice = map[string]deploy.BeforeAfter{}
	newBundle := ""
	for _, d := range canary {
		if newBundle = c.active(d, model); newBundle != "" {
			break
		}
	}
	for _, d := range canary {
		var before, after agg
		seen := false
		for _, w := range c.windows(ctx, d, model, since.Add(-time.Hour)) {
			switch {
			case c.same(w.Bundle, newBundle) && !w.End.Before(since):
				after.add(w)
				can.add(w)
				seen = true
			case !c.same(w.Bundle, newBundle):
				before.add(w)
			}
		}
		if seen {
			can.devices++
		}
		if before.requests > 0 || after.requests > 0 {
			m.HadTraffic = true
		}
		// A canary's history on its previous bundle stops growing once it switched: with too little
		// of it the before/after comparison could never be made and the gate would wait forever,
		// so such a device is judged by the cohort comparison alone.
		if before.requests >= minSelfHistory && after.requests > 0 {
			m.PerDevice[d] = deploy.BeforeAfter{Before: before.window(), After: after.window()}
		}
	}
	for _, d := range baseline {
		seen := false
		for _, w := range c.windows(ctx, d, model, since.Add(-time.Hour)) {
			if w.Requests > 0 {
				m.HadTraffic = true
			}
			if w.End.Before(since) {
				continue
			}
			if !c.same(w.Bundle, newBundle) {
				base.add(w)
				seen = true
			}
		}
		if seen {
			base.devices++
		}
	}
	// A cohort is its devices, whether or not their telemetry has arrived yet: a cohort with
	// devices and no samples makes the gates wait; only an empty list means "no such cohort".
	m.Canary = deploy.Cohort{Devices: len(canary), Window: can.window(), Correct: can.correct, Labeled: can.labeled}
	m.Canary.OutputShift, m.Canary.InputDrift = c.scores(&can)
	if len(baseline) > 0 {
		m.Baseline = deploy.Cohort{Devices: len(baseline), Window: base.window(), Correct: base.correct, Labeled: base.labeled}
		m.Baseline.OutputShift, m.Baseline.InputDrift = c.scores(&base)
	}
	return m, nil
}
