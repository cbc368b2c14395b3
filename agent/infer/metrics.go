package infer

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/telemetry/hist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Error reasons, the label of inference_errors_total.
const (
	reasonInput    = "input"    // the caller's request is wrong (HTTP 400)
	reasonRuntime  = "runtime"  // ONNX Runtime failed
	reasonInjected = "injected" // fault injection
	reasonCanceled = "canceled" // the caller gave up (context ended)
)

var reasons = []string{reasonInput, reasonRuntime, reasonInjected, reasonCanceled}

func reasonOf(err error) string {
	var ie *onnxrt.InputError
	switch {
	case errors.As(err, &ie), errors.Is(err, oip.ErrBadRequest), errors.Is(err, ErrOutputName):
		return reasonInput
	case errors.Is(err, ErrInjected):
		return reasonInjected
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return reasonCanceled
	}
	return reasonRuntime
}

// batchBuckets are the upper bounds of the batch-size histogram.
var batchBuckets = []int64{1, 2, 4, 8, 16, 32, 64, 128}

// metrics of one model version. Everything is atomic: the hot path takes no lock.
type metrics struct {
	requests  atomic.Uint64
	errs      [4]atomic.Uint64 // by reasons index
	latency   *hist.Latency
	queueWait *hist.Latency
	batches   [9]atomic.Uint64 // by batchBuckets, last = above
	batchRows atomic.Uint64
}

func newMetrics() *metrics {
	return &metrics{latency: hist.NewLatency(), queueWait: hist.NewLatency()}
}

func (m *metrics) fail(reason string) {
	for i, r := range reasons {
		if r == reason {
			m.errs[i].Add(1)
			return
		}
	}
}

func (m *metrics) observeBatch(rows int64) {
	m.batchRows.Add(uint64(rows))
	for i, ub := range batchBuckets {
		if rows <= ub {
			m.batches[i].Add(1)
			return
		}
	}
	m.batches[len(batchBuckets)].Add(1)
}

// ModelStats is one model version's counters, as Server.Snapshot returns them for telemetry.
type ModelStats struct {
	Name, Version, Bundle, Provider string
	// Serving is false for a version that was swapped out (kept so its last counts are reported).
	Serving  bool
	Requests uint64
	// Errors by reason: input, runtime, injected, canceled.
	Errors map[string]uint64
	// Latency of Model.Run (queue wait included), QueueWait the wait for a run slot.
	Latency, QueueWait hist.Snapshot
	// Batches counts batched runs by size bucket (upper bound; 0 = above the largest); only
	// with dynamic batching. BatchRows is the rows they carried.
	Batches   map[int64]uint64
	BatchRows uint64
	Shadow    *ShadowStats `json:",omitempty"`
}

func (m *Model) stats(serving bool) ModelStats {
	st := ModelStats{Name: m.Name, Version: m.Version, Bundle: m.Bundle, Provider: m.Provider(), Serving: serving,
		Requests: m.met.requests.Load(), Errors: map[string]uint64{},
		Latency: m.met.latency.Snapshot(), QueueWait: m.met.queueWait.Snapshot(), BatchRows: m.met.batchRows.Load()}
	for i, r := range reasons {
		st.Errors[r] = m.met.errs[i].Load()
	}
	if m.batch != nil {
		st.Batches = map[int64]uint64{}
		for i := range m.met.batches {
			ub := int64(0)
			if i < len(batchBuckets) {
				ub = batchBuckets[i]
			}
			st.Batches[ub] = m.met.batches[i].Load()
		}
	}
	return st
}

// Snapshot returns the counters of every served version, the versions swapped out recently, and
// shadow comparisons, for the telemetry summary.
func (s *Server) Snapshot() []ModelStats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []ModelStats
	for name, m := range s.models {
		st := m.stats(true)
		if sh := s.shadows[name]; sh != nil {
			ss := sh.stats()
			st.Shadow = &ss
		}
		out = append(out, st)
	}
	for _, m := range s.retired {
		out = append(out, m.stats(false))
	}
	return out
}

// MetricsHandler serves the Prometheus text format of Snapshot.
func (s *Server) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{s})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

var (
	labels       = []string{"model", "version", "provider", "serving"}
	descRequests = prometheus.NewDesc("edgefleet_inference_requests_total", "Inference calls per model version.", labels, nil)
	descErrors   = prometheus.NewDesc("edgefleet_inference_errors_total", "Failed inference calls per model version, by reason.", append(labels, "reason"), nil)
	descLatency  = prometheus.NewDesc("edgefleet_inference_latency_seconds", "Inference latency (queue wait included).", labels, nil)
	descQueue    = prometheus.NewDesc("edgefleet_inference_queue_wait_seconds", "Wait for a free run slot.", labels, nil)
	descBatch    = prometheus.NewDesc("edgefleet_inference_batch_size", "Rows per dynamically batched run.", labels, nil)
	descShadow   = prometheus.NewDesc("edgefleet_inference_shadow_agreement_ratio", "Fraction of shadowed calls whose outputs agree with the primary.", []string{"model", "shadow_version"}, nil)
	descShadowN  = prometheus.NewDesc("edgefleet_inference_shadow_compared_total", "Shadowed calls compared.", []string{"model", "shadow_version"}, nil)
	descShadowD  = prometheus.NewDesc("edgefleet_inference_shadow_mean_abs_diff", "Mean absolute difference of shadow outputs from the primary's.", []string{"model", "shadow_version"}, nil)
)

// collector turns a Snapshot into metrics at scrape time: nothing is registered per model, so a
// swapped model needs no unregistering. Latency is a summary (p50/p95/p99) because the
// histogram's log buckets are finer than Prometheus would want as series.
type collector struct{ s *Server }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descErrors, descLatency, descQueue, descBatch, descShadow, descShadowN, descShadowD} {
		ch <- d
	}
}

func summary(d *prometheus.Desc, h hist.Snapshot, lv []string) prometheus.Metric {
	q := map[float64]float64{}
	for _, p := range []float64{0.5, 0.95, 0.99} {
		q[p] = h.Quantile(p).Seconds()
	}
	return prometheus.MustNewConstSummary(d, h.Count, h.Sum.Seconds(), q, lv...)
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.s.Snapshot() {
		lv := []string{st.Name, st.Version, st.Provider, strconv.FormatBool(st.Serving)}
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(st.Requests), lv...)
		for _, r := range reasons {
			ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(st.Errors[r]), append(lv[:4:4], r)...)
		}
		ch <- summary(descLatency, st.Latency, lv)
		ch <- summary(descQueue, st.QueueWait, lv)
		if st.Batches != nil {
			buckets := map[float64]uint64{}
			var cum, n uint64
			for _, ub := range batchBuckets {
				cum += st.Batches[ub]
				buckets[float64(ub)] = cum
			}
			n = cum + st.Batches[0]
			ch <- prometheus.MustNewConstHistogram(descBatch, n, float64(st.BatchRows), buckets, lv...)
		}
		if sh := st.Shadow; sh != nil {
			sl := []string{st.Name, sh.Version}
			ch <- prometheus.MustNewConstMetric(descShadow, prometheus.GaugeValue, sh.AgreementRate(), sl...)
			ch <- prometheus.MustNewConstMetric(descShadowN, prometheus.CounterValue, float64(sh.Compared), sl...)
			ch <- prometheus.MustNewConstMetric(descShadowD, prometheus.GaugeValue, sh.MeanAbsDiff, sl...)
		}
	}
}
