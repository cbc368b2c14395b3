package drift

import (
	"fmt"
	"math"

	"github.com/edgefleet/edgefleet/telemetry/hist"
)

// PSIEpsilon floors each bin's proportion before PSI takes its logarithm: an empty bin on either
// side would otherwise make PSI infinite. 1e-4 (0.01%) is below what a 10-bin reference can
// resolve and caps one empty bin's contribution at about p*ln(p/1e-4), e.g. 0.69 for p = 0.1.
const PSIEpsilon = 1e-4

// PSI is the population stability index, sum over bins of (c-r)*ln(c/r) on proportions, with
// proportions floored at PSIEpsilon. It is symmetric (Jeffreys divergence) and 0 for identical
// distributions; the usual rules of thumb (0.1 watch, 0.25 act) ignore sample size, which is why
// decisions here come from the chi-square test instead. Empty inputs score 0.
func PSI(ref, cur []uint64) float64 {
	nr, nc := total(ref), total(cur)
	if nr == 0 || nc == 0 || len(ref) != len(cur) {
		return 0
	}
	var s float64
	for i := range ref {
		r := max(float64(ref[i])/float64(nr), PSIEpsilon)
		c := max(float64(cur[i])/float64(nc), PSIEpsilon)
		s += (c - r) * math.Log(c/r)
	}
	return s
}

// JS is the Jensen-Shannon distance with base-2 logarithms: the square root of the JS
// divergence, a metric in [0, 1] (1 for disjoint distributions). Empty bins need no epsilon.
func JS(ref, cur []uint64) float64 {
	nr, nc := total(ref), total(cur)
	if nr == 0 || nc == 0 || len(ref) != len(cur) {
		return 0
	}
	var d float64
	for i := range ref {
		p, q := float64(ref[i])/float64(nr), float64(cur[i])/float64(nc)
		m := (p + q) / 2
		if p > 0 {
			d += p / 2 * math.Log2(p/m)
		}
		if q > 0 {
			d += q / 2 * math.Log2(q/m)
		}
	}
	return math.Sqrt(min(max(d, 0), 1))
}

// KS is the two-sample Kolmogorov-Smirnov statistic between the binned empirical CDFs: the
// largest CDF difference at a bin edge. It is a lower bound of the KS statistic of the unbinned
// samples (the supremum is taken over the edges only), so a test on it is conservative: binning
// costs power, never false alarms. It is meaningless for class_mix features, whose bin order is
// arbitrary.
func KS(ref, cur []uint64) float64 {
	fr, fc := hist.CDF(ref), hist.CDF(cur)
	if fr == nil || fc == nil || len(fr) != len(fc) {
		return 0
	}
	var d float64
	for i := range fr {
		d = max(d, math.Abs(fr[i]-fc[i]))
	}
	return d
}

func total(c []uint64) uint64 {
	var n uint64
	for _, v := range c {
		n += v
	}
	return n
}

// DefaultAlpha and DefaultMinSamples are what a zero Options means.
const (
	DefaultAlpha      = 0.01
	DefaultMinSamples = 100
)

// Options tune the decisions. The zero value means DefaultAlpha and DefaultMinSamples.
type Options struct {
	// Alpha is the false-alarm probability of one decision: of one test in KSDrift and
	// ChiSquareDrift, of the whole report (all features and tests, Bonferroni) in Compare.
	Alpha float64
	// MinSamples below which, on either side, a test is not run and reports
	// InsufficientSamples: asymptotic tests on a handful of values are not worth an alarm.
	MinSamples uint64
}

func (o Options) norm() Options {
	if !(o.Alpha > 0 && o.Alpha < 1) {
		o.Alpha = DefaultAlpha
	}
	if o.MinSamples == 0 {
		o.MinSamples = DefaultMinSamples
	}
	return o
}

