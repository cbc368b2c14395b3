package controlplane_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/telemetry"
)

// inferID calls the agent's local OIP API with a request id and returns the top-1 class of the
// first output (argmax over the last axis; for one value, value > 0.5) and the number of classes.
func inferID(t *testing.T, addr, model, id string, in []onnxrt.Tensor) (class, classes int) {
	t.Helper()
	req := oip.Request{ID: id}
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
	var out oip.Response
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&out) != nil || len(out.Outputs) == 0 || out.ID != id {
		t.Fatalf("infer %s: status %d, response %+v", id, resp.StatusCode, out)
	}
	var vals []float64
	if err := json.Unmarshal(out.Outputs[0].Data, &vals); err != nil || len(vals) == 0 {
		t.Fatalf("output %s: %v", out.Outputs[0].Data, err)
	}
	k := len(vals)
	if sh := out.Outputs[0].Shape; len(sh) > 0 && sh[len(sh)-1] > 0 && int(sh[len(sh)-1]) <= k {
		k = int(sh[len(sh)-1])
	}
	if k == 1 {
		if vals[0] > 0.5 {
			return 1, 2
		}
		return 0, 2
	}
	best := 0
	for i, v := range vals[:k] {
		if v > vals[best] {
			best = i
		}
	}
	return best, k
}

// TestFeedbackAccuracy: ground truth posted to the control plane reaches the device as a command,
// is matched to the predictions by request id, and comes back in the version's inference windows
// as correct of labeled.
func TestFeedbackAccuracy(t *testing.T) {
	models := fleettest.Models(t)
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	ag := fleettest.OTAAgent(t, cp, k, "dev-f", "line-a")
	addr := ag.ListenAddr(t)

	v1, id1 := fleettest.BuildBundle(t, k, "hello_deepa.onnx", "wake", "1.0.0")
	cp.Push(v1)
	fleettest.Eventually(t, 30*time.Second, "device registered", func() bool { _, ok := cp.Devices()["dev-f"]; return ok })
	assign(t, cp, "dev-f", "wake@1.0.0", "0s")
	waitModel(t, cp, "dev-f", "wake", "committed", func(a, s, _ string) bool { return a == id1 && s == updater.StepCommitted })

	modelBytes, _ := os.ReadFile(filepath.Join(models, "hello_deepa.onnx"))
	sess, err := onnxrt.NewSession(modelBytes, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	const n = 20
	inputs, _ := onnxrt.GenerateInputs(sess.Schema(), n, 7, nil)
	var entries []map[string]any
	for i, in := range inputs {
		id := fmt.Sprintf("fb-%d", i)
		class, classes := inferID(t, addr, "wake", id, in)
		label := class
		if i%2 == 1 {
			label = (class + 1) % classes // wrong on purpose
		}
		entries = append(entries, map[string]any{"device": "dev-f", "model": "wake", "id": id, "label": label})
	}
	entries = append(entries, map[string]any{"device": "dev-nope", "model": "wake", "id": "fb-0", "label": 0})

	var res struct {
		Accepted       int `json:"accepted"`
		UnknownDevices int `json:"unknown_devices"`
	}
	if code, body := cp.Do("POST", "/api/v1/feedback", entries, &res); code != http.StatusAccepted {
		t.Fatalf("feedback: %d %s", code, body)
	}
	if res.Accepted != n || res.UnknownDevices != 1 {
		t.Fatalf("feedback answer %+v, want %d accepted and 1 unknown device", res, n)
	}
	if code, body := cp.Do("POST", "/api/v1/feedback", map[string]any{"device": "dev-f"}, nil); code != http.StatusBadRequest {
		t.Fatalf("feedback with an object, not an array: %d %s", code, body)
	}
	if code, body := cp.Do("POST", "/api/v1/feedback", []map[string]any{{"device": "dev-f", "model": "wake"}}, nil); code != http.StatusBadRequest {
		t.Fatalf("feedback without id and label: %d %s", code, body)
	}

	var correct, labeled, requests uint64
	fleettest.Eventually(t, 60*time.Second, "labels counted in inference windows", func() bool {
		var list struct {
			Messages []struct {
				Body telemetry.InferenceWindow `json:"body"`
			} `json:"messages"`
		}
		if code, err := cp.Get("/api/v1/devices/dev-f/telemetry?kind=inference&limit=10000", &list); err != nil || code != 200 {
			return false
		}
		correct, labeled, requests = 0, 0, 0
		for _, m := range list.Messages {
			if m.Body.Bundle == id1 {
				correct += m.Body.Correct
				labeled += m.Body.Labeled
				requests += m.Body.Requests
			}
		}
		return labeled >= n
	})
	t.Logf("windows: %d requests, %d labeled, %d correct", requests, labeled, correct)
	if labeled != n || correct != n/2 {
		t.Fatalf("windows count %d correct of %d labeled, want %d of %d", correct, labeled, n/2, n)
	}
}
