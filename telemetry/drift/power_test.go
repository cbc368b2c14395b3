package drift

// Monte Carlo checks of the decisions: false alarms on data from the reference itself, power
// against a mean shift and a variance change, and detection delay. Every figure comes from a
// fixed seed; run with -v to print them (RESULTS.md records them and the command).

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

const (
	refSamples = 20_000 // reference set size
	windows    = 1000   // windows per false-alarm / power figure
	windowSize = 500
	alpha      = 0.01
)

// drawFn draws one sample of every feature.
type drawFn func(rng *rand.Rand, out []float64)

// detectionRate is the share of trials windows of n samples that Compare calls drifted.
func detectionRate(t testing.TB, ref *Reference, draw drawFn, n, trials int, opt Options, seed uint64) float64 {
	rng := rand.New(rand.NewPCG(seed, uint64(n)))
	w, err := NewWindow(ref)
	if err != nil {
		t.Fatal(err)
	}
	sample := make([]float64, len(ref.Features))
	hits := 0
	for range trials {
		for range n {
			draw(rng, sample)
			_ = w.AddSample(sample)
		}
		rep, err := Compare(ref, w.Flush(), opt)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Drifted {
			hits++
		}
	}
	return float64(hits) / float64(trials)
}

// gaussian draws feature 0 from N(mean, sd) and any others from N(0, 1).
func gaussian(mean, sd float64) drawFn {
	return func(rng *rand.Rand, out []float64) {
		out[0] = mean + sd*rng.NormFloat64()
		for i := 1; i < len(out); i++ {
			out[i] = rng.NormFloat64()
		}
	}
}

func TestFalseAlarmRate(t *testing.T) {
	for _, features := range []int{1, 4, MaxFeatures} {
		t.Run(fmt.Sprintf("%d features", features), func(t *testing.T) {
			ref := normalReference(t, rand.New(rand.NewPCG(100, uint64(features))), features, refSamples)
			far := detectionRate(t, ref, gaussian(0, 1), windowSize, windows, Options{Alpha: alpha}, 200)
			t.Logf("RESULT false alarm: %d feature(s), N(0,1), %d windows of %d, alpha %.2f: %.1f%%", features, windows, windowSize, alpha, 100*far)
			if far > 0.02 {
				t.Errorf("false-alarm rate %.3f > 0.02", far)
			}
		})
	}
}

func TestPower(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mean, sd  float64
		features  int
		assertPow bool
	}{
		{"mean +0.5 sigma", 0.5, 1, 1, true},
		{"sigma x1.5", 0, 1.5, 1, true},
		{"mean +0.5 sigma, 1 of 16 features", 0.5, 1, MaxFeatures, true},
		{"sigma x1.5, 1 of 16 features", 0, 1.5, MaxFeatures, true},
		{"mean +0.25 sigma", 0.25, 1, 1, false},
		{"sigma x1.2", 0, 1.2, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := normalReference(t, rand.New(rand.NewPCG(100, uint64(tc.features))), tc.features, refSamples)
			p := detectionRate(t, ref, gaussian(tc.mean, tc.sd), windowSize, windows, Options{Alpha: alpha}, 300)
			t.Logf("RESULT power: %s, %d windows of %d, alpha %.2f: %.1f%%", tc.name, windows, windowSize, alpha, 100*p)
			if tc.assertPow && p < 0.95 {
				t.Errorf("power %.3f < 0.95", p)
			}
		})
	}
}

// TestDetectionDelay finds the smallest window (in samples, to the nearest 5) at which a shift
// is detected in at least 95% of 400 windows. MinSamples is lowered to 1 so the figure is the
// statistics' own; in service the delay is at least DefaultMinSamples.
func TestDetectionDelay(t *testing.T) {
	ref := normalReference(t, rand.New(rand.NewPCG(100, 1)), 1, refSamples)
	opt := Options{Alpha: alpha, MinSamples: 1}
	for _, tc := range []struct {
		name     string
		mean, sd float64
		max      int
	}{
		{"mean +0.5 sigma", 0.5, 1, 400},
		{"mean +0.25 sigma", 0.25, 1, 1200},
		{"sigma x1.5", 0, 1.5, 600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const trials = 400
			lo, hi := 5, 5000
			for hi-lo > 5 {
				mid := (lo + hi) / 2
				if detectionRate(t, ref, gaussian(tc.mean, tc.sd), mid, trials, opt, 400) >= 0.95 {
					hi = mid
				} else {
					lo = mid
				}
			}
			t.Logf("RESULT detection delay: %s, alpha %.2f, >=95%% of %d windows: %d samples", tc.name, alpha, trials, hi)
			if hi > tc.max {
				t.Errorf("delay %d samples > %d", hi, tc.max)
			}
		})
	}
}

