package deploy

import (
	"fmt"
	"math"
	"time"

	"github.com/edgefleet/edgefleet/deploy/stats"
)

// Gates are the thresholds a stage must meet (INTERFACE.md, the "gates" object). A nil field takes
// the rollout's value, then the default below, so that a stage overrides only what it names.
//
// Each model-aware gate fails only when BOTH its absolute floor is exceeded AND its statistical test
// is significant at the per-look level Alpha/Evaluations: the floor keeps a huge cohort from
// failing on a difference nobody cares about, the test keeps a small one from failing on noise (and
// gives a rate of 0 a meaning where a ratio would not).
type Gates struct {
	// InstallSuccessMin: installed / devices in the wave. Default 0.95.
	InstallSuccessMin *float64 `json:"install_success_min,omitempty"`
	// StallMax: stalled devices allowed in the wave. Default: no count limit (stalls still count
	// against InstallSuccessMin).
	StallMax *int `json:"stall_max,omitempty"`
	// OfflineMax: devices of the wave offline while the stage runs. Default: 10% of the wave,
	// rounded up. Failing it pauses (whatever OnFailure says): offline devices are rarely the
	// bundle's fault, so a person decides.
	OfflineMax *int `json:"offline_max,omitempty"`
	// OfflineGrace: how long a wave device must have been offline before it counts against
	// OfflineMax. Default 2m: losing one node of a clustered broker, or a site's uplink for a
	// minute, drops devices for seconds to a minute, which is no reason to stop a rollout. An
	// extension of INTERFACE.md's list.
	OfflineGrace *Duration `json:"offline_grace,omitempty"`
	// ErrorRateMaxDiff: canary minus baseline inference error rate, absolute. Default 0.01.
	ErrorRateMaxDiff *float64 `json:"error_rate_max_diff,omitempty"`
	// P95LatencyMaxRatio: canary p95 / baseline p95, with a one-sided Mann-Whitney U test.
	// Default 1.5.
	P95LatencyMaxRatio *float64 `json:"p95_latency_max_ratio,omitempty"`
	// P95LatencyFloorMS: the absolute floor of the latency gates: a p95 increase of at most this
	// many milliseconds never fails, whatever the ratio. Default 1: on a shared edge CPU a
	// sub-millisecond model's p95 moves by a ratio of 1.5 or more with the scheduler alone. Set 0
	// to gate on the ratio alone. An extension of INTERFACE.md's list.
	P95LatencyFloorMS *float64 `json:"p95_latency_floor_ms,omitempty"`
	// OutputShiftMax: the canary's output-shift score against the bundle's reference, read as a
	// Kolmogorov-Smirnov distance in [0, 1] (the test compares it with the KS critical value for the
	// sample sizes). Default 0.05.
	OutputShiftMax *float64 `json:"output_shift_max,omitempty"`
	// InputDriftDiffMax: canary minus baseline input-drift score. Input drift alone is
	// informational; it gates only above this difference. Default 0.1.
	InputDriftDiffMax *float64 `json:"input_drift_diff_max,omitempty"`
	// AccuracyMinDiff: canary minus baseline accuracy where ground truth arrived; negative.
	// Default -0.02.
	AccuracyMinDiff *float64 `json:"accuracy_min_diff,omitempty"`
	// MinSamples: fewer samples than this on either side means wait, never pass. Default 200.
	MinSamples *int `json:"min_samples,omitempty"`
	// Evaluations: the fixed number of looks per stage, spread evenly over the bake. Default 3.
	Evaluations *int `json:"evaluations,omitempty"`
	// Alpha: the false-alarm probability of the whole rollout on a good release, split evenly
	// (Bonferroni) across stages, looks and the gates under test. Default 0.05. An extension of
	// INTERFACE.md's list; a stage's own value counts for that stage's share.
	Alpha *float64 `json:"alpha,omitempty"`
}

// Defaults of the gates, documented on the fields of Gates.
const (
	DefaultInstallSuccessMin  = 0.95
	DefaultOfflineGrace       = 2 * time.Minute
	DefaultErrorRateMaxDiff   = 0.01
	DefaultP95LatencyMaxRatio = 1.5
	DefaultP95LatencyFloorMS  = 1.0
	DefaultOutputShiftMax     = 0.05
	DefaultInputDriftDiffMax  = 0.1
	DefaultAccuracyMinDiff    = -0.02
	DefaultMinSamples         = 200
	DefaultEvaluations        = 3
	DefaultAlpha              = 0.05
)

