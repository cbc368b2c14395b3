package deploy

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/deploy/stats"
)

// These tests measure the gates (figures in RESULTS.md; run with -v to see them). Every
// repetition is seeded, so the figures are reproducible.

// perTestAlpha is the level Step runs each test at with the default gates, 4 stages and every
// model gate under test: alpha / (4 stages * 3 evaluations * 7 gates).
const perTestAlpha = DefaultAlpha / (4 * DefaultEvaluations * 7)

func TestMeasureFalseAlarmRate(t *testing.T) {
	reps := 500
	if testing.Short() {
		reps = 100
	}
	alarms := map[string]int{}
	falseAlarms := 0
	for i := range reps {
		s := newSim(uint64(1000+i), 4, 2, 10)
		spec := testSpec()
		spec.Seed = int64(i + 1)
		r, err := New("r-good", spec, s.infos(), nil, s.now)
		if err != nil {
			t.Fatal(err)
		}
		s.run(t, r, 10*time.Second, 3*time.Hour)
		if r.State == Completed {
			continue
		}
		falseAlarms++
		d := lastDecisionOf(r, ActRollback, ActPause)
		if gs, ok := d.Inputs["gates"].([]GateResult); ok {
			for _, g := range gs {
				alarms[g.Gate]++
			}
		} else {
			alarms[string(r.State)]++
		}
	}
	rate := float64(falseAlarms) / float64(reps)
	t.Logf("false-alarm rate on a good release: %d of %d rollouts (%.1f%%); 4 stages, 3 looks each, 80 devices; by gate: %v",
		falseAlarms, reps, 100*rate, alarms)
	if rate > 0.05 {
		t.Fatalf("false-alarm rate %.3f > 0.05", rate)
	}
}

func lastDecisionOf(r *Rollout, actions ...string) Decision {
	for i := len(r.Decisions) - 1; i >= 0; i-- {
		if slices.Contains(actions, r.Decisions[i].Action) {
			return r.Decisions[i]
		}
	}
	return Decision{}
}

// The tests alone, without the absolute floors, under the null: splitting alpha across the looks
// keeps the chance of any false alarm in a stage near alpha; not splitting it does not.
func TestMeasureLookSplitting(t *testing.T) {
	const reps, n, looks = 4000, 200, DefaultEvaluations
	rng := rand.New(rand.NewPCG(77, 77))
	split, unsplit := 0, 0
	for range reps {
		anySplit, anyUnsplit := false, false
		for range looks {
			mw := stats.MannWhitneyU(lat(rng, n, 1), lat(rng, n, 1))
			anySplit = anySplit || mw.P < DefaultAlpha/looks
			anyUnsplit = anyUnsplit || mw.P < DefaultAlpha
		}
		if anySplit {
			split++
		}
		if anyUnsplit {
			unsplit++
		}
	}
	fs, fu := float64(split)/reps, float64(unsplit)/reps
	t.Logf("Mann-Whitney alone under the null, %d looks of %d vs %d samples, %d stages: any alarm in %.2f%% of stages with alpha/%d per look, %.2f%% with alpha per look",
		looks, n, n, reps, 100*fs, looks, 100*fu)
	if fs > 0.06 {
		t.Fatalf("split looks alarm in %.3f of stages", fs)
	}
}

type delay struct {
	detectedAt []int // samples per side at first failure; -1 when never
}

func (d delay) summary(t *testing.T, what string, minSamples int) {
	var found []int
	atMin := 0
	for _, n := range d.detectedAt {
		if n >= 0 {
			found = append(found, n)
			if n <= minSamples {
				atMin++
			}
		}
	}
	slices.Sort(found)
	q := func(p float64) int {
		if len(found) == 0 {
			return -1
		}
		return found[min(len(found)-1, int(math.Ceil(p*float64(len(found))))-1)]
	}
	t.Logf("%s: detected in %d of %d; samples needed per side (no min_samples floor): median %d, p90 %d, p99 %d, max %d; power at min_samples=%d: %.1f%%",
		what, len(found), len(d.detectedAt), q(0.5), q(0.9), q(0.99), q(1), minSamples, 100*float64(atMin)/float64(len(d.detectedAt)))
}