// TestClassMixShift checks a categorical output: the argmax mix of a 5-class model.
func TestClassMixShift(t *testing.T) {
	base := []float64{0.4, 0.3, 0.15, 0.1, 0.05}
	rng := rand.New(rand.NewPCG(500, 1))
	pick := func(rng *rand.Rand, p []float64) int {
		u := rng.Float64()
		for k, pk := range p {
			if u < pk {
				return k
			}
			u -= pk
		}
		return len(p) - 1
	}
	classes := make([]int, refSamples)
	for i := range classes {
		classes[i] = pick(rng, base)
	}
	f, err := ClassMix(FeatureSpec{Name: "class", Tensor: "probs"}, len(base), classes)
	if err != nil {
		t.Fatal(err)
	}
	ref := &Reference{SchemaVersion: SchemaVersion, Features: []Feature{f}}
	mix := func(p []float64) drawFn {
		return func(rng *rand.Rand, out []float64) { out[0] = float64(pick(rng, p)) }
	}
	far := detectionRate(t, ref, mix(base), windowSize, windows, Options{Alpha: alpha}, 600)
	shifted := []float64{0.3, 0.3, 0.18, 0.12, 0.1} // 10 points of mass moved off the top class
	pow := detectionRate(t, ref, mix(shifted), windowSize, windows, Options{Alpha: alpha}, 601)
	t.Logf("RESULT class mix: false alarm %.1f%%, power against %v %.1f%% (%d windows of %d, alpha %.2f)", 100*far, shifted, 100*pow, windows, windowSize, alpha)
	if far > 0.02 || pow < 0.95 {
		t.Errorf("false alarm %.3f (max 0.02), power %.3f (min 0.95)", far, pow)
	}
	// The report never gives a KS figure for a categorical feature.
	w, _ := NewWindow(ref)
	for range windowSize {
		_ = w.Add("class", float64(pick(rng, shifted)))
	}
	rep, _ := Compare(ref, w.Summary(), Options{})
	if rep.Features[0].KSTest != nil || rep.MaxKS.Feature != "" || !rep.Features[0].Categorical {
		t.Errorf("categorical report: %+v", rep.Features[0])
	}
}

// TestCompareCohorts compares a canary wave with its baseline cohort, both windows.
func TestCompareCohorts(t *testing.T) {
	rng := rand.New(rand.NewPCG(700, 1))
	ref := normalReference(t, rng, 2, refSamples)
	cohort := func(mean float64) Summary {
		w, _ := NewWindow(ref)
		for range 2000 {
			_ = w.AddSample([]float64{mean + rng.NormFloat64(), rng.NormFloat64()})
		}
		return w.Summary()
	}
	base := cohort(0)
	if rep, err := CompareCohorts(ref, base, ref, cohort(0), Options{}); err != nil || rep.Drifted {
		t.Fatalf("same distribution: %+v %v", rep, err)
	}
	rep, err := CompareCohorts(ref, base, ref, cohort(0.3), Options{})
	if err != nil || !rep.Drifted || rep.MaxKS.Feature != "x0" || rep.DriftedFeatures[0] != "x0" {
		t.Fatalf("shifted canary: %+v %v", rep, err)
	}
	if rep.FeatureAlpha != DefaultAlpha/2 {
		t.Errorf("Bonferroni share %v, want %v", rep.FeatureAlpha, DefaultAlpha/2)
	}
	// A canary reference that re-binned x1 compares x0 only.
	other := *ref
	other.Features = append([]Feature(nil), ref.Features...)
	x1 := other.Features[1]
	x1.Edges = append([]float64(nil), x1.Edges...)
	x1.Edges[0] -= 0.01
	other.Features[1] = x1
	w, _ := NewWindow(&other)
	for range 500 {
		_ = w.AddSample([]float64{rng.NormFloat64(), rng.NormFloat64()})
	}
	rep, err = CompareCohorts(ref, base, &other, w.Summary(), Options{})
	if err != nil || len(rep.Features) != 1 || len(rep.Skipped) != 1 || rep.Skipped[0] != "x1" {
		t.Fatalf("re-binned feature: %+v %v", rep, err)
	}
	// Too few samples: wait, never alarm.
	w, _ = NewWindow(ref)
	for range 50 {
		_ = w.AddSample([]float64{5 + rng.NormFloat64(), rng.NormFloat64()})
	}
	rep, _ = Compare(ref, w.Summary(), Options{})
	if !rep.InsufficientSamples || rep.Drifted {
		t.Fatalf("50 samples: %+v", rep)
	}
}