// Decision is the outcome of one test.
type Decision struct {
	Test string `json:"test"` // "ks" or "chi2"
	// Score is the test statistic (KS D, or Pearson's chi-square) and Threshold the value above
	// which it is drift at Alpha; PValue is the asymptotic p-value.
	Score     float64 `json:"score"`
	Threshold float64 `json:"threshold"`
	PValue    float64 `json:"p_value"`
	Alpha     float64 `json:"alpha"`
	DF        int     `json:"df,omitempty"`
	NRef      uint64  `json:"n_ref"`
	NCur      uint64  `json:"n_cur"`
	Drifted   bool    `json:"drifted"`
	// InsufficientSamples means the test was not run: wait for more data. Drifted is false.
	InsufficientSamples bool `json:"insufficient_samples,omitempty"`
}

// KSCritical is c(alpha) = sqrt(-ln(alpha/2)/2), the asymptotic two-sample KS coefficient
// (1.358 at 0.05, 1.628 at 0.01).
func KSCritical(alpha float64) float64 { return math.Sqrt(-math.Log(alpha/2) / 2) }

// KSDrift decides whether a two-sample KS statistic d between nRef and nCur values is drift: d
// above c(alpha)*sqrt((nRef+nCur)/(nRef*nCur)). The threshold shrinks as samples grow, which is
// the point: 0.1 is noise at 100 samples and a clear shift at 100,000. The p-value is from the
// asymptotic Kolmogorov distribution.
func KSDrift(d float64, nRef, nCur uint64, opt Options) Decision {
	opt = opt.norm()
	out := Decision{Test: "ks", Score: d, Alpha: opt.Alpha, NRef: nRef, NCur: nCur, PValue: 1}
	if nRef < opt.MinSamples || nCur < opt.MinSamples {
		out.InsufficientSamples = true
		return out
	}
	n, m := float64(nRef), float64(nCur)
	out.Threshold = KSCritical(opt.Alpha) * math.Sqrt((n+m)/(n*m))
	out.PValue = kolmogorovQ(d * math.Sqrt(n*m/(n+m)))
	out.Drifted = d > out.Threshold
	return out
}

// kolmogorovQ is the Kolmogorov survival function Q(x) = 2 sum_{k>=1} (-1)^(k-1) exp(-2k^2x^2)
// (Numerical Recipes' probks), 1 where the alternating series has not settled (tiny x).
func kolmogorovQ(x float64) float64 {
	if x < 0.2 {
		return 1
	}
	var sum, prev float64
	sign := 1.0
	for k := 1; k <= 100; k++ {
		term := sign * 2 * math.Exp(-2*float64(k*k)*x*x)
		sum += term
		if math.Abs(term) <= 1e-12*math.Abs(sum) || math.Abs(term) <= 1e-10*prev {
			return min(max(sum, 0), 1)
		}
		prev = math.Abs(term)
		sign = -sign
	}
	return 1
}

// ChiSquareDrift runs Pearson's chi-square test of homogeneity on the two rows of bin counts
// (2 x B contingency table; bins empty on both sides dropped, df = non-empty bins - 1). It is
// the sample-size-aware decision behind PSI and JS: both are, for small differences, the same
// quadratic form in the proportions (PSI ~ chi2*(1/n+1/m), JS distance^2 ~
// chi2*(1/n+1/m)/(8 ln 2)), so the test's threshold translates into theirs (PSIThreshold,
// JSThreshold). The p-value is the chi-square survival function (gonum's regularised
// incomplete gamma).
func ChiSquareDrift(ref, cur []uint64, opt Options) Decision {
	opt = opt.norm()
	nr, nc := total(ref), total(cur)
	out := Decision{Test: "chi2", Alpha: opt.Alpha, NRef: nr, NCur: nc, PValue: 1}
	if nr < opt.MinSamples || nc < opt.MinSamples || len(ref) != len(cur) {
		out.InsufficientSamples = true
		return out
	}
	n, m := float64(nr), float64(nc)
	N := n + m
	bins := 0
	for i := range ref {
		t := float64(ref[i] + cur[i])
		if t == 0 {
			continue
		}
		bins++
		er, ec := n*t/N, m*t/N
		dr, dc := float64(ref[i])-er, float64(cur[i])-ec
		out.Score += dr*dr/er + dc*dc/ec
	}
	out.DF = bins - 1
	if out.DF < 1 {
		// Everything in one bin on both sides: identical, nothing to test.
		return out
	}
	out.Threshold = chiSquareQuantile(1-opt.Alpha, out.DF)
	out.PValue = chiSquareSurvival(out.Score, out.DF)
	out.Drifted = out.PValue < opt.Alpha
	return out
}

