package controlplane

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgefleet/edgefleet/controlplane/blocksrv"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/ingest"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/deploy"
	"github.com/edgefleet/edgefleet/telemetry"
	"github.com/edgefleet/edgefleet/telemetry/drift"
	"github.com/edgefleet/edgefleet/telemetry/hist"
)

// Windowed metrics: inference traffic, latency and drift are computed over the committed inference
// windows that ended in the last metricsWindow, and the result is cached for metricsCacheTTL so
// that frequent (or several) scrapers cost one pass over the store.
const (
	metricsWindow   = 5 * time.Minute
	metricsCacheTTL = 5 * time.Second
	// maxFinishedRollouts bounds the rollout series: every rollout still in progress is exported,
	// plus the newest finished ones up to this many.
	maxFinishedRollouts = 20
)

// metricsHandler exposes the fleet in Prometheus format. Values are read at scrape time from the
// parts that own them, so nothing is counted twice. ing, rollouts and coh may be nil (their
// metrics are then left out).
func metricsHandler(reg *fleet.Registry, blocks *blocksrv.Server, ing *ingest.Ingest, rollouts *rollout.Controller, coh *cohorts) http.Handler {
	r := prometheus.NewRegistry()
	counter := func(name, help string, f func() float64) {
		r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	counter("edgefleet_bundle_blocks_sent_total", "Bundle blocks sent to devices on their own topic.", func() float64 { return float64(blocks.Stats().Frames) })
	counter("edgefleet_bundle_bytes_sent_total", "Bundle payload bytes sent to devices on their own topic.", func() float64 { return float64(blocks.Stats().Bytes) })
	counter("edgefleet_bundle_carousel_bytes_total", "Bundle payload bytes broadcast on carousels.", func() float64 { return float64(blocks.Stats().CarouselBytes) })
	counter("edgefleet_bundle_requests_refused_total", "Block requests refused (malformed or not allowed).", func() float64 { return float64(blocks.Stats().Refused) })
	counter("edgefleet_bundle_requests_dropped_total", "Block requests dropped because too many devices were already waiting for blocks.", func() float64 { return float64(blocks.Stats().Dropped) })
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edgefleet_bundle_devices_waiting",
		Help: "Devices with block requests waiting for their turn (each gets one block per turn)."}, func() float64 { return float64(blocks.Pending()) }))
	counter("edgefleet_fleet_messages_total", "Fleet messages accepted.", func() float64 { a, _ := reg.Stats(); return float64(a) })
	counter("edgefleet_fleet_messages_malformed_total", "Fleet messages refused as malformed.", func() float64 { _, m := reg.Stats(); return float64(m) })
	if ing != nil {
		counter("edgefleet_ingest_messages_total", "Telemetry messages received by the ingest pipeline.", func() float64 { return float64(ing.Stats().Received) })
		counter("edgefleet_ingest_committed_total", "Telemetry messages committed to the store.", func() float64 { return float64(ing.Stats().Committed) })
		counter("edgefleet_ingest_duplicates_total", "Telemetry messages already committed (redelivered).", func() float64 { return float64(ing.Stats().Duplicates) })
		counter("edgefleet_ingest_batches_total", "Store transactions committing telemetry batches.", func() float64 { return float64(ing.Stats().Batches) })
		counter("edgefleet_ingest_acks_total", "Telemetry acknowledgements published to devices.", func() float64 { return float64(ing.Stats().Acks) })
	}
	r.MustRegister(&fleetCollector{reg: reg, ing: ing, rollouts: rollouts, coh: coh, now: time.Now})
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{})
}

var (
	devicesDesc      = prometheus.NewDesc("edgefleet_devices", "Devices by group and online state.", []string{"group", "online"}, nil)
	modelDevicesDesc = prometheus.NewDesc("edgefleet_model_devices", "Devices serving each model version, by group.", []string{"model", "version", "group"}, nil)
	rolloutStateDesc = prometheus.NewDesc("edgefleet_rollout_state",
		"1 for the rollout's current state, 0 for the others (rollouts in progress and the newest finished ones).", []string{"rollout", "state"}, nil)
	rolloutStageDesc   = prometheus.NewDesc("edgefleet_rollout_stage", "The rollout's current stage (0-based).", []string{"rollout"}, nil)
	rolloutDevicesDesc = prometheus.NewDesc("edgefleet_rollout_devices", "A rollout's targeted devices by status.", []string{"rollout", "status"}, nil)
	inferenceLabels    = []string{"model", "version", "group"}
	inferenceReqDesc   = prometheus.NewDesc("edgefleet_inference_requests",
		"Inference requests in the committed windows that ended in the last 5 minutes.", inferenceLabels, nil)
	inferenceErrDesc = prometheus.NewDesc("edgefleet_inference_errors",
		"Failed inference requests in the committed windows that ended in the last 5 minutes.", inferenceLabels, nil)
	inferenceDevDesc = prometheus.NewDesc("edgefleet_inference_devices",
		"Devices that reported inference windows in the last 5 minutes.", inferenceLabels, nil)
	inferenceLatDesc = prometheus.NewDesc("edgefleet_inference_latency_seconds",
		"Inference latency quantiles over the last 5 minutes, from the devices' merged histograms.", append(inferenceLabels[:3:3], "quantile"), nil)
	driftScoreDesc = prometheus.NewDesc("edgefleet_drift_score",
		"Per-feature drift of the last 5 minutes' merged windows against the bundle's reference (ks: Kolmogorov-Smirnov distance of numeric features; psi: population stability index).",
		[]string{"model", "version", "group", "feature", "test"}, nil)
	driftSamplesDesc = prometheus.NewDesc("edgefleet_drift_samples",
		"Samples behind the drift scores of the last 5 minutes.", []string{"model", "version", "group"}, nil)
)