// Merge returns g with every field that o sets replaced by o's.
func (g Gates) Merge(o Gates) Gates {
	if o.InstallSuccessMin != nil {
		g.InstallSuccessMin = o.InstallSuccessMin
	}
	if o.StallMax != nil {
		g.StallMax = o.StallMax
	}
	if o.OfflineMax != nil {
		g.OfflineMax = o.OfflineMax
	}
	if o.OfflineGrace != nil {
		g.OfflineGrace = o.OfflineGrace
	}
	if o.ErrorRateMaxDiff != nil {
		g.ErrorRateMaxDiff = o.ErrorRateMaxDiff
	}
	if o.P95LatencyMaxRatio != nil {
		g.P95LatencyMaxRatio = o.P95LatencyMaxRatio
	}
	if o.P95LatencyFloorMS != nil {
		g.P95LatencyFloorMS = o.P95LatencyFloorMS
	}
	if o.OutputShiftMax != nil {
		g.OutputShiftMax = o.OutputShiftMax
	}
	if o.InputDriftDiffMax != nil {
		g.InputDriftDiffMax = o.InputDriftDiffMax
	}
	if o.AccuracyMinDiff != nil {
		g.AccuracyMinDiff = o.AccuracyMinDiff
	}
	if o.MinSamples != nil {
		g.MinSamples = o.MinSamples
	}
	if o.Evaluations != nil {
		g.Evaluations = o.Evaluations
	}
	if o.Alpha != nil {
		g.Alpha = o.Alpha
	}
	return g
}

func (g Gates) validate(field string) error {
	bad := func(f, format string, args ...any) error {
		return fmt.Errorf("%w: %s.%s: %s", ErrInvalidSpec, field, f, fmt.Sprintf(format, args...))
	}
	if v := g.InstallSuccessMin; v != nil && (*v < 0 || *v > 1) {
		return bad("install_success_min", "%v is outside [0, 1]", *v)
	}
	if v := g.StallMax; v != nil && *v < 0 {
		return bad("stall_max", "%d is negative", *v)
	}
	if v := g.OfflineMax; v != nil && *v < 0 {
		return bad("offline_max", "%d is negative", *v)
	}
	if v := g.OfflineGrace; v != nil && *v < 0 {
		return bad("offline_grace", "%v is negative", time.Duration(*v))
	}
	if v := g.ErrorRateMaxDiff; v != nil && (*v < 0 || *v > 1) {
		return bad("error_rate_max_diff", "%v is outside [0, 1]", *v)
	}
	if v := g.P95LatencyMaxRatio; v != nil && *v < 1 {
		return bad("p95_latency_max_ratio", "%v is below 1", *v)
	}
	if v := g.P95LatencyFloorMS; v != nil && (*v < 0 || math.IsNaN(*v)) {
		return bad("p95_latency_floor_ms", "%v is negative", *v)
	}
	if v := g.OutputShiftMax; v != nil && (*v < 0 || *v > 1) {
		return bad("output_shift_max", "%v is outside [0, 1]", *v)
	}
	if v := g.InputDriftDiffMax; v != nil && (*v < 0 || *v > 1) {
		return bad("input_drift_diff_max", "%v is outside [0, 1]", *v)
	}
	if v := g.AccuracyMinDiff; v != nil && (*v > 0 || *v < -1) {
		return bad("accuracy_min_diff", "%v is outside [-1, 0]", *v)
	}
	if v := g.MinSamples; v != nil && *v < 1 {
		return bad("min_samples", "%d is below 1", *v)
	}
	if v := g.Evaluations; v != nil && *v < 1 {
		return bad("evaluations", "%d is below 1", *v)
	}
	if v := g.Alpha; v != nil && (*v <= 0 || *v >= 1) {
		return bad("alpha", "%v is outside (0, 1)", *v)
	}
	return nil
}

// limits is Gates with the defaults filled in.
type limits struct {
	installSuccessMin  float64
	stallMax           int // -1: no count limit
	offlineMax         int // -1: 10% of the wave
	offlineGrace       time.Duration
	errorRateMaxDiff   float64
	p95LatencyMaxRatio float64
	p95LatencyFloorMS  float64
	outputShiftMax     float64
	inputDriftDiffMax  float64
	accuracyMinDiff    float64
	minSamples         int
	evaluations        int
	alpha              float64
}

