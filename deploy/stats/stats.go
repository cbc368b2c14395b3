// Package stats holds the few statistical tests the rollout gates need: a two-proportion z-test,
// the Mann-Whitney U rank test (normal approximation with tie and continuity correction), the
// two-sample Kolmogorov-Smirnov distance and its critical value, and sample quantiles.
//
// They are written here rather than taken from a library because each is a few lines over
// math.Erfc, and the gates need one-sided variants with the exact conventions documented below;
// the tests pin them to published values.
package stats

import (
	"math"
	"sort"
)

// NormalCDF is P(Z <= x) for a standard normal Z.
func NormalCDF(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }

// NormalSF is P(Z > x), computed directly so that far tails keep their precision.
func NormalSF(x float64) float64 { return 0.5 * math.Erfc(x/math.Sqrt2) }

// TwoProportionZ tests H1: p1 > p2 given x1 successes of n1 and x2 of n2, with the pooled
// variance. It returns the z statistic and the one-sided p-value. When the pooled proportion is 0
// or 1 there is no variance and no evidence either way (z = 0, p = 1); that is how an error rate
// of 0 on both sides is handled without a ratio.
func TwoProportionZ(x1, n1, x2, n2 int64) (z, p float64) {
	if n1 <= 0 || n2 <= 0 {
		return 0, 1
	}
	p1 := float64(x1) / float64(n1)
	p2 := float64(x2) / float64(n2)
	pool := float64(x1+x2) / float64(n1+n2)
	v := pool * (1 - pool) * (1/float64(n1) + 1/float64(n2))
	if v <= 0 {
		return 0, 1
	}
	z = (p1 - p2) / math.Sqrt(v)
	return z, NormalSF(z)
}

// MannWhitney is the result of MannWhitneyU.
type MannWhitney struct {
	U float64 // U of the first sample: pairs (x, y) with x > y, ties counting one half
	Z float64 // normal approximation, tie- and continuity-corrected
	P float64 // one-sided p-value for H1: the first sample tends to be larger
}

// MannWhitneyU tests whether x tends to be larger than y (one-sided), with the normal
// approximation: mean n1*n2/2, variance n1*n2/12*((n+1) - sum(t^3-t)/(n(n-1))) over tie groups of
// size t, and a continuity correction of 1/2. With the sample sizes the gates require (tens to
// thousands) the approximation is within a few thousandths of the exact test.
func MannWhitneyU(x, y []float64) MannWhitney {
	n1, n2 := len(x), len(y)
	if n1 == 0 || n2 == 0 {
		return MannWhitney{P: 1}
	}
	type obs struct {
		v     float64
		first bool
	}
	all := make([]obs, 0, n1+n2)
	for _, v := range x {
		all = append(all, obs{v, true})
	}
	for _, v := range y {
		all = append(all, obs{v, false})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v < all[j].v })
	n := float64(n1 + n2)
	var rankSum, tieTerm float64
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].v == all[i].v {
			j++
		}
		// Ranks i+1..j share their mean.
		mid := float64(i+1+j) / 2
		for k := i; k < j; k++ {
			if all[k].first {
				rankSum += mid
			}
		}
		t := float64(j - i)
		tieTerm += t*t*t - t
		i = j
	}
	f1, f2 := float64(n1), float64(n2)
	u := rankSum - f1*(f1+1)/2
	mean := f1 * f2 / 2
	variance := f1 * f2 / 12 * ((n + 1) - tieTerm/(n*(n-1)))
	if variance <= 0 {
		// Every value equal: no ordering, no evidence.
		return MannWhitney{U: u, P: 1}
	}
	d := u - mean
	// Continuity correction towards the mean, never past it.
	d = math.Copysign(math.Max(math.Abs(d)-0.5, 0), d)
	z := d / math.Sqrt(variance)
	return MannWhitney{U: u, Z: z, P: NormalSF(z)}
}

// Quantile returns the q-quantile (0 <= q <= 1) of xs by linear interpolation between order
// statistics (Hyndman-Fan type 7, the default of R and NumPy). xs is not modified. It returns NaN
// for an empty sample.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return sortedQuantile(s, q)
}

func sortedQuantile(s []float64, q float64) float64 {
	q = math.Min(math.Max(q, 0), 1)
	h := q * float64(len(s)-1)
	lo := math.Floor(h)
	i := int(lo)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (h-lo)*(s[i+1]-s[i])
}

// KSDistance is the two-sample Kolmogorov-Smirnov statistic: the largest gap between the
// empirical CDFs of a and b, in [0, 1]. Neither is modified; a sample already sorted (a stored
// reference, typically) is not copied or sorted again.
func KSDistance(a, b []float64) float64 {
	if len(a) == 0 || len(b) == 0 {
		return 0
	}
	x, y := sortedView(a), sortedView(b)
	var i, j int
	var d float64
	for i < len(x) && j < len(y) {
		v := math.Min(x[i], y[j])
		for i < len(x) && x[i] == v {
			i++
		}
		for j < len(y) && y[j] == v {
			j++
		}
		gap := math.Abs(float64(i)/float64(len(x)) - float64(j)/float64(len(y)))
		d = math.Max(d, gap)
	}
	return d
}

// KSCritical is the asymptotic critical value of the two-sample Kolmogorov-Smirnov distance at
// level alpha for samples of n and m: sqrt(-ln(alpha/2)/2) * sqrt((n+m)/(n*m)). m <= 0 means the
// reference is known exactly (one-sample test): sqrt(-ln(alpha/2)/2) / sqrt(n). It returns +Inf when
// n <= 0, so that no distance is ever significant without samples.
func KSCritical(alpha float64, n, m int64) float64 {
	if n <= 0 || alpha <= 0 {
		return math.Inf(1)
	}
	c := math.Sqrt(-math.Log(alpha/2) / 2)
	if m <= 0 {
		return c / math.Sqrt(float64(n))
	}
	return c * math.Sqrt(float64(n+m)/(float64(n)*float64(m)))
}

func sortedView(xs []float64) []float64 {
	if sort.Float64sAreSorted(xs) {
		return xs
	}
	c := append([]float64(nil), xs...)
	sort.Float64s(c)
	return c
}
