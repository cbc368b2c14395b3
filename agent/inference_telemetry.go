package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/agent/infer"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/telemetry"
	"github.com/edgefleet/edgefleet/telemetry/drift"
)

// inferenceTelemetry keeps one window collector per served model version and sends their
// summaries every telemetry interval.
type inferenceTelemetry struct {
	mu         sync.Mutex
	collectors map[string]*telemetry.Collector // bundle id -> collector
	idle       map[string]int                  // bundle id -> consecutive windows without traffic
	// outputShift returns a simulated output shift for a model version (fault injection).
	outputShift func(name, version string) float64
	refs        map[string]*drift.Reference // bundle id -> drift reference, when the bundle has one
}

func newInferenceTelemetry(shift func(name, version string) float64) *inferenceTelemetry {
	return &inferenceTelemetry{collectors: map[string]*telemetry.Collector{}, idle: map[string]int{}, outputShift: shift}
}

// collector returns (creating) the collector of a bundle; dir is the installed bundle's folder,
// where its drift reference lives.
func (it *inferenceTelemetry) collector(name, version, id, dir string, m *bundle.Manifest) *telemetry.Collector {
	it.mu.Lock()
	defer it.mu.Unlock()
	if c, ok := it.collectors[id]; ok {
		return c
	}
	var ref *drift.Reference
	if f := m.FileByRole(bundle.RoleReference); f != nil {
		if b, err := os.ReadFile(filepath.Join(dir, f.Path)); err == nil {
			ref, _ = drift.ParseReference(b)
		}
	}
	c, err := telemetry.NewCollector(name, version, id, ref, time.Now())
	if err != nil {
		c, _ = telemetry.NewCollector(name, version, id, nil, time.Now())
	}
	it.collectors[id] = c
	if ref != nil {
		if it.refs == nil {
			it.refs = map[string]*drift.Reference{}
		}
		it.refs[id] = ref // the drift capture trigger compares windows with it (capturing.go)
	}
	return c
}

// observe records one inference call of a model version.
func (it *inferenceTelemetry) observe(c *telemetry.Collector, name, version string, d time.Duration, err error, in, out []onnxrt.Tensor) {
	reason := ""
	if err != nil {
		var ie *onnxrt.InputError
		if errors.As(err, &ie) || errors.Is(err, context.Canceled) {
			return // the caller's mistake or departure, not the model's
		}
		reason = "runtime"
		if errors.Is(err, infer.ErrInjected) {
			reason = "injected"
		}
	}
	if s := it.shift(name, version); s != 0 && err == nil {
		out = shifted(out, s)
	}
	c.Observe(d, reason, in, out)
}

func (it *inferenceTelemetry) shift(name, version string) float64 {
	if it.outputShift == nil {
		return 0
	}
	return it.outputShift(name, version)
}

// shifted returns copies of float outputs moved by s: a model whose outputs drifted.
func shifted(out []onnxrt.Tensor, s float64) []onnxrt.Tensor {
	res := make([]onnxrt.Tensor, len(out))
	for i, t := range out {
		res[i] = t
		if d, ok := t.Data.([]float32); ok {
			nd := make([]float32, len(d))
			for j, v := range d {
				nd[j] = v + float32(s)
			}
			res[i].Data = nd
		}
	}
	return res
}

// flushInference sends every collector's window that saw traffic, and forgets collectors of
// bundles no longer served.
func (a *Agent) flushInference(ctx context.Context, served map[string]bool) {
	for _, w := range a.collectInference(served) {
		if err := a.SendTelemetry(ctx, telemetry.KindInference, w); err != nil && ctx.Err() == nil {
			a.log.Debug("inference telemetry not sent", "model", w.Model, "err", err)
		}
	}
}

// collectInference ends every collector's window and returns those that saw traffic.
func (a *Agent) collectInference(served map[string]bool) []telemetry.InferenceWindow {
	it := a.infTel
	it.mu.Lock()
	var windows []telemetry.InferenceWindow
	now := time.Now()
	for id, c := range it.collectors {
		w := c.Flush(now)
		if w.Requests > 0 || w.Labeled > 0 { // labels can come in a window after their predictions
			windows = append(windows, w)
			it.idle[id] = 0
			continue
		}
		// A collector is made when its model loads, before the switch; forget it only once it
		// has been neither served nor used for a while.
		if it.idle[id]++; !served[id] && it.idle[id] > 3 {
			delete(it.collectors, id)
			delete(it.refs, id)
			delete(it.idle, id)
		}
	}
	it.mu.Unlock()
	// Drift-triggered captures look at every window, whether it is sent now or held by the budget.
	for _, w := range windows {
		it.mu.Lock()
		ref := it.refs[w.Bundle]
		it.mu.Unlock()
		a.captureOnDrift(w, ref)
	}
	return windows
}