func orF(p *float64, d float64) float64 {
	if p == nil {
		return d
	}
	return *p
}

func orD(p *Duration, d time.Duration) time.Duration {
	if p == nil {
		return d
	}
	return time.Duration(*p)
}

func orI(p *int, d int) int {
	if p == nil {
		return d
	}
	return *p
}

func (g Gates) limits() limits {
	return limits{
		installSuccessMin:  orF(g.InstallSuccessMin, DefaultInstallSuccessMin),
		stallMax:           orI(g.StallMax, -1),
		offlineMax:         orI(g.OfflineMax, -1),
		offlineGrace:       orD(g.OfflineGrace, DefaultOfflineGrace),
		errorRateMaxDiff:   orF(g.ErrorRateMaxDiff, DefaultErrorRateMaxDiff),
		p95LatencyMaxRatio: orF(g.P95LatencyMaxRatio, DefaultP95LatencyMaxRatio),
		p95LatencyFloorMS:  orF(g.P95LatencyFloorMS, DefaultP95LatencyFloorMS),
		outputShiftMax:     orF(g.OutputShiftMax, DefaultOutputShiftMax),
		inputDriftDiffMax:  orF(g.InputDriftDiffMax, DefaultInputDriftDiffMax),
		accuracyMinDiff:    orF(g.AccuracyMinDiff, DefaultAccuracyMinDiff),
		minSamples:         orI(g.MinSamples, DefaultMinSamples),
		evaluations:        orI(g.Evaluations, DefaultEvaluations),
		alpha:              orF(g.Alpha, DefaultAlpha),
	}
}

// Verdict is a gate's outcome.
type Verdict string

// Verdicts. Skip means the gate has nothing to judge (no baseline cohort, no ground truth yet, a
// score nobody measures) and is reported for information; Wait means it could judge with more
// samples, so the stage may not pass yet.
const (
	Pass Verdict = "pass"
	Fail Verdict = "fail"
	Wait Verdict = "wait"
	Skip Verdict = "skip"
)

// GateResult is one gate's verdict with what it saw, for the decision log.
type GateResult struct {
	Gate    string         `json:"gate"`
	Verdict Verdict        `json:"verdict"`
	Reason  string         `json:"reason"`
	Inputs  map[string]any `json:"inputs,omitempty"`
	// Pause is set on a failure that needs a person rather than OnFailure (offline devices).
	Pause bool `json:"pause,omitempty"`
}

// Window is what a set of devices served over a window of time.
type Window struct {
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
	// LatenciesMS is a sample of request latencies (e.g. a reservoir); the rank test needs it.
	LatenciesMS []float64 `json:"latencies_ms,omitempty"`
	// P95MS is the p95 from a histogram, used only when LatenciesMS is empty (ratio without test).
	P95MS float64 `json:"p95_ms,omitempty"`
}

// Score is a distribution-shift score computed elsewhere (telemetry/drift): the Kolmogorov-Smirnov
// distance between Samples observations and a reference of RefSamples (0: the reference is exact).
type Score struct {
	Value      float64 `json:"value"`
	Samples    int64   `json:"samples"`
	RefSamples int64   `json:"ref_samples,omitempty"`
}

// Cohort is a set of devices' metrics over the stage's window.
type Cohort struct {
	// Devices in the cohort; 0 means there is no such cohort (the comparison is skipped).
	Devices int `json:"devices"`
	Window
	// OutputShift against the reference of the bundle the cohort runs; nil: not measured.
	OutputShift *Score `json:"output_shift,omitempty"`
	// InputDrift against the bundle's reference inputs; nil: not measured.
	InputDrift *Score `json:"input_drift,omitempty"`
	// Correct of Labeled predictions, where ground truth arrived.
	Correct int64 `json:"correct,omitempty"`
	Labeled int64 `json:"labeled,omitempty"`
}

// BeforeAfter is one canary device's own metrics before and after its switch.
type BeforeAfter struct {
	Before Window `json:"before"`
	After  Window `json:"after"`
}

