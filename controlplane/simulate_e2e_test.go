package controlplane_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/telemetry"
)

// TestSimulatedFleet runs `agent simulate` (20 real agents in one process with generated traffic)
// against a control plane: all register in their groups, install a group assignment, and their
// inference telemetry is committed with every sequence number accounted for.
func TestSimulatedFleet(t *testing.T) {
	const n = 20
	fleettest.Models(t)
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	fleettest.Simulate(t, cp, cp.BrokerURL(), k, n, "--groups", "line-a=60%,line-b=40%", "--rate", "20")
	fleettest.Eventually(t, 60*time.Second, "simulated devices online in their groups", func() bool {
		groups := map[string]int{}
		for _, d := range cp.Devices() {
			if d.Online {
				groups[d.Group]++
			}
		}
		return groups["line-a"] == 12 && groups["line-b"] == 8
	})
	path, id := fleettest.BuildBundleRef(t, k, "hello_deepa.onnx", "wake", "1.0.0", 300)
	cp.Push(path)
	for _, g := range []string{"line-a", "line-b"} {
		if code, body := cp.Do("PUT", "/api/v1/groups/"+g+"/desired", map[string]string{"bundle": "wake@1.0.0"}, nil); code != 200 {
			t.Fatalf("assign %s: %d %s", g, code, body)
		}
	}
	fleettest.Eventually(t, 90*time.Second, "every simulated device serves the bundle", func() bool {
		for i := 1; i <= n; i++ {
			if m := cp.Model(fmt.Sprintf("sim-%05d", i), "wake"); m.Active != id || m.State != updater.StepCommitted {
				return false
			}
		}
		return true
	})
	// Inference windows flow and are committed; the accounting has no hole.
	lastWhy := ""
	defer func() {
		if t.Failed() {
			t.Log("last unmet:", lastWhy)
		}
	}()
	fleettest.Eventually(t, 30*time.Second, "inference telemetry from every device", func() bool {
		for i := 1; i <= n; i++ {
			var body struct {
				Messages []struct {
					Body json.RawMessage `json:"body"`
				} `json:"messages"`
				Accounting struct {
					Contiguous uint64 `json:"contiguous"`
					Pending    int    `json:"received_past_gap"`
				} `json:"accounting"`
			}
			cp.Do("GET", fmt.Sprintf("/api/v1/devices/sim-%05d/telemetry?kind=inference", i), nil, &body)
			if len(body.Messages) == 0 || body.Accounting.Contiguous == 0 {
				lastWhy = fmt.Sprintf("sim-%05d: %d inference messages, contiguous %d", i, len(body.Messages), body.Accounting.Contiguous)
				return false
			}
			var w telemetry.InferenceWindow
			json.Unmarshal(body.Messages[len(body.Messages)-1].Body, &w)
			if w.Requests == 0 || w.Bundle != id || w.Latency.Count == 0 || w.Drift == nil {
				lastWhy = fmt.Sprintf("sim-%05d: last window %+v", i, w)
				return false
			}
		}
		return true
	})

	// Fleet drift per group, merged from the devices' histograms: live inputs come from the
	// reference's distribution, so nothing drifts.
	var dv struct {
		Groups []struct {
			Group   string
			Devices int
			Report  struct {
				Drifted  bool
				Features []struct{ Feature string }
			}
		}
	}
	if code, body := cp.Do("GET", "/api/v1/drift?bundle=wake@1.0.0&since=10m", nil, &dv); code != 200 {
		t.Fatalf("drift: %d %s", code, body)
	}
	if len(dv.Groups) != 2 || dv.Groups[0].Devices == 0 || len(dv.Groups[0].Report.Features) == 0 {
		t.Fatalf("drift view: %+v", dv)
	}
	t.Logf("fleet drift: %+v", dv)
}