var (
	rolloutStates   = []deploy.State{deploy.Running, deploy.WaitingApproval, deploy.Paused, deploy.RollingBack, deploy.RolledBack, deploy.Completed, deploy.Aborted}
	latencyQuantile = []struct {
		label string
		q     float64
	}{{"0.5", 0.5}, {"0.95", 0.95}, {"0.99", 0.99}}
)

type fleetCollector struct {
	reg      *fleet.Registry
	ing      *ingest.Ingest
	rollouts *rollout.Controller
	coh      *cohorts
	now      func() time.Time

	mu     sync.Mutex
	at     time.Time
	cached []prometheus.Metric
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{devicesDesc, modelDevicesDesc, rolloutStateDesc, rolloutStageDesc, rolloutDevicesDesc,
		inferenceReqDesc, inferenceErrDesc, inferenceDevDesc, inferenceLatDesc, driftScoreDesc, driftSamplesDesc} {
		ch <- d
	}
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.reg.Groups() {
		ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(g.Online), g.Name, "true")
		ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(g.Devices-g.Online), g.Name, "false")
	}
	devs := c.reg.List(fleet.Filter{})
	type mvg struct{ model, version, group string }
	serving := map[mvg]int{}
	for _, d := range devs {
		if d.Reported == nil {
			continue
		}
		for name, m := range d.Reported.Models {
			if m.Active == "" {
				continue
			}
			serving[mvg{name, versionLabel(m.Version, m.Active), d.Group}]++
		}
	}
	for k, n := range serving {
		ch <- prometheus.MustNewConstMetric(modelDevicesDesc, prometheus.GaugeValue, float64(n), k.model, k.version, k.group)
	}
	for _, m := range c.windowed(devs) {
		ch <- m
	}
}

// versionLabel is a model report's version, or its bundle id when the agent did not report one.
func versionLabel(version, bundle string) string {
	if version != "" {
		return version
	}
	return bundle
}