// PSIThreshold and JSThreshold translate a chi-square critical value into the PSI and JS
// distance that correspond to it at these sample sizes (see ChiSquareDrift). They are for
// display next to the score; decisions use the test itself.
func PSIThreshold(chi2Critical float64, nRef, nCur uint64) float64 {
	if nRef == 0 || nCur == 0 {
		return 0
	}
	return chi2Critical * (1/float64(nRef) + 1/float64(nCur))
}

// JSThreshold: see PSIThreshold.
func JSThreshold(chi2Critical float64, nRef, nCur uint64) float64 {
	return math.Sqrt(PSIThreshold(chi2Critical, nRef, nCur) / (8 * math.Ln2))
}

// FeatureScore is one feature of a Report.
type FeatureScore struct {
	Feature      string  `json:"feature"`
	Categorical  bool    `json:"categorical,omitempty"`
	NRef         uint64  `json:"n_ref"`
	NCur         uint64  `json:"n_cur"`
	PSI          float64 `json:"psi"`
	PSIThreshold float64 `json:"psi_threshold,omitempty"`
	JS           float64 `json:"js"`
	JSThreshold  float64 `json:"js_threshold,omitempty"`
	KS           float64 `json:"ks,omitempty"`
	// MissingRate is the share of the current side's values that were NaN, infinite or out of
	// range, and RefMissingRate the baseline's; informational.
	MissingRate    float64   `json:"missing_rate,omitempty"`
	RefMissingRate float64   `json:"ref_missing_rate,omitempty"`
	ChiSquare      Decision  `json:"chi2"`
	KSTest         *Decision `json:"ks_test,omitempty"` // nil for categorical features
	Drifted        bool      `json:"drifted"`
	// InsufficientSamples: this feature was not tested.
	InsufficientSamples bool `json:"insufficient_samples,omitempty"`
}

// Max is an aggregate: the largest score over features and which feature has it.
type Max struct {
	Score   float64 `json:"score"`
	Feature string  `json:"feature,omitempty"`
}

// Report compares a current summary with a baseline (the reference, or a baseline cohort).
type Report struct {
	Features []FeatureScore `json:"features"`
	MaxPSI   Max            `json:"max_psi"`
	MaxJS    Max            `json:"max_js"`
	MaxKS    Max            `json:"max_ks"`
	// Alpha is the report's family-wise false-alarm level; FeatureAlpha the Bonferroni share
	// of each tested feature (Alpha / tested features), split again between a numeric feature's
	// two tests (KS and chi-square).
	Alpha           float64  `json:"alpha"`
	FeatureAlpha    float64  `json:"feature_alpha"`
	Drifted         bool     `json:"drifted"`
	DriftedFeatures []string `json:"drifted_features,omitempty"`
	// Skipped lists features not compared because the two sides bin them differently (a
	// canary bundle whose reference re-binned a feature).
	Skipped []string `json:"skipped,omitempty"`
	// InsufficientSamples: no feature had enough samples on both sides; wait.
	InsufficientSamples bool `json:"insufficient_samples,omitempty"`
}

// Compare scores a window (or a merged fleet summary) against the reference it was binned on.
func Compare(ref *Reference, cur Summary, opt Options) (Report, error) {
	return CompareCohorts(ref, ref.Summary(), ref, cur, opt)
}