// Metrics are the model-aware inputs of one look.
type Metrics struct {
	// Canary: the devices of this rollout running the new bundle.
	Canary Cohort `json:"canary"`
	// Baseline: matched devices (the canary's groups and architectures) still on the previous
	// bundle, over the same window. Rollout.Cohorts names them.
	Baseline Cohort `json:"baseline"`
	// PerDevice: canary devices' own before/after metrics, keyed by device id.
	PerDevice map[string]BeforeAfter `json:"per_device,omitempty"`
	// HadTraffic says the cohorts' devices served inference traffic recently (before this look's
	// window too), so empty windows mean telemetry has not arrived yet, not a fleet without
	// traffic. The gates do not read it; the controller's no-telemetry rule does.
	HadTraffic bool `json:"had_traffic,omitempty"`
}

// EvaluateModel runs the model-aware gates once, each test at level alpha (Step passes
// alpha / (stages * evaluations * gates under test)). The order of the results is fixed so decision logs diff well.
func EvaluateModel(g Gates, m Metrics, alpha float64) []GateResult {
	l := g.limits()
	out := make([]GateResult, 0, 8)
	hasBase := m.Baseline.Devices > 0
	noBase := "no baseline cohort: every matched device is in the rollout"
	if hasBase {
		out = append(out, errorRateGate("error_rate", m.Canary.Window, m.Baseline.Window, l, alpha))
		out = append(out, latencyGate("latency", m.Canary.Window, m.Baseline.Window, l, alpha))
	} else {
		out = append(out, GateResult{Gate: "error_rate", Verdict: Skip, Reason: noBase})
		out = append(out, GateResult{Gate: "latency", Verdict: Skip, Reason: noBase})
	}
	out = append(out, outputShiftGate(m.Canary.OutputShift, l, alpha))
	out = append(out, inputDriftGate(m.Canary.InputDrift, m.Baseline.InputDrift, hasBase, l, alpha))
	out = append(out, accuracyGate(m.Canary, m.Baseline, hasBase, l, alpha))
	if len(m.PerDevice) == 0 {
		out = append(out, GateResult{Gate: "self_error_rate", Verdict: Skip, Reason: "no per-device before/after metrics"})
		out = append(out, GateResult{Gate: "self_latency", Verdict: Skip, Reason: "no per-device before/after metrics"})
	} else {
		before, after := pool(m.PerDevice)
		out = append(out, errorRateGate("self_error_rate", after, before, l, alpha))
		out = append(out, latencyGate("self_latency", after, before, l, alpha))
	}
	return out
}

// pool adds up the canary devices' windows. Each device contributes to both sides, so the mix of
// hardware and traffic is the same before and after and the pooled comparison stays like with like.
func pool(per map[string]BeforeAfter) (before, after Window) {
	for _, ba := range per {
		before.Requests += ba.Before.Requests
		before.Errors += ba.Before.Errors
		before.LatenciesMS = append(before.LatenciesMS, ba.Before.LatenciesMS...)
		before.P95MS = math.Max(before.P95MS, ba.Before.P95MS)
		after.Requests += ba.After.Requests
		after.Errors += ba.After.Errors
		after.LatenciesMS = append(after.LatenciesMS, ba.After.LatenciesMS...)
		after.P95MS = math.Max(after.P95MS, ba.After.P95MS)
	}
	return before, after
}

func waitFor(gate string, have, need int64, side string) GateResult {
	return GateResult{Gate: gate, Verdict: Wait,
		Reason: fmt.Sprintf("%s has %d samples, need %d", side, have, need),
		Inputs: map[string]any{"samples": have, "min_samples": need, "side": side}}
}

func errorRateGate(name string, c, b Window, l limits, alpha float64) GateResult {
	minS := int64(l.minSamples)
	if c.Requests < minS {
		return waitFor(name, c.Requests, minS, "canary")
	}
	if b.Requests < minS {
		return waitFor(name, b.Requests, minS, "baseline")
	}
	rc := float64(c.Errors) / float64(c.Requests)
	rb := float64(b.Errors) / float64(b.Requests)
	z, p := stats.TwoProportionZ(c.Errors, c.Requests, b.Errors, b.Requests)
	in := map[string]any{"canary_rate": rc, "baseline_rate": rb, "diff": rc - rb, "max_diff": l.errorRateMaxDiff,
		"z": z, "p": p, "alpha": alpha, "canary_requests": c.Requests, "baseline_requests": b.Requests}
	if rc-rb > l.errorRateMaxDiff && p < alpha {
		return GateResult{Gate: name, Verdict: Fail, Inputs: in,
			Reason: fmt.Sprintf("error rate %.4f vs %.4f: +%.4f exceeds %.4f (p=%.2g < %.2g)", rc, rb, rc-rb, l.errorRateMaxDiff, p, alpha)}
	}
	return GateResult{Gate: name, Verdict: Pass, Inputs: in,
		Reason: fmt.Sprintf("error rate %.4f vs %.4f (p=%.2g)", rc, rb, p)}
}