// windowed returns the cached rollout, inference and drift metrics, recomputing them when stale.
func (c *fleetCollector) windowed(devs []fleet.Device) []prometheus.Metric {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.cached != nil && now.Sub(c.at) < metricsCacheTTL {
		return c.cached
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := []prometheus.Metric{}
	out = append(out, c.rolloutMetrics(ctx)...)
	out = append(out, c.inferenceMetrics(ctx, devs, now)...)
	c.cached, c.at = out, now
	return out
}

func (c *fleetCollector) rolloutMetrics(ctx context.Context) []prometheus.Metric {
	if c.rollouts == nil {
		return nil
	}
	views, err := c.rollouts.List(ctx) // newest first
	if err != nil {
		return nil
	}
	var out []prometheus.Metric
	finished := 0
	for _, v := range views {
		if isFinal(v.State) {
			if finished++; finished > maxFinishedRollouts {
				continue
			}
		}
		for _, s := range rolloutStates {
			val := 0.0
			if v.State == s {
				val = 1
			}
			out = append(out, prometheus.MustNewConstMetric(rolloutStateDesc, prometheus.GaugeValue, val, v.ID, string(s)))
		}
		out = append(out, prometheus.MustNewConstMetric(rolloutStageDesc, prometheus.GaugeValue, float64(v.Stage), v.ID))
		n := v.Counts
		for _, s := range []struct {
			st deploy.DeviceStatus
			n  int
		}{{deploy.StatusPlanned, n.Planned}, {deploy.StatusPending, n.Pending}, {deploy.StatusDownloading, n.Downloading},
			{deploy.StatusInstalled, n.Installed}, {deploy.StatusFailed, n.Failed}, {deploy.StatusStalled, n.Stalled},
			{deploy.StatusRollingBack, n.RollingBack}, {deploy.StatusRolledBack, n.RolledBack}, {deploy.StatusExcluded, n.Excluded}} {
			out = append(out, prometheus.MustNewConstMetric(rolloutDevicesDesc, prometheus.GaugeValue, float64(s.n), v.ID, string(s.st)))
		}
	}
	return out
}

func isFinal(s deploy.State) bool {
	return s == deploy.Completed || s == deploy.RolledBack || s == deploy.Aborted
}

// inferenceAgg is one model version's traffic in one group over the window.
type inferenceAgg struct {
	devices          int
	requests, errors uint64
	lat              hist.Snapshot
	drifts           map[string][]drift.Summary // bundle id -> window summaries
}

func (c *fleetCollector) inferenceMetrics(ctx context.Context, devs []fleet.Device, now time.Time) []prometheus.Metric {
	if c.ing == nil {
		return nil
	}
	since := now.Add(-metricsWindow)
	type key struct{ model, version, group string }
	per := map[key]*inferenceAgg{}
	for _, d := range devs {
		msgs, err := c.ing.Query(ctx, d.ID, telemetry.KindInference, since, 0)
		if err != nil {
			continue
		}
		seen := map[key]bool{}
		for _, m := range msgs {
			var w telemetry.InferenceWindow
			if json.Unmarshal(m.Body, &w) != nil || w.Model == "" || w.End.Before(since) {
				continue
			}
			k := key{w.Model, versionLabel(w.Version, w.Bundle), d.Group}
			a := per[k]
			if a == nil {
				a = &inferenceAgg{drifts: map[string][]drift.Summary{}}
				per[k] = a
			}
			if !seen[k] {
				seen[k] = true
				a.devices++
			}
			a.requests += w.Requests
			a.errors += w.Errors
			if a.lat.Count == 0 {
				a.lat = w.Latency
			} else if merged, err := a.lat.Merge(w.Latency); err == nil {
				a.lat = merged
			}
			if w.Drift != nil && w.Bundle != "" {
				a.drifts[w.Bundle] = append(a.drifts[w.Bundle], *w.Drift)
			}
		}
	}
	var out []prometheus.Metric
	for k, a := range per {
		lv := []string{k.model, k.version, k.group}
		out = append(out,
			prometheus.MustNewConstMetric(inferenceReqDesc, prometheus.GaugeValue, float64(a.requests), lv...),
			prometheus.MustNewConstMetric(inferenceErrDesc, prometheus.GaugeValue, float64(a.errors), lv...),
			prometheus.MustNewConstMetric(inferenceDevDesc, prometheus.GaugeValue, float64(a.devices), lv...))
		if a.lat.Count > 0 {
			for _, q := range latencyQuantile {
				out = append(out, prometheus.MustNewConstMetric(inferenceLatDesc, prometheus.GaugeValue,
					a.lat.Quantile(q.q).Seconds(), k.model, k.version, k.group, q.label))
			}
		}
		out = append(out, c.driftMetrics(a, lv)...)
	}
	return out
}

// driftMetrics scores the version's merged drift summaries against its bundle's reference. When
// one version label covers several bundles (rebuilt with the same version), the one with the most
// windows is scored, so a series never has two values.
func (c *fleetCollector) driftMetrics(a *inferenceAgg, lv []string) []prometheus.Metric {
	if c.coh == nil || len(a.drifts) == 0 {
		return nil
	}
	bundles := make([]string, 0, len(a.drifts))
	for b := range a.drifts {
		bundles = append(bundles, b)
	}
	sort.Slice(bundles, func(i, j int) bool {
		if len(a.drifts[bundles[i]]) != len(a.drifts[bundles[j]]) {
			return len(a.drifts[bundles[i]]) > len(a.drifts[bundles[j]])
		}
		return bundles[i] < bundles[j]
	})
	ref := c.coh.reference(bundles[0])
	if ref == nil {
		return nil
	}
	merged, err := drift.Merge(a.drifts[bundles[0]]...)
	if err != nil {
		return nil
	}
	rep, err := drift.Compare(ref, merged, drift.Options{})
	if err != nil {
		return nil
	}
	var out []prometheus.Metric
	var samples uint64
	for _, fs := range rep.Features {
		samples = max(samples, fs.NCur)
		if fs.InsufficientSamples {
			continue
		}
		if !fs.Categorical {
			out = append(out, prometheus.MustNewConstMetric(driftScoreDesc, prometheus.GaugeValue, fs.KS, lv[0], lv[1], lv[2], fs.Feature, "ks"))
		}
		out = append(out, prometheus.MustNewConstMetric(driftScoreDesc, prometheus.GaugeValue, fs.PSI, lv[0], lv[1], lv[2], fs.Feature, "psi"))
	}
	out = append(out, prometheus.MustNewConstMetric(driftSamplesDesc, prometheus.GaugeValue, float64(samples), lv...))
	return out
}
