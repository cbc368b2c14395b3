package controlplane_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/fleettest"
)

// TestGroupSettings: a group marked production through PUT /api/v1/groups/{group} refuses
// bundles outside the production stage on every path (device assignment, group assignment,
// rollout), takes them once promoted, and capture policies are validated and kept.
func TestGroupSettings(t *testing.T) {
	fleettest.Models(t)
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	path, id := fleettest.BuildBundle(t, k, "hello_deepa.onnx", "wake", "1.0.0")
	cp.Push(path)
	fleettest.OTAAgent(t, cp, k, "prod-1", "prod")
	fleettest.Eventually(t, 20*time.Second, "prod-1 online", func() bool { return cp.Devices()["prod-1"].Online })

	settings := []struct {
		name string
		body any
		code int
	}{
		{"production on", map[string]any{"production": true}, 200},
		{"capture with defaults", map[string]any{"capture": map[string]any{"enabled": true}}, 200},
		{"empty patch", map[string]any{}, 400},
		{"misspelt field", map[string]any{"prod": true}, 400},
		{"retention not a duration", map[string]any{"capture": map[string]any{"enabled": true, "retention": "a month"}}, 422},
		{"retention too long", map[string]any{"capture": map[string]any{"enabled": true, "retention": "10000h"}}, 422},
		{"negative max_samples", map[string]any{"capture": map[string]any{"enabled": true, "max_samples": -1}}, 422},
	}
	for _, c := range settings {
		if code, body := cp.Do("PUT", "/api/v1/groups/prod", c.body, nil); code != c.code {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.code)
		}
	}
	if code, _ := cp.Do("PUT", "/api/v1/groups/Bad%20Name", map[string]any{"production": true}, nil); code != 422 {
		t.Errorf("invalid group name: %d, want 422", code)
	}
	var g struct {
		Devices  int
		Settings struct {
			Production bool
			Capture    struct {
				Enabled    bool
				Retention  string
				MaxSamples int `json:"max_samples"`
			}
		}
	}
	if code, body := cp.Do("GET", "/api/v1/groups/prod", nil, &g); code != 200 || !g.Settings.Production ||
		!g.Settings.Capture.Enabled || g.Settings.Capture.Retention != "720h0m0s" || g.Settings.Capture.MaxSamples != 1000 || g.Devices != 1 {
		t.Fatalf("group after settings: %d %s", code, body)
	}
	// A group with settings but no devices yet exists; one with neither does not.
	if code, _ := cp.Do("PUT", "/api/v1/groups/future", map[string]any{"production": true}, nil); code != 200 {
		t.Fatalf("settings for an empty group: %d", code)
	}
	if code, _ := cp.Do("GET", "/api/v1/groups/future", nil, nil); code != 200 {
		t.Errorf("configured empty group: %d, want 200", code)
	}
	if code, _ := cp.Do("GET", "/api/v1/groups/nowhere", nil, nil); code != 404 {
		t.Errorf("unknown group: %d, want 404", code)
	}

	rollout := map[string]any{"bundle": id, "target": map[string]any{"groups": []string{"prod"}}, "stages": []any{map[string]any{"percent": 100}}}
	refusals := []struct {
		name, method, path string
		body               any
	}{
		{"device assignment", "PUT", "/api/v1/devices/prod-1/desired", map[string]string{"bundle": id}},
		{"group assignment", "PUT", "/api/v1/groups/prod/desired", map[string]string{"bundle": id}},
		{"rollout", "POST", "/api/v1/rollouts", rollout},
	}
	for _, r := range refusals {
		if code, body := cp.Do(r.method, r.path, r.body, nil); code != 422 || !strings.Contains(body, `"code":"not_production"`) {
			t.Errorf("%s of a staging bundle to a production group: %d %s, want 422 not_production", r.name, code, body)
		}
	}
	if code, body := cp.Do("PUT", "/api/v1/bundles/"+id+"/stage", map[string]string{"stage": "production"}, nil); code != 200 {
		t.Fatalf("promote: %d %s", code, body)
	}
	if code, body := cp.Do("PUT", "/api/v1/devices/prod-1/desired", map[string]string{"bundle": id}, nil); code != 200 {
		t.Fatalf("device assignment after promotion: %d %s", code, body)
	}
	fleettest.Eventually(t, 30*time.Second, "prod-1 runs the promoted bundle", func() bool {
		return cp.Model("prod-1", "wake").Active == id
	})
	// The CLI verb turns production off; then a staging bundle goes to the group again.
	cli := exec.Command(filepath.Join(fleettest.Binaries(t), "controlplane"), "--server", "http://"+cp.Info.HTTPAddr, "--token", cp.Token,
		"groups", "set", "prod", "--production=false", "--capture=false")
	if out, err := cli.CombinedOutput(); err != nil {
		t.Fatalf("controlplane groups set: %v\n%s", err, out)
	}
	if cp.Do("GET", "/api/v1/groups/prod", nil, &g); g.Settings.Production || g.Settings.Capture.Enabled {
		t.Fatalf("after groups set: %+v", g.Settings)
	}
	p2, id2 := fleettest.RebuildWith(t, k, path, "1.1.0", nil)
	cp.Push(p2)
	if code, body := cp.Do("PUT", "/api/v1/groups/prod/desired", map[string]string{"bundle": id2}, nil); code != 200 {
		t.Fatalf("staging bundle to a group no longer production: %d %s", code, body)
	}
}
