package drift

import (
	"math"
	"testing"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// TestScoresKnownValues checks the scores on examples small enough to compute by hand.
func TestScoresKnownValues(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ref, cur    []uint64
		psi, js, ks float64
	}{
		// PSI = (0.25-0.5)ln(0.5) + (0.75-0.5)ln(1.5); JS from m = (0.375, 0.625).
		{"half to quarter", []uint64{50, 50}, []uint64{25, 75}, 0.2746530721670274, 0.22089576884901735, 0.25},
		{"identical shape", []uint64{10, 20, 30}, []uint64{1, 2, 3}, 0, 0, 0},
		// Disjoint: JS and KS reach 1; PSI is bounded only by the epsilon floor,
		// 2 * (1-1e-4) * ln(1e4).
		{"disjoint", []uint64{10, 0}, []uint64{0, 10}, 18.41883867587797, 1, 1},
		{"empty side", []uint64{10, 0}, []uint64{0, 0}, 0, 0, 0},
		// CDFs (0.2, 0.5) vs (0.5, 0.5): KS 0.3 at the first edge.
		{"three bins", []uint64{2, 3, 5}, []uint64{5, 0, 5}, 0, 0, 0.3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := KS(tc.ref, tc.cur); !near(got, tc.ks, 1e-12) {
				t.Errorf("KS = %v, want %v", got, tc.ks)
			}
			if tc.name == "three bins" {
				return // PSI and JS there are only for the KS case
			}
			if got := PSI(tc.ref, tc.cur); !near(got, tc.psi, 1e-9) {
				t.Errorf("PSI = %v, want %v", got, tc.psi)
			}
			if got := JS(tc.ref, tc.cur); !near(got, tc.js, 1e-9) {
				t.Errorf("JS = %v, want %v", got, tc.js)
			}
		})
	}
}

func TestChiSquareDrift(t *testing.T) {
	// 2x2 table (50,50 | 30,70): expected 40/60 each row, chi2 = 2*(100/40 + 100/60) = 8.333,
	// df 1, p = erfc(sqrt(chi2/2)).
	d := ChiSquareDrift([]uint64{50, 50}, []uint64{30, 70}, Options{Alpha: 0.01, MinSamples: 10})
	if !near(d.Score, 25.0/3, 1e-9) || d.DF != 1 || !near(d.PValue, math.Erfc(math.Sqrt(25.0/6)), 1e-9) || !d.Drifted {
		t.Fatalf("got %+v", d)
	}
	if !near(d.Threshold, 6.634896601021214, 1e-6) { // chi2(1) 99th percentile
		t.Errorf("threshold %v", d.Threshold)
	}
	// Same at alpha 0.001: p = 0.0039 is no longer drift.
	if d := ChiSquareDrift([]uint64{50, 50}, []uint64{30, 70}, Options{Alpha: 0.001, MinSamples: 10}); d.Drifted {
		t.Errorf("drifted at alpha 0.001: %+v", d)
	}
	// Bins empty on both sides do not count as degrees of freedom.
	if d := ChiSquareDrift([]uint64{50, 0, 50}, []uint64{30, 0, 70}, Options{MinSamples: 10}); d.DF != 1 {
		t.Errorf("df %d, want 1", d.DF)
	}
	// Everything in one bin on both sides: nothing to test.
	if d := ChiSquareDrift([]uint64{0, 500, 0}, []uint64{0, 200, 0}, Options{}); d.Drifted || d.PValue != 1 || d.InsufficientSamples {
		t.Errorf("constant: %+v", d)
	}
	if d := ChiSquareDrift([]uint64{50, 50}, []uint64{0, 99}, Options{}); !d.InsufficientSamples || d.Drifted {
		t.Errorf("99 samples under the default minimum of 100: %+v", d)
	}
}

func TestKSDrift(t *testing.T) {
	// n = m = 1000 at alpha 0.05: threshold 1.3581*sqrt(2/1000) = 0.06074.
	d := KSDrift(0.061, 1000, 1000, Options{Alpha: 0.05})
	if !near(d.Threshold, 0.0607366, 1e-6) || !d.Drifted {
		t.Fatalf("got %+v", d)
	}
	if !near(d.PValue, 0.05, 0.003) {
		t.Errorf("p-value at the threshold %v, want about 0.05", d.PValue)
	}
	// The same statistic on 100 samples a side is noise.
	if d := KSDrift(0.061, 100, 100, Options{Alpha: 0.05}); d.Drifted || d.PValue < 0.9 {
		t.Errorf("100 samples: %+v", d)
	}
	// And 0.02 on 100,000 a side is a real shift.
	if d := KSDrift(0.02, 100_000, 100_000, Options{Alpha: 0.01}); !d.Drifted || d.PValue > 1e-4 {
		t.Errorf("100k samples: %+v", d)
	}
	if d := KSDrift(0.9, 10_000, 50, Options{}); !d.InsufficientSamples || d.Drifted {
		t.Errorf("50 samples: %+v", d)
	}
	if got := KSCritical(0.01); !near(got, 1.6276, 1e-4) {
		t.Errorf("c(0.01) = %v", got)
	}
}

func TestKolmogorovQ(t *testing.T) {
	// Tabulated values of the Kolmogorov distribution's survival function.
	for _, tc := range []struct{ x, q float64 }{{0.1, 1}, {0.5, 0.9639}, {1.0, 0.2700}, {1.36, 0.0494}, {2.0, 0.00067}} {
		if got := kolmogorovQ(tc.x); !near(got, tc.q, 1e-4) {
			t.Errorf("Q(%v) = %v, want %v", tc.x, got, tc.q)
		}
	}
}