func latencyGate(name string, c, b Window, l limits, alpha float64) GateResult {
	minS := int64(l.minSamples)
	if len(c.LatenciesMS) == 0 && len(b.LatenciesMS) == 0 && c.P95MS > 0 && b.P95MS > 0 {
		// Histogram quantiles only: the ratio decides alone, still behind min_samples.
		if c.Requests < minS {
			return waitFor(name, c.Requests, minS, "canary")
		}
		if b.Requests < minS {
			return waitFor(name, b.Requests, minS, "baseline")
		}
		ratio := c.P95MS / b.P95MS
		in := map[string]any{"canary_p95_ms": c.P95MS, "baseline_p95_ms": b.P95MS, "ratio": ratio,
			"max_ratio": l.p95LatencyMaxRatio, "floor_ms": l.p95LatencyFloorMS, "test": "none (no latency samples)"}
		if ratio > l.p95LatencyMaxRatio && c.P95MS-b.P95MS > l.p95LatencyFloorMS {
			return GateResult{Gate: name, Verdict: Fail, Inputs: in,
				Reason: fmt.Sprintf("p95 %.1fms vs %.1fms: ratio %.2f exceeds %.2f", c.P95MS, b.P95MS, ratio, l.p95LatencyMaxRatio)}
		}
		return GateResult{Gate: name, Verdict: Pass, Inputs: in, Reason: fmt.Sprintf("p95 ratio %.2f", ratio)}
	}
	if n := int64(len(c.LatenciesMS)); n < minS {
		return waitFor(name, n, minS, "canary")
	}
	if n := int64(len(b.LatenciesMS)); n < minS {
		return waitFor(name, n, minS, "baseline")
	}
	pc := stats.Quantile(c.LatenciesMS, 0.95)
	pb := stats.Quantile(b.LatenciesMS, 0.95)
	ratio := math.Inf(1)
	if pb > 0 {
		ratio = pc / pb
	} else if pc <= 0 {
		ratio = 1
	}
	mw := stats.MannWhitneyU(c.LatenciesMS, b.LatenciesMS)
	in := map[string]any{"canary_p95_ms": pc, "baseline_p95_ms": pb, "ratio": ratio, "max_ratio": l.p95LatencyMaxRatio,
		"floor_ms": l.p95LatencyFloorMS, "u": mw.U, "z": mw.Z, "p": mw.P, "alpha": alpha,
		"canary_samples": len(c.LatenciesMS), "baseline_samples": len(b.LatenciesMS)}
	if ratio > l.p95LatencyMaxRatio && pc-pb > l.p95LatencyFloorMS && mw.P < alpha {
		return GateResult{Gate: name, Verdict: Fail, Inputs: in,
			Reason: fmt.Sprintf("p95 %.1fms vs %.1fms: ratio %.2f exceeds %.2f (Mann-Whitney p=%.2g < %.2g)", pc, pb, ratio, l.p95LatencyMaxRatio, mw.P, alpha)}
	}
	if ratio > l.p95LatencyMaxRatio && mw.P < alpha {
		return GateResult{Gate: name, Verdict: Pass, Inputs: in,
			Reason: fmt.Sprintf("p95 ratio %.2f (Mann-Whitney p=%.2g), but +%.2fms is within the %.2fms floor", ratio, mw.P, pc-pb, l.p95LatencyFloorMS)}
	}
	return GateResult{Gate: name, Verdict: Pass, Inputs: in,
		Reason: fmt.Sprintf("p95 ratio %.2f (Mann-Whitney p=%.2g)", ratio, mw.P)}
}

func outputShiftGate(s *Score, l limits, alpha float64) GateResult {
	const name = "output_shift"
	if s == nil {
		return GateResult{Gate: name, Verdict: Skip, Reason: "output shift not measured"}
	}
	if minS := int64(l.minSamples); s.Samples < minS {
		return waitFor(name, s.Samples, minS, "canary")
	}
	crit := stats.KSCritical(alpha, s.Samples, s.RefSamples)
	in := map[string]any{"score": s.Value, "max": l.outputShiftMax, "critical": crit, "alpha": alpha,
		"samples": s.Samples, "ref_samples": s.RefSamples}
	if s.Value > l.outputShiftMax && s.Value > crit {
		return GateResult{Gate: name, Verdict: Fail, Inputs: in,
			Reason: fmt.Sprintf("output shift %.3f exceeds %.3f and the KS critical value %.3f", s.Value, l.outputShiftMax, crit)}
	}
	return GateResult{Gate: name, Verdict: Pass, Inputs: in,
		Reason: fmt.Sprintf("output shift %.3f (max %.3f, critical %.3f)", s.Value, l.outputShiftMax, crit)}
}

