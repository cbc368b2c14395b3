package controlplane_test

import (
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

// TestRolloutPicksVariant: a model version shipped as two variants goes to each device as the
// variant that device can run; the rollout follows devices on that variant through its stages to
// completion; a version none of whose variants fits is refused with no_variant_fits.
func TestRolloutPicksVariant(t *testing.T) {
	f := startRolloutFleet(t, 4)
	variant := func(version, name string, req func(*bundle.Requirements)) string {
		p, id := fleettest.Rebuild(t, f.k, f.v1Path, func(in *bundle.BuildInput) {
			in.Version, in.Variant = version, name
			req(&in.Requirements)
		})
		f.cp.Push(p)
		return id
	}
	tooBig := func(r *bundle.Requirements) { r.PeakMemoryBytes = 1 << 50 } // a petabyte: no device has it
	fits := func(*bundle.Requirements) {}
	variant("2.0.0", "fp32", tooBig)
	small := variant("2.0.0", "int8", fits)

	id := f.create(t, `{"bundle": "wake@2.0.0", "target": {"groups": ["line-a", "line-b"]},
		"stages": [{"devices": 1, "bake": "1s"}, {"percent": 100, "bake": "1s"}]}`)
	f.waitState(t, id, "completed")
	f.waitAll(t, small, "every device on the variant it can run")

	variant("3.0.0", "fp32", tooBig)
	variant("3.0.0", "arm", func(r *bundle.Requirements) { r.Arch = []string{"arm64-not-here"} })
	code, body := f.cp.Do("POST", "/api/v1/rollouts", strings.NewReader(`{"bundle": "wake@3.0.0", "target": {"groups": ["line-a"]}, "stages": [{"percent": 100}]}`), nil)
	if code != 422 || !strings.Contains(body, `"code":"no_variant_fits"`) || !strings.Contains(body, "MiB of memory") {
		t.Errorf("rollout of a version no device can run: %d %s, want 422 no_variant_fits naming why", code, body)
	}
	code, body = f.cp.Do("PUT", "/api/v1/devices/"+f.devices[0]+"/desired", map[string]string{"bundle": "wake@3.0.0"}, nil)
	if code != 422 || !strings.Contains(body, `"code":"no_variant_fits"`) || !strings.Contains(body, "arm64-not-here") {
		t.Errorf("direct assignment of a version no variant of which fits: %d %s", code, body)
	}
	// GET by name@version answers with the default variant, the one the others derive from.
	if code, body := f.cp.Do("GET", "/api/v1/bundles/wake@2.0.0", nil, nil); code != 200 || !strings.Contains(body, `"variant":"fp32"`) {
		t.Errorf("a bare name@version stands for its default variant: %d %s", code, body)
	}
}
