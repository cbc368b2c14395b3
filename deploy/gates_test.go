package deploy

import (
	"math/rand/v2"
	"testing"
)

func lat(rng *rand.Rand, n int, factor float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = (10 + rng.ExpFloat64()*10) * factor
	}
	return out
}

func scaled(v []float64, by float64) []float64 {
	for i := range v {
		v[i] *= by
	}
	return v
}

func gate(rs []GateResult, name string) GateResult {
	for _, r := range rs {
		if r.Gate == name {
			return r
		}
	}
	return GateResult{}
}

func TestModelGates(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	const alpha = 0.05 / 3
	ten := 10
	few := Gates{MinSamples: &ten}
	for _, c := range []struct {
		name string
		g    Gates
		m    Metrics
		gate string
		want Verdict
	}{
		{"error rate waits below min samples", Gates{}, Metrics{
			Canary:   Cohort{Devices: 1, Window: Window{Requests: 199, Errors: 50}},
			Baseline: Cohort{Devices: 5, Window: Window{Requests: 5000, Errors: 5}}}, "error_rate", Wait},
		{"error rate both zero passes", Gates{}, Metrics{
			Canary:   Cohort{Devices: 1, Window: Window{Requests: 500}},
			Baseline: Cohort{Devices: 5, Window: Window{Requests: 5000}}}, "error_rate", Pass},
		{"error rate from a zero baseline fails", Gates{}, Metrics{
			Canary:   Cohort{Devices: 1, Window: Window{Requests: 500, Errors: 25}},
			Baseline: Cohort{Devices: 5, Window: Window{Requests: 5000}}}, "error_rate", Fail},
		{"significant but under the floor passes", Gates{}, Metrics{
			Canary:   Cohort{Devices: 50, Window: Window{Requests: 1_000_000, Errors: 15_000}},
			Baseline: Cohort{Devices: 50, Window: Window{Requests: 1_000_000, Errors: 10_000}}}, "error_rate", Pass},
		{"over the floor but not significant passes", Gates{}, Metrics{
			Canary:   Cohort{Devices: 1, Window: Window{Requests: 200, Errors: 4}},
			Baseline: Cohort{Devices: 1, Window: Window{Requests: 200, Errors: 1}}}, "error_rate", Pass},
		{"no baseline cohort skips", Gates{}, Metrics{
			Canary: Cohort{Devices: 1, Window: Window{Requests: 500, Errors: 250}}}, "error_rate", Skip},
		{"3x latency fails", few, Metrics{
			Canary:   Cohort{Devices: 1, Window: Window{LatenciesMS: lat(rng, 50, 3)}},
			Baseline: Cohort{Devices: 1, Window: Window{LatenciesMS: lat(rng, 50, 1)}}}, "latency", Fail},
		{"same latency passes", few, Metrics{
			Canary:   Cohort{Devices: 1, Window: Window{LatenciesMS: lat(rng, 500, 1)}},
			Baseline: Cohort{Devices: 1, Window: Window{LatenciesMS: lat(rng, 500, 1)}}}, "latency", Pass},
		{"latency waits below min samples", Gates{}, Metrics{
			Canary:   Cohort{Devices: 1, Window: Window{LatenciesMS: lat(rng, 100, 3)}},
			Baseline: Cohort{Devices: 1, Window: Window{LatenciesMS: lat(rng, 500, 1)}}}, "latency", Wait},
		{"sub-millisecond 1.6x slowdown within the floor passes", few, Metrics{
			Canary:   Cohort{Devices: 1, Window: Window{LatenciesMS: scaled(lat(rng, 500, 1.6), 0.01)}},
			Baseline: Cohort{Devices: 1, Window: Window{LatenciesMS: scaled(lat(rng, 500, 1), 0.01)}}}, "latency", Pass},
		{"sub-millisecond 1.6x slowdown fails with no floor", Gates{MinSamples: &ten, P95LatencyFloorMS: new(0.0)}, Metrics{
			Canary:   Cohort{Devices: 1, Window: Window{LatenciesMS: scaled(lat(rng, 500, 1.6), 0.01)}},
			Baseline: Cohort{Devices: 1, Window: Window{LatenciesMS: scaled(lat(rng, 500, 1), 0.01)}}}, "latency", Fail},
		{"histogram p95 within the floor passes", Gates{}, Metrics{
			Canary:   Cohort{Devices: 1, Window: Window{Requests: 500, P95MS: 0.9}},
			Baseline: Cohort{Devices: 1, Window: Window{Requests: 500, P95MS: 0.3}}}, "latency", Pass},
		{"histogram p95 only", Gates{}, Metrics{
			Canary:   Cohort{Devices: 1, Window: Window{Requests: 500, P95MS: 90}},
			Baseline: Cohort{Devices: 1, Window: Window{Requests: 500, P95MS: 30}}}, "latency", Fail},
		{"output shift fails above max and critical", Gates{}, Metrics{
			Canary: Cohort{Devices: 1, OutputShift: &Score{Value: 0.12, Samples: 1000, RefSamples: 5000}}}, "output_shift", Fail},
		{"output shift above max within noise passes", Gates{}, Metrics{
			Canary: Cohort{Devices: 1, OutputShift: &Score{Value: 0.08, Samples: 250, RefSamples: 5000}}}, "output_shift", Pass},
		{"output shift waits", Gates{}, Metrics{
			Canary: Cohort{Devices: 1, OutputShift: &Score{Value: 0.5, Samples: 20}}}, "output_shift", Wait},
		{"output shift not measured skips", Gates{}, Metrics{Canary: Cohort{Devices: 1}}, "output_shift", Skip},
		{"input drift on both is informational", Gates{}, Metrics{
			Canary:   Cohort{Devices: 5, InputDrift: &Score{Value: 0.4, Samples: 2000}},
			Baseline: Cohort{Devices: 5, InputDrift: &Score{Value: 0.38, Samples: 2000}}}, "input_drift", Pass},
		{"input drift only on the canary fails", Gates{}, Metrics{
			Canary:   Cohort{Devices: 5, InputDrift: &Score{Value: 0.4, Samples: 2000}},
			Baseline: Cohort{Devices: 5, InputDrift: &Score{Value: 0.02, Samples: 2000}}}, "input_drift", Fail},
		{"accuracy drop fails", Gates{}, Metrics{
			Canary:   Cohort{Devices: 5, Correct: 850, Labeled: 1000},
			Baseline: Cohort{Devices: 5, Correct: 900, Labeled: 1000}}, "accuracy", Fail},
		{"small accuracy drop passes", Gates{}, Metrics{
			Canary:   Cohort{Devices: 5, Correct: 890, Labeled: 1000},
			Baseline: Cohort{Devices: 5, Correct: 900, Labeled: 1000}}, "accuracy", Pass},
		{"no ground truth skips", Gates{}, Metrics{
			Canary: Cohort{Devices: 5}, Baseline: Cohort{Devices: 5, Correct: 900, Labeled: 1000}}, "accuracy", Skip},
		{"self latency before/after fails", few, Metrics{Canary: Cohort{Devices: 2}, PerDevice: map[string]BeforeAfter{
			"a": {Before: Window{LatenciesMS: lat(rng, 40, 1)}, After: Window{LatenciesMS: lat(rng, 40, 3)}},
			"b": {Before: Window{LatenciesMS: lat(rng, 40, 1)}, After: Window{LatenciesMS: lat(rng, 40, 3)}},
		}}, "self_latency", Fail},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := gate(EvaluateModel(c.g, c.m, alpha), c.gate)
			if g.Verdict != c.want {
				t.Fatalf("%s: %s (%s), want %s", c.gate, g.Verdict, g.Reason, c.want)
			}
			if g.Reason == "" {
				t.Fatal("no reason")
			}
		})
	}
}

func TestEvaluateModelOrder(t *testing.T) {
	rs := EvaluateModel(Gates{}, Metrics{}, 0.05)
	if len(rs) != len(modelGates) {
		t.Fatalf("%d results", len(rs))
	}
	for i, r := range rs {
		if r.Gate != modelGates[i] {
			t.Fatalf("result %d is %s, want %s", i, r.Gate, modelGates[i])
		}
	}
}
