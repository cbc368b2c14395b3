package telemetry

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// TestConceptDriftJSON: without labels the verdict still encodes as JSON (NaN would not, and an
// API answer or webhook event carrying it would fail to encode).
func TestConceptDriftJSON(t *testing.T) {
	c := DetectConceptDrift(Accuracy{}, Accuracy{}, false)
	b, err := json.Marshal(c)
	if err != nil || !c.TooFew {
		t.Fatalf("%s %v %+v", b, err, c)
	}
}

func TestDetectConceptDrift(t *testing.T) {
	acc := func(c, n uint64) Accuracy { return Accuracy{Correct: c, Labeled: n} }
	cases := []struct {
		name           string
		before, recent Accuracy
		inputsDrifted  bool
		fell, concept  bool
		tooFew         bool
	}{
		{"steady", acc(900, 1000), acc(895, 1000), false, false, false, false},
		{"fell, inputs unchanged: concept drift", acc(900, 1000), acc(800, 1000), false, true, true, false},
		{"fell with drifted inputs: not concept drift", acc(900, 1000), acc(800, 1000), true, true, false, false},
		{"rose", acc(800, 1000), acc(900, 1000), false, false, false, false},
		{"too few labels", acc(90, 99), acc(10, 99), false, false, false, true},
		{"tiny but significant fall below the floor", acc(950_000, 1_000_000), acc(945_000, 1_000_000), false, false, false, false},
		{"perfect before, perfect after", acc(500, 500), acc(500, 500), false, false, false, false},
		{"perfect before, worse after", acc(500, 500), acc(400, 500), false, true, true, false},
	}
	for _, c := range cases {
		got := DetectConceptDrift(c.before, c.recent, c.inputsDrifted)
		if got.Fell != c.fell || got.Concept != c.concept || got.TooFew != c.tooFew {
			t.Errorf("%s: %+v", c.name, got)
		}
	}
}

// TestConceptDriftFalseAlarms: with the same true accuracy on both sides the test fires in about
// 1% of comparisons or less (it is one-sided at 1% with a 2-point floor), from a fixed seed.
func TestConceptDriftFalseAlarms(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	draw := func(p float64, n int) Accuracy {
		var c uint64
		for range n {
			if r.Float64() < p {
				c++
			}
		}
		return Accuracy{Correct: c, Labeled: uint64(n)}
	}
	alarms, detected := 0, 0
	const trials = 2000
	for range trials {
		if DetectConceptDrift(draw(0.9, 1000), draw(0.9, 1000), false).Concept {
			alarms++
		}
		if DetectConceptDrift(draw(0.9, 1000), draw(0.85, 1000), false).Concept {
			detected++
		}
	}
	if rate := float64(alarms) / trials; rate > 0.015 {
		t.Errorf("false-alarm rate %.4f on equal accuracy, want <= 0.015", rate)
	}
	if power := float64(detected) / trials; power < 0.8 {
		t.Errorf("detected a 5-point fall in %.3f of trials at 1000 labels a side, want >= 0.8", power)
	}
	t.Logf("false alarms %d/%d, 5-point fall detected %d/%d", alarms, trials, detected, trials)
}
