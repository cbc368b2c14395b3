package deploy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// The rollout of INTERFACE.md, as the API receives it.
const interfaceExample = `{"bundle": "wake@1.1.0",
 "target": {"groups": ["line-a", "line-b"], "selector": "arch=arm64"},
 "stages": [{"devices": 1, "bake": "30s"}, {"percent": 10, "bake": "5m", "approval": true}, {"percent": 100}],
 "gates": {"install_success_min": 0.95, "error_rate_max_diff": 0.01, "p95_latency_max_ratio": 1.5,
           "output_shift_max": 0.2, "input_drift_diff_max": 0.2, "min_samples": 200, "evaluations": 3},
 "rate": {"devices_per_minute": 1000, "max_in_flight": 100},
 "on_failure": "rollback"}`

func TestSpecJSON(t *testing.T) {
	var s Spec
	if err := json.Unmarshal([]byte(interfaceExample), &s); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.Stages[1].Bake.D() != 5*time.Minute || !s.Stages[1].Approval || s.Stages[0].Devices != 1 {
		t.Fatalf("stages %+v", s.Stages)
	}
	if *s.Gates.OutputShiftMax != 0.2 || *s.Gates.Evaluations != 3 || s.Gates.StallMax != nil {
		t.Fatalf("gates %+v", s.Gates)
	}
	if s.ModelName() != "wake" {
		t.Fatalf("model %q", s.ModelName())
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"bake":"5m0s"`) {
		t.Fatalf("bake not written as a duration string: %s", b)
	}
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil || back.Stages[0].Bake != s.Stages[0].Bake {
		t.Fatalf("round trip: %v %+v", err, back.Stages)
	}
}

func TestStageGatesOverride(t *testing.T) {
	one, two := 0.9, 50
	s := Spec{Gates: Gates{InstallSuccessMin: &one}, Stages: []Stage{{Percent: 100, Gates: &Gates{MinSamples: &two}}}}
	l := s.StageGates(0).limits()
	if l.installSuccessMin != 0.9 || l.minSamples != 50 || l.evaluations != DefaultEvaluations || l.alpha != DefaultAlpha {
		t.Fatalf("limits %+v", l)
	}
}

func TestValidate(t *testing.T) {
	neg := -1
	big := 1.5
	base := func() Spec {
		return Spec{Bundle: "b@1", Target: Target{Groups: []string{"g"}},
			Stages: []Stage{{Devices: 1}, {Percent: 10}, {Percent: 100}}}
	}
	for _, c := range []struct {
		name  string
		edit  func(*Spec)
		field string // "" means valid
	}{
		{"valid", func(*Spec) {}, ""},
		{"no bundle", func(s *Spec) { s.Bundle = "" }, "bundle"},
		{"no target", func(s *Spec) { s.Target = Target{} }, "target"},
		{"selector only", func(s *Spec) { s.Target = Target{Selector: "arch=arm64"} }, ""},
		{"bad selector", func(s *Spec) { s.Target.Selector = "arch in (a" }, "target.selector"},
		{"no stages", func(s *Spec) { s.Stages = nil }, "stages"},
		{"percent over 100", func(s *Spec) { s.Stages[1].Percent = 120 }, "stages[1].percent"},
		{"percent not increasing", func(s *Spec) { s.Stages[1].Percent = 100; s.Stages[2].Percent = 100 }, "stages[2].percent"},
		{"last not 100", func(s *Spec) { s.Stages = s.Stages[:2] }, "stages[1]"},
		{"both sizes", func(s *Spec) { s.Stages[0].Percent = 1 }, "stages[0]"},
		{"no size", func(s *Spec) { s.Stages[0].Devices = 0 }, "stages[0]"},
		{"negative bake", func(s *Spec) { s.Stages[0].Bake = Duration(-time.Second) }, "stages[0].bake"},
		{"unknown on_failure", func(s *Spec) { s.OnFailure = "panic" }, "on_failure"},
		{"pause on_failure", func(s *Spec) { s.OnFailure = "pause" }, ""},
		{"negative rate", func(s *Spec) { s.Rate.MaxInFlight = -1 }, "rate.max_in_flight"},
		{"negative stall_max", func(s *Spec) { s.Gates.StallMax = &neg }, "gates.stall_max"},
		{"stage gate out of range", func(s *Spec) { s.Stages[1].Gates = &Gates{InstallSuccessMin: &big} }, "stages[1].gates.install_success_min"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := base()
			c.edit(&s)
			err := s.Validate()
			if c.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), c.field+":") {
				t.Fatalf("got %v, want ErrInvalidSpec naming %s", err, c.field)
			}
		})
	}
}
