package controlplane_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/golden"
)

// TestOTACrashAtEveryStep kills the agent (SIGKILL, right after the step is persisted) at every
// step of the install lifecycle, taken from updater.Steps so a new step cannot be missed, and checks
// that after a restart it serves a verified model and reports the truth.
func TestOTACrashAtEveryStep(t *testing.T) {
	fleettest.Models(t)
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	v1, id1 := fleettest.BuildBundle(t, k, "hello_deepa.onnx", "wake", "1.0.0")
	good, idGood := fleettest.RebuildWith(t, k, v1, "2.0.0", nil)
	bad, _ := fleettest.RebuildWith(t, k, v1, "2.1.0", func(path string, data []byte) []byte {
		if path != golden.FileName {
			return data
		}
		g, _ := golden.Parse(data)
		g.Cases[0].Outputs[0].Data[0] += 1
		b, _ := json.Marshal(g)
		return b
	})
	faulty, _ := fleettest.RebuildWith(t, k, v1, "3.0.0", nil)
	for _, p := range []string{v1, good, bad, faulty} {
		cp.Push(p)
	}
	sess, err := onnxrt.Inspect(readModel(t))
	if err != nil {
		t.Fatal(err)
	}
	inputs, _ := onnxrt.GenerateInputs(sess, 1, 7, nil)

	covered := map[string]bool{}
	for _, step := range updater.Steps {
		covered[step] = true
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			dev := "crash-" + strings.ReplaceAll(step, "_", "-")
			ag := fleettest.OTAAgent(t, cp, k, dev, "crash", "--fault", "bundle=wake@3.0.0,errors=1")
			fleettest.Eventually(t, 30*time.Second, "registered", func() bool { _, ok := cp.Devices()[dev]; return ok })
			assign(t, cp, dev, "wake@1.0.0", "0s")
			waitModel(t, cp, dev, "wake", "v1 committed", func(a, s, _ string) bool { return a == id1 && s == updater.StepCommitted })
			ag.Stop()

			target, bake, wantActive, wantState := "wake@2.0.0", "1s", idGood, updater.StepCommitted
			switch step {
			case updater.StepFailed:
				target, wantActive, wantState = "wake@2.1.0", id1, updater.StepFailed
			case updater.StepReverting, updater.StepReverted:
				target, bake, wantActive, wantState = "wake@3.0.0", "60s", id1, updater.StepReverted
			}
			ag.StartWith(t, "--crash-at", step)
			addr := ag.ListenAddrAfter(t, 2)
			assign(t, cp, dev, target, bake)
			deadline := time.Now().Add(60 * time.Second)
			for exited := false; !exited; {
				if time.Now().After(deadline) {
					t.Fatalf("agent never reached step %s", step)
				}
				if step == updater.StepReverting || step == updater.StepReverted {
					tryInfer(addr, "wake", inputs[0]) // traffic that fails during the bad bake
				}
				exited = ag.WaitExit(200 * time.Millisecond)
			}
			if !strings.Contains(ag.Log(), "crash point reached") {
				t.Fatalf("agent exited but not at the crash point")
			}
			ag.Start(t)
			addr = ag.ListenAddrAfter(t, 3)
			waitModel(t, cp, dev, "wake", "recovered to "+wantState, func(a, s, _ string) bool { return a == wantActive && s == wantState })
			if got := servedBundle(t, addr, "wake"); got != wantActive {
				t.Fatalf("serves %q but reports %q", got, wantActive)
			}
			if _, code, body := infer(t, addr, "wake", inputs[0]); code != 200 && wantActive != "" {
				// the faulty bundle is never the one left active, so requests must succeed
				t.Fatalf("recovered model does not serve: %d %s", code, body)
			}
		})
	}
	for _, s := range []string{updater.StepDownloading, updater.StepSwitching, updater.StepBaking} {
		if !covered[s] {
			t.Fatalf("step %s not covered", s)
		}
	}
}

// tryInfer sends one request and ignores the outcome (the agent may be dying).
func tryInfer(addr, model string, in []onnxrt.Tensor) {
	req := oip.Request{}
	for _, x := range in {
		enc, _ := oip.Encode(x)
		req.Inputs = append(req.Inputs, enc)
	}
	b, _ := json.Marshal(req)
	c := http.Client{Timeout: 2 * time.Second}
	if resp, err := c.Post("http://"+addr+"/v2/models/"+model+"/infer", "application/json", bytes.NewReader(b)); err == nil {
		resp.Body.Close()
	}
}