// inputDriftGate reports drift always but fails only on a canary-minus-baseline difference: the
// world changing under both cohorts is not the new bundle's doing, a difference between cohorts
// that see the same world is (e.g. changed preprocessing).
func inputDriftGate(c, b *Score, hasBase bool, l limits, alpha float64) GateResult {
	const name = "input_drift"
	if c == nil {
		return GateResult{Gate: name, Verdict: Skip, Reason: "input drift not measured"}
	}
	if !hasBase || b == nil {
		return GateResult{Gate: name, Verdict: Skip, Inputs: map[string]any{"canary": c.Value, "samples": c.Samples},
			Reason: fmt.Sprintf("input drift %.3f (informational: no baseline to compare with)", c.Value)}
	}
	minS := int64(l.minSamples)
	if c.Samples < minS {
		return waitFor(name, c.Samples, minS, "canary")
	}
	if b.Samples < minS {
		return waitFor(name, b.Samples, minS, "baseline")
	}
	diff := c.Value - b.Value
	// |Dc - Db| is a lower bound of the KS distance between the two cohorts' inputs (triangle
	// inequality), so comparing it with the two-sample critical value is a conservative test.
	crit := stats.KSCritical(alpha, c.Samples, b.Samples)
	in := map[string]any{"canary": c.Value, "baseline": b.Value, "diff": diff, "max_diff": l.inputDriftDiffMax,
		"critical": crit, "alpha": alpha}
	if diff > l.inputDriftDiffMax && diff > crit {
		return GateResult{Gate: name, Verdict: Fail, Inputs: in,
			Reason: fmt.Sprintf("input drift %.3f vs baseline %.3f: +%.3f exceeds %.3f and the critical value %.3f", c.Value, b.Value, diff, l.inputDriftDiffMax, crit)}
	}
	return GateResult{Gate: name, Verdict: Pass, Inputs: in,
		Reason: fmt.Sprintf("input drift %.3f vs baseline %.3f (informational)", c.Value, b.Value)}
}

func accuracyGate(c, b Cohort, hasBase bool, l limits, alpha float64) GateResult {
	const name = "accuracy"
	if c.Labeled == 0 {
		return GateResult{Gate: name, Verdict: Skip, Reason: "no ground truth for the canary yet"}
	}
	if !hasBase || b.Labeled == 0 {
		return GateResult{Gate: name, Verdict: Skip, Reason: "no ground truth for a baseline",
			Inputs: map[string]any{"canary_accuracy": float64(c.Correct) / float64(c.Labeled), "labeled": c.Labeled}}
	}
	minS := int64(l.minSamples)
	if c.Labeled < minS {
		return waitFor(name, c.Labeled, minS, "canary")
	}
	if b.Labeled < minS {
		return waitFor(name, b.Labeled, minS, "baseline")
	}
	ac := float64(c.Correct) / float64(c.Labeled)
	ab := float64(b.Correct) / float64(b.Labeled)
	// H1: the baseline is more accurate than the canary.
	z, p := stats.TwoProportionZ(b.Correct, b.Labeled, c.Correct, c.Labeled)
	in := map[string]any{"canary_accuracy": ac, "baseline_accuracy": ab, "diff": ac - ab, "min_diff": l.accuracyMinDiff,
		"z": z, "p": p, "alpha": alpha}
	if ac-ab < l.accuracyMinDiff && p < alpha {
		return GateResult{Gate: name, Verdict: Fail, Inputs: in,
			Reason: fmt.Sprintf("accuracy %.4f vs %.4f: %.4f is below %.4f (p=%.2g < %.2g)", ac, ab, ac-ab, l.accuracyMinDiff, p, alpha)}
	}
	return GateResult{Gate: name, Verdict: Pass, Inputs: in,
		Reason: fmt.Sprintf("accuracy %.4f vs %.4f (p=%.2g)", ac, ab, p)}
}
