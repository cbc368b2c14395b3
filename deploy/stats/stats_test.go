package stats

import (
	"math"
	"math/rand/v2"
	"testing"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestNormal(t *testing.T) {
	for _, c := range []struct{ x, cdf float64 }{
		{0, 0.5}, {1.959963984540054, 0.975}, {-1.6448536269514729, 0.05}, {3, 0.9986501019683699},
	} {
		if got := NormalCDF(c.x); !near(got, c.cdf, 1e-12) {
			t.Errorf("NormalCDF(%v) = %v, want %v", c.x, got, c.cdf)
		}
		if got := NormalSF(c.x); !near(got, 1-c.cdf, 1e-12) {
			t.Errorf("NormalSF(%v) = %v, want %v", c.x, got, 1-c.cdf)
		}
	}
}

func TestTwoProportionZ(t *testing.T) {
	for _, c := range []struct {
		name           string
		x1, n1, x2, n2 int64
		z, p           float64
	}{
		// 0.30 vs 0.20 on 100 each: pooled 0.25, se = sqrt(.25*.75*.02) = 0.0612372.
		{"textbook", 30, 100, 20, 100, 1.6329931618554523, 0.0512352174},
		{"lower is not significant", 20, 100, 30, 100, -1.6329931618554523, 0.9487647826},
		{"both zero has no variance", 0, 500, 0, 500, 0, 1},
		{"empty side", 3, 0, 1, 10, 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			z, p := TwoProportionZ(c.x1, c.n1, c.x2, c.n2)
			if !near(z, c.z, 1e-9) || !near(p, c.p, 1e-6) {
				t.Fatalf("got z=%v p=%v, want z=%v p=%v", z, p, c.z, c.p)
			}
		})
	}
}

func TestMannWhitneyU(t *testing.T) {
	for _, c := range []struct {
		name string
		x, y []float64
		u, p float64
	}{
		// SciPy's documented example (Conover): mannwhitneyu(males, females,
		// method="asymptotic") gives U=17, two-sided p=0.11134688653314041.
		{"scipy males vs females", []float64{19, 22, 16, 29, 24}, []float64{20, 11, 17, 12}, 17, 0.11134688653314041 / 2},
		// Complete separation, n1=n2=3: U=9, z=(9-4.5-0.5)/sqrt(5.25).
		{"separated", []float64{4, 5, 6}, []float64{1, 2, 3}, 9, NormalSF(4 / math.Sqrt(5.25))},
		{"reversed", []float64{1, 2, 3}, []float64{4, 5, 6}, 0, NormalSF(-4 / math.Sqrt(5.25))},
		// Ties: x={1,2,2,3}, y={2,3,3,4}. Ranks of the 8 values 1,2,2,2,3,3,3,4 are
		// 1,3,3,3,6,6,6,8; R_x = 1+3+3+6 = 13, U = 13-10 = 3. Tie groups of 3 and 3:
		// var = 16/12*(9 - 48/56) = 10.857142857; z = (3-8+0.5)/sqrt(var).
		{"ties", []float64{1, 2, 2, 3}, []float64{2, 3, 3, 4}, 3, NormalSF(-4.5 / math.Sqrt(16.0/12*(9-48.0/56)))},
		{"all equal", []float64{1, 1}, []float64{1, 1, 1}, 3, 1},
		{"empty", nil, []float64{1}, 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := MannWhitneyU(c.x, c.y)
			if !near(got.U, c.u, 1e-12) || !near(got.P, c.p, 1e-9) {
				t.Fatalf("got U=%v p=%v, want U=%v p=%v", got.U, got.P, c.u, c.p)
			}
		})
	}
}

// Under the null hypothesis the one-sided p-value must be (close to) uniform: the rejection rate
// at 0.05 stays near 0.05. This is what the false-alarm guarantee of the latency gate rests on.
func TestMannWhitneyNullCalibration(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const reps = 4000
	rejected := 0
	for range reps {
		x := make([]float64, 60)
		y := make([]float64, 80)
		for i := range x {
			x[i] = math.Round(rng.ExpFloat64() * 10) // rounded: plenty of ties
		}
		for i := range y {
			y[i] = math.Round(rng.ExpFloat64() * 10)
		}
		if MannWhitneyU(x, y).P < 0.05 {
			rejected++
		}
	}
	rate := float64(rejected) / reps
	if rate < 0.03 || rate > 0.065 {
		t.Fatalf("null rejection rate %.4f, want about 0.05", rate)
	}
}

func TestQuantile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for _, c := range []struct{ q, want float64 }{{0, 1}, {0.5, 3}, {1, 5}, {0.95, 4.8}, {0.1, 1.4}} {
		if got := Quantile(xs, c.q); !near(got, c.want, 1e-12) {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if xs[0] != 5 {
		t.Fatal("Quantile modified its input")
	}
	if !math.IsNaN(Quantile(nil, 0.5)) {
		t.Fatal("Quantile of nothing should be NaN")
	}
}

func TestKS(t *testing.T) {
	if d := KSDistance([]float64{1, 2, 3, 4}, []float64{1, 2, 3, 4}); d != 0 {
		t.Fatalf("identical samples: %v", d)
	}
	if d := KSDistance([]float64{1, 2}, []float64{3, 4}); d != 1 {
		t.Fatalf("disjoint samples: %v", d)
	}
	// F_a steps at 1,2,3,4 (quarters); F_b at 3,4,5,6: at 2, 0.5 vs 0.
	if d := KSDistance([]float64{1, 2, 3, 4}, []float64{3, 4, 5, 6}); d != 0.5 {
		t.Fatalf("half overlap: %v", d)
	}
	// c(0.05) = 1.358; n = m = 100 gives 1.358*sqrt(0.02).
	if c := KSCritical(0.05, 100, 100); !near(c, 1.3581015157*math.Sqrt(0.02), 1e-9) {
		t.Fatalf("KSCritical = %v", c)
	}
	if c := KSCritical(0.05, 100, 0); !near(c, 0.13581015157, 1e-9) {
		t.Fatalf("one-sample KSCritical = %v", c)
	}
	if !math.IsInf(KSCritical(0.05, 0, 10), 1) {
		t.Fatal("no samples must never be significant")
	}
}
