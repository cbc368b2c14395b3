package controlplane_test

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/golden"
)

// infer calls the agent's local Open Inference Protocol API.
func infer(t *testing.T, addr, model string, in []onnxrt.Tensor) (*oip.Response, int, string) {
	t.Helper()
	req := oip.Request{ID: "req-1"}
	for _, x := range in {
		enc, err := oip.Encode(x)
		if err != nil {
			t.Fatal(err)
		}
		req.Inputs = append(req.Inputs, enc)
	}
	b, _ := json.Marshal(req)
	resp, err := http.Post("http://"+addr+"/v2/models/"+model+"/infer", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw bytes.Buffer
	raw.ReadFrom(resp.Body)
	if resp.StatusCode != 200 {
		return nil, resp.StatusCode, raw.String()
	}
	var out oip.Response
	if err := json.Unmarshal(raw.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	return &out, 200, ""
}

func servedBundle(t *testing.T, addr, model string) string {
	resp, err := http.Get("http://" + addr + "/v2/models/" + model)
	if err != nil || resp.StatusCode != 200 {
		return ""
	}
	defer resp.Body.Close()
	var meta struct {
		Parameters struct{ Bundle string } `json:"parameters"`
	}
	json.NewDecoder(resp.Body).Decode(&meta)
	return meta.Parameters.Bundle
}

func waitModel(t *testing.T, cp *fleettest.ControlPlane, dev, model, what string, cond func(active, state, reason string) bool) {
	t.Helper()
	fleettest.Eventually(t, 90*time.Second, dev+" "+model+": "+what, func() bool {
		m := cp.Model(dev, model)
		return cond(m.Active, m.State, m.Reason)
	})
}

func assign(t *testing.T, cp *fleettest.ControlPlane, dev, ref, bake string) {
	t.Helper()
	if code, body := cp.Do("PUT", "/api/v1/devices/"+dev+"/desired", map[string]string{"bundle": ref, "bake": bake}, nil); code != 200 {
		t.Fatalf("assign %s to %s: %d %s", ref, dev, code, body)
	}
}

// TestOTALifecycle: a real model is installed and serves what ONNX Runtime computes directly; a
// v2 whose smoke test fails is refused with v1 still serving; a v3 that errors during bake is
// reverted by the device itself.
func TestOTALifecycle(t *testing.T) {
	models := fleettest.Models(t)
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	ag := fleettest.OTAAgent(t, cp, k, "dev-1", "line-a", "--fault", "bundle=wake@3.0.0,errors=1")
	addr := ag.ListenAddr(t)

	v1, id1 := fleettest.BuildBundle(t, k, "hello_deepa.onnx", "wake", "1.0.0")
	cp.Push(v1)
	fleettest.Eventually(t, 30*time.Second, "device registered", func() bool { _, ok := cp.Devices()["dev-1"]; return ok })
	assign(t, cp, "dev-1", "wake@1.0.0", "1s")
	waitModel(t, cp, "dev-1", "wake", "v1 committed", func(a, s, _ string) bool { return a == id1 && s == updater.StepCommitted })

	// The device answers what ONNX Runtime answers on the same input.
	modelBytes, _ := os.ReadFile(filepath.Join(models, "hello_deepa.onnx"))
	sess, err := onnxrt.NewSession(modelBytes, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	inputs, _ := onnxrt.GenerateInputs(sess.Schema(), 3, 42, nil)
	for _, in := range inputs {
		want, err := sess.Run(t.Context(), in)
		if err != nil {
			t.Fatal(err)
		}
		got, code, body := infer(t, addr, "wake", in)
		if code != 200 {
			t.Fatalf("infer: %d %s", code, body)
		}
		if got.ID != "req-1" || got.ModelVersion != "1.0.0" {
			t.Fatalf("response id/version: %+v", got)
		}
		var vals []float64
		json.Unmarshal(got.Outputs[0].Data, &vals)
		w, _ := want[0].Float64s()
		for i := range w {
			if math.Abs(w[i]-vals[i]) > 1e-6 {
				t.Fatalf("device output %v, ORT directly %v", vals, w)
			}
		}
	}

	// v2: correctly signed, but its golden outputs do not match its model.
	v2, id2 := fleettest.RebuildWith(t, k, v1, "2.0.0", func(path string, data []byte) []byte {
		if path != golden.FileName {
			return data
		}
		g, _ := golden.Parse(data)
		for ci := range g.Cases {
			for oi := range g.Cases[ci].Outputs {
				for i := range g.Cases[ci].Outputs[oi].Data {
					g.Cases[ci].Outputs[oi].Data[i] += 0.5
				}
			}
		}
		b, _ := json.Marshal(g)
		return b
	})
	cp.Push(v2)
	assign(t, cp, "dev-1", "wake@2.0.0", "1s")
	waitModel(t, cp, "dev-1", "wake", "v2 refused by its smoke test", func(a, s, r string) bool {
		return a == id1 && s == updater.StepFailed && r == updater.ReasonSmoke
	})
	if got := servedBundle(t, addr, "wake"); got != id1 {
		t.Fatalf("serving %s after a failed smoke test, want v1 %s", got, id1)
	}
	if cp.Model("dev-1", "wake").Target != id2 {
		t.Fatalf("report does not name the refused target")
	}

	// v3 installs and passes its smoke test but fails live requests during bake.
	v3, id3 := fleettest.RebuildWith(t, k, v1, "3.0.0", nil)
	cp.Push(v3)
	assign(t, cp, "dev-1", "wake@3.0.0", "60s")
	waitModel(t, cp, "dev-1", "wake", "v3 baking", func(a, s, _ string) bool { return a == id3 && s == updater.StepBaking })
	failed := 0
	fleettest.Eventually(t, 60*time.Second, "v3 reverted during bake", func() bool {
		if _, code, _ := infer(t, addr, "wake", inputs[0]); code != 200 {
			failed++
		}
		m := cp.Model("dev-1", "wake")
		return m.Active == id1 && m.State == updater.StepReverted && m.Reason == updater.ReasonBake && m.Previous == id3
	})
	if failed == 0 {
		t.Fatal("no request failed during the bad bake: the fault was not exercised")
	}
	if got := servedBundle(t, addr, "wake"); got != id1 {
		t.Fatalf("serving %s after revert, want %s", got, id1)
	}
	if _, code, body := infer(t, addr, "wake", inputs[0]); code != 200 {
		t.Fatalf("v1 does not serve after the revert: %d %s", code, body)
	}
}

// TestOTAResumeAfterKill: an agent killed mid-download finishes without fetching again the
// blocks it had verified (counted by the control plane).
func TestOTAResumeAfterKill(t *testing.T) {
	fleettest.Models(t)
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}, BundleBytesPerSecond: 1 << 20})
	ag := fleettest.OTAAgent(t, cp, k, "dev-r", "g")
	path, id := fleettest.BuildBundle(t, k, "ocr_det.onnx", "det", "1.0.0")
	cp.Push(path)
	fleettest.Eventually(t, 30*time.Second, "device registered", func() bool { _, ok := cp.Devices()["dev-r"]; return ok })
	st, _ := os.Stat(path)
	total := (st.Size() + 65535) / 65536 // a bound on the bundle's blocks, payload files only
	assign(t, cp, "dev-r", "det@1.0.0", "0s")
	fleettest.Eventually(t, 60*time.Second, "a third of the download", func() bool { return cp.Metric("edgefleet_bundle_blocks_sent_total") >= float64(total/3) })
	ag.Kill()
	sentBefore := cp.Metric("edgefleet_bundle_blocks_sent_total")
	ag.Start(t)
	waitModel(t, cp, "dev-r", "det", "installed after resume", func(a, s, _ string) bool { return a == id && s == updater.StepCommitted })
	sent := cp.Metric("edgefleet_bundle_blocks_sent_total")
	t.Logf("resume: %d blocks in the bundle at most, %.0f sent before the kill, %.0f in all", total, sentBefore, sent)
	// Without resume the second attempt alone would need every block again: total+sentBefore.
	// With it, at most one window (16) in flight at the kill is lost, plus re-sent heads.
	if sent > float64(total)+16+8 {
		t.Fatalf("%.0f blocks sent for a %d-block bundle: verified blocks were fetched again", sent, total)
	}
}

func readModel(t *testing.T) []byte {
	b, err := os.ReadFile(filepath.Join(fleettest.Models(t), "hello_deepa.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