// CompareCohorts scores a current summary against a baseline summary (canary wave vs. its
// baseline cohort), each binned on its own reference. Features are compared where both
// references have the same name, kind and edges; the rest are listed in Report.Skipped, which is
// why a new bundle should keep its parent's input edges (ReferenceBuilder.KeepEdges).
func CompareCohorts(baseRef *Reference, baseline Summary, curRef *Reference, cur Summary, opt Options) (Report, error) {
	opt = opt.norm()
	if err := checkOn(baseRef, baseline); err != nil {
		return Report{}, fmt.Errorf("compare baseline: %w", err)
	}
	if err := checkOn(curRef, cur); err != nil {
		return Report{}, fmt.Errorf("compare current: %w", err)
	}
	type pair struct {
		f    *Feature
		b, c *FeatureSummary
	}
	var pairs []pair
	rep := Report{Alpha: opt.Alpha}
	for i := range curRef.Features {
		cf := &curRef.Features[i]
		bf, j, ok := baseRef.Feature(cf.Name)
		if !ok || bf.Kind != cf.Kind || !hist.SameEdges(bf.Edges, cf.Edges) {
			rep.Skipped = append(rep.Skipped, cf.Name)
			continue
		}
		pairs = append(pairs, pair{cf, &baseline.Features[j], &cur.Features[i]})
	}
	tested := 0
	for _, p := range pairs {
		if p.b.Count >= opt.MinSamples && p.c.Count >= opt.MinSamples {
			tested++
		}
	}
	if tested == 0 {
		rep.InsufficientSamples = true
		tested = 1
	}
	rep.FeatureAlpha = opt.Alpha / float64(tested)
	for _, p := range pairs {
		fs := scoreFeature(p.f, p.b, p.c, Options{Alpha: rep.FeatureAlpha, MinSamples: opt.MinSamples})
		rep.Features = append(rep.Features, fs)
		if fs.Drifted {
			rep.Drifted = true
			rep.DriftedFeatures = append(rep.DriftedFeatures, fs.Feature)
		}
		if fs.PSI > rep.MaxPSI.Score {
			rep.MaxPSI = Max{fs.PSI, fs.Feature}
		}
		if fs.JS > rep.MaxJS.Score {
			rep.MaxJS = Max{fs.JS, fs.Feature}
		}
		if !fs.Categorical && fs.KS > rep.MaxKS.Score {
			rep.MaxKS = Max{fs.KS, fs.Feature}
		}
	}
	return rep, nil
}

func scoreFeature(f *Feature, base, cur *FeatureSummary, opt Options) FeatureScore {
	fs := FeatureScore{
		Feature:     f.Name,
		Categorical: f.Kind == KindClassMix,
		NRef:        base.Count,
		NCur:        cur.Count,
		PSI:         PSI(base.Counts, cur.Counts),
		JS:          JS(base.Counts, cur.Counts),
	}
	if n := cur.Count + cur.Missing; n > 0 {
		fs.MissingRate = float64(cur.Missing) / float64(n)
	}
	if n := base.Count + base.Missing; n > 0 {
		fs.RefMissingRate = float64(base.Missing) / float64(n)
	}
	chiOpt := opt
	if !fs.Categorical {
		// Two tests share the feature's alpha.
		chiOpt.Alpha = opt.Alpha / 2
		fs.KS = KS(base.Counts, cur.Counts)
		ks := KSDrift(fs.KS, base.Count, cur.Count, chiOpt)
		fs.KSTest = &ks
	}
	fs.ChiSquare = ChiSquareDrift(base.Counts, cur.Counts, chiOpt)
	fs.InsufficientSamples = fs.ChiSquare.InsufficientSamples
	if fs.ChiSquare.DF > 0 {
		fs.PSIThreshold = PSIThreshold(fs.ChiSquare.Threshold, base.Count, cur.Count)
		fs.JSThreshold = JSThreshold(fs.ChiSquare.Threshold, base.Count, cur.Count)
	}
	fs.Drifted = fs.ChiSquare.Drifted || (fs.KSTest != nil && fs.KSTest.Drifted)
	return fs
}

// checkOn verifies s was binned on ref.
func checkOn(ref *Reference, s Summary) error {
	if err := ref.Validate(); err != nil {
		return err
	}
	if err := s.Check(); err != nil {
		return err
	}
	if s.Reference != ref.Fingerprint() || len(s.Features) != len(ref.Features) {
		return fmt.Errorf("summary reference %s, reference is %s: %w", s.Reference, ref.Fingerprint(), ErrMismatch)
	}
	for i, f := range ref.Features {
		if s.Features[i].Name != f.Name || len(s.Features[i].Counts) != len(f.Edges)+1 {
			return fmt.Errorf("summary feature %d %q does not match reference feature %q: %w", i, s.Features[i].Name, f.Name, ErrMismatch)
		}
	}
	return nil
}