// Samples needed by the latency gate to catch a 3x slowdown (latencies lognormal, median 20 ms,
// sigma 0.5), at the per-test level Step uses.
func TestMeasureLatencyDelay(t *testing.T) {
	const reps, step, limit = 500, 5, 1000
	one := 1
	l := Gates{MinSamples: &one}.limits()
	var d delay
	for i := range reps {
		s := newSim(uint64(5000+i), 1, 1, 1)
		s.latencyFactor = 3
		var c, b []float64
		found := -1
		for n := step; n <= limit && found < 0; n += step {
			for range step {
				c = append(c, s.latency(true, "amd64"))
				b = append(b, s.latency(false, "amd64"))
			}
			if latencyGate("latency", Window{LatenciesMS: c}, Window{LatenciesMS: b}, l, perTestAlpha).Verdict == Fail {
				found = n
			}
		}
		d.detectedAt = append(d.detectedAt, found)
	}
	d.summary(t, "3x latency", DefaultMinSamples)
	for _, n := range d.detectedAt {
		if n < 0 || n > DefaultMinSamples {
			t.Fatalf("3x latency needed %d samples", n)
		}
	}
}

// Samples needed by the output-shift gate to catch a 10% output shift: 10% of the outputs move to
// a different region (so the KS distance to the reference tends to 0.10), reference of 5,000.
func TestMeasureOutputShiftDelay(t *testing.T) {
	const reps, step, limit = 500, 25, 5000
	l := Gates{}.limits()
	var d delay
	for i := range reps {
		s := newSim(uint64(9000+i), 1, 1, 1)
		s.outputShift = 0.10
		var outs []float64
		found := -1
		for n := step; n <= limit && found < 0; n += step {
			for range step {
				outs = append(outs, s.output(true))
			}
			if n < DefaultMinSamples {
				continue
			}
			score := &Score{Value: stats.KSDistance(outs, s.ref), Samples: int64(n), RefSamples: int64(len(s.ref))}
			if outputShiftGate(score, l, perTestAlpha).Verdict == Fail {
				found = n
			}
		}
		d.detectedAt = append(d.detectedAt, found)
	}
	d.summary(t, "10% output shift", DefaultMinSamples)
	for _, n := range d.detectedAt {
		if n < 0 {
			t.Fatal("a 10% output shift went undetected within 5000 samples")
		}
	}
}

// End to end: bad releases through Step, with the sim's traffic (2 requests/s per device).
func TestMeasureEndToEndDetection(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(*sim)
	}{
		{"3x latency", func(s *sim) { s.latencyFactor = 3 }},
		{"10% output shift", func(s *sim) { s.outputShift = 0.10 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			const reps = 100
			caught, atStage0, leaked := 0, 0, 0
			var secs, samples []float64
			for i := range reps {
				s := newSim(uint64(20000+i), 4, 2, 10)
				c.setup(s)
				spec := testSpec()
				spec.Seed = int64(i + 1)
				r, err := New("r-bad", spec, s.infos(), nil, s.now)
				if err != nil {
					t.Fatal(err)
				}
				s.run(t, r, 10*time.Second, 3*time.Hour)
				d := lastDecisionOf(r, ActRollback)
				if r.State != RolledBack || d.Action == "" {
					continue
				}
				caught++
				if d.Stage == 0 {
					atStage0++
				}
				for _, rec := range r.Devices {
					if _, sent := s.assigned[rec.Device]; sent && rec.Stage > d.Stage {
						leaked++
					}
				}
				secs = append(secs, d.At.Sub(r.Stages[d.Stage].BakeStart).Seconds())
				for _, g := range d.Inputs["gates"].([]GateResult) {
					switch g.Gate {
					case "latency", "self_latency":
						samples = append(samples, float64(g.Inputs["canary_samples"].(int)))
					case "output_shift":
						samples = append(samples, float64(g.Inputs["samples"].(int64)))
					}
				}
			}
			slices.Sort(secs)
			slices.Sort(samples)
			med := func(xs []float64) float64 {
				if len(xs) == 0 {
					return math.NaN()
				}
				return xs[len(xs)/2]
			}
			t.Logf("%s end to end: caught %d of %d, at the first stage %d, devices beyond the failing stage that got the bundle: %d; median time from bake start %.0fs (max %.0fs), median canary samples at detection %.0f",
				c.name, caught, reps, atStage0, leaked, med(secs), secs[len(secs)-1], med(samples))
			if caught != reps || leaked != 0 {
				t.Fatalf("caught %d of %d, leaked %d", caught, reps, leaked)
			}
		})
	}
}
