package updater

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/infer"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

// TestWarmUpBeforeSmokeTest installs a real bundle with --ep tensorrt on this machine's ONNX
// Runtime: the session falls back to CPU (loudly: the served model says why), the TensorRT
// engine cache is the slot's own folder, and the warm-up inference is recorded in step loading
// before the smoke test's step (and deadline) begins. The order is read from the persisted
// states the updater reported, not from timing.
func TestWarmUpBeforeSmokeTest(t *testing.T) {
	fleettest.Models(t) // ORT and the models, or a skip (a failure in CI)
	ctx := context.Background()
	k := fleettest.NewKeys(t)
	path, id := fleettest.BuildBundle(t, k, "hello_deepa.onnx", "wake", "1.0.0")
	verifiers := []bundle.Verifier{k.Release.Verifier()}

	// The bundle sits in the standby slot, so activating it is the rollback path (no download).
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	b, err := bundle.ExtractTo(ctx, f, src, verifiers, bundle.Limits{})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, bundle.ManifestName), b.ManifestBytes, 0o600)
	os.WriteFile(filepath.Join(src, bundle.SignatureName), b.Signature, 0o600)
	data := t.TempDir()
	dir := filepath.Join(data, "models", "wake")
	if err := installSlot(src, filepath.Join(dir, "slot-b"), b.Manifest, nil); err != nil {
		t.Fatal(err)
	}
	st, _ := json.Marshal(State{Model: "wake", Step: StepCommitted, Standby: &Slot{Name: "b", Bundle: id, Version: "1.0.0"}})
	if err := os.WriteFile(filepath.Join(dir, "state.json"), st, 0o600); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var reports []State
	srv := infer.NewServer("test")
	u, err := New(data, "wake", Deps{
		Fetcher:   &Fetcher{Dir: t.TempDir()},
		Verifiers: func() []bundle.Verifier { return verifiers },
		Server:    srv,
		LoadOpts:  onnxrt.Options{ExecutionProvider: onnxrt.ProviderTensorRT, IntraOpThreads: 1},
		Report: func(s State) {
			mu.Lock()
			reports = append(reports, s)
			mu.Unlock()
		},
		Logger: fleettest.Quiet(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	u.SetTarget(&Target{Bundle: id, Version: "1.0.0", Generation: 1, Bake: time.Hour})
	for i := 0; i < 10 && u.State().Step != StepBaking; i++ {
		if _, err := u.step(ctx); err != nil {
			t.Fatalf("step %s: %v", u.State().Step, err)
		}
	}
	if got := u.State(); got.Step != StepBaking || got.Active == nil || got.Active.Name != "b" {
		t.Fatalf("state %+v, want baking on slot b", got)
	}

	mu.Lock()
	defer mu.Unlock()
	warmed := slices.IndexFunc(reports, func(s State) bool { return !s.WarmedUp.IsZero() })
	smoke := slices.IndexFunc(reports, func(s State) bool { return s.Step == StepSmokeTest })
	var steps []string
	for _, r := range reports {
		steps = append(steps, r.Step+map[bool]string{true: "+warmed", false: ""}[!r.WarmedUp.IsZero()])
	}
	switch {
	case warmed < 0:
		t.Errorf("no reported state records a warm-up: %v", steps)
	case smoke < 0:
		t.Errorf("no smoke test reported: %v", steps)
	case reports[warmed].Step != StepLoading || warmed > smoke:
		t.Errorf("the warm-up must be recorded in step loading, before the smoke test: %v", steps)
	case reports[smoke].WarmedUp.IsZero():
		t.Errorf("the smoke test started without the warm-up: %v", steps)
	}

	cache := filepath.Join(dir, "slot-b", TensorRTCacheName)
	if fi, err := os.Stat(cache); err != nil || !fi.IsDir() {
		t.Errorf("TensorRT engine cache %s: %v", cache, err)
	}
	po := onnxrt.TensorRTProviderOptions(u.loadOptions(u.slotDir("b")))
	if po["trt_engine_cache_enable"] != "1" || po["trt_engine_cache_path"] != cache || po["trt_timing_cache_path"] != cache {
		t.Errorf("TensorRT provider options %v, want the engine and timing caches in %s", po, cache)
	}
	if po := onnxrt.TensorRTProviderOptions(u.loadOptions(u.slotDir("a"))); po["trt_engine_cache_path"] == cache {
		t.Error("slot a shares slot b's engine cache")
	}

	m, ok := srv.Get("wake")
	if !ok {
		t.Fatal("the model is not served")
	}
	if !slices.Contains(onnxrt.AvailableProviders(), onnxrt.ProviderTensorRT) {
		if m.Provider() != onnxrt.ProviderCPU || !strings.Contains(m.FallbackReason(), "tensorrt unavailable") {
			t.Errorf("provider %q, fallback %q: want cpu and a reason naming tensorrt", m.Provider(), m.FallbackReason())
		}
	}
}
