package quant

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
)

// ErrSlower is returned (wrapped) by SpeedGate when the int8 variant is slower than fp32.
var ErrSlower = errors.New("quant: int8 variant is slower than fp32")

// SpeedGate returns an error wrapping ErrSlower when the report's Speedup is below minSpeedup
// (0 means 1: int8 must be at least as fast as fp32). The issue asks for int8 latency <= fp32; a
// bundle builder should refuse to ship an int8 variant that fails this unless forced, since a
// device that picks the int8 variant would get a smaller but slower model. Latency is a median
// on the build machine, so a speedup within a few percent of 1 is a tie, not a verdict.
func SpeedGate(r Report, minSpeedup float64) error {
	if minSpeedup == 0 {
		minSpeedup = 1
	}
	if r.Speedup() >= minSpeedup {
		return nil
	}
	return fmt.Errorf("%w: fp32 %v, int8 %v (speedup %.2fx < %.2fx)", ErrSlower, r.LatencyFloat, r.LatencyQuant, r.Speedup(), minSpeedup)
}

// Variant is one recipe QuantizeBest tried and what the gate said.
type Variant struct {
	Method    string  `json:"method"`
	Agreement float64 `json:"agreement"`
	Speedup   float64 `json:"speedup"`
	SizeAfter int64   `json:"size_after"`
	Passed    bool    `json:"passed"`
	Err       string  `json:"err,omitempty"`
}

// BestError is returned when no variant passes the accuracy gate. Result and Report (returned
// alongside it) are the variant with the best agreement, for a forced build to record.
type BestError struct {
	Tried []Variant
	Gate  error
}

func (e *BestError) Error() string {
	return fmt.Sprintf("quant: no variant of %d passed: best %v", len(e.Tried), e.Gate)
}

func (e *BestError) Unwrap() error { return e.Gate }

// layout is one way of laying a model out for ORT's kernels that QuantizeBest tries.
type layout struct {
	name  string // appended to Result.Method ("" for the default)
	apply func(*Options)
}

// layouts QuantizeBest tries after choosing the calibration on the default one. The default pads
// depthwise convolutions to 16 channels, fuses squeeze-excite scaling into QLinearMul and keeps
// MaxPool inputs and isolated nodes float; "plain" is the straightforward Q/DQ layout without
// those choices (on some CPU/model pairs it may be the faster one); "float-depthwise" keeps the
// depthwise convolutions that could not be padded in float.
var layouts = []layout{
	{"", func(*Options) {}},
	{"plain", func(o *Options) { o.NoPadDepthwise, o.NoCloseMul, o.KeepSlowLayout = true, true, true }},
	{"float-depthwise", func(o *Options) { o.FloatDepthwise = true }},
}

// speedTie is how close two measured speedups must be to count as equal; between them the better
// agreement decides. Latency is a median on the build machine, and a few percent is its noise.
const speedTie = 0.03

// bestRuns is how many interleaved timed runs QuantizeBest's latency medians use: more than
// Evaluate's default, since they choose what ships and the build machine may be busy.
const bestRuns = 40

// QuantizeBest quantizes model statically in several ways, evaluates every variant against the
// float model on opts.EvalSamples (default opts.Samples) and returns the one to ship: the fastest
// variant that passes the accuracy gate (speedups within speedTie of each other count as equal,
// and then the better agreement wins). It first tries min-max and percentile calibration on the
// default layout, then the other layouts (see layouts) with the calibration that did best; a
// layout that yields the same model as one already tried is not evaluated again. The Report's
// Speedup says whether even the chosen one is slower than fp32 (then SpeedGate fails and the
// builder should refuse it unless forced). When no variant passes the gate, it returns the
// best-agreement variant with a *BestError wrapping its *GateError. opts.Mode must be Static;
// opts.Calibration and the layout options are overridden. Result.Variants lists what was tried.
func QuantizeBest(ctx context.Context, model []byte, opts Options) (*Result, Report, error) {
	if opts.Mode != Static {
		return nil, Report{}, errors.New("quant: QuantizeBest is for static quantization")
	}
	eval := opts.EvalSamples
	if len(eval) == 0 {
		eval = opts.Samples
	}
	threads := opts.EvalThreads
	if threads == 0 {
		threads = 1
	}
	type cand struct {
		res *Result
		rep Report
		ok  bool
		cal Calibration
	}
	var (
		best  *cand
		tried []Variant
		seen  [][]byte
	)
	better := func(a, b *cand) bool { // a better than b
		if a.ok != b.ok {
			return a.ok
		}
		if !a.ok { // neither passes: the one closest to passing
			if a.rep.Agreement != b.rep.Agreement {
				return a.rep.Agreement > b.rep.Agreement
			}
			return a.rep.Speedup() > b.rep.Speedup()
		}
		sa, sb := a.rep.Speedup(), b.rep.Speedup()
		if math.Abs(sa-sb) > speedTie*max(sa, sb) {
			return sa > sb
		}
		if a.rep.Agreement != b.rep.Agreement {
			return a.rep.Agreement > b.rep.Agreement
		}
		return sa > sb
	}
	try := func(cal Calibration, l layout) (*cand, error) {
		o := opts
		o.Calibration = cal
		o.NoPadDepthwise, o.NoCloseMul, o.KeepSlowLayout, o.FloatDepthwise = false, false, false, false
		l.apply(&o)
		res, err := Quantize(ctx, model, o)
		if err != nil {
			if l.name != "" {
				return nil, nil // e.g. nothing left to quantize with depthwise kept float
			}
			return nil, err
		}
		if o.FloatDepthwise && !hasSkipPrefix(res.Skipped, "depthwise") {
			return nil, nil // every depthwise conv was padded: the default model again
		}
		for _, m := range seen {
			if bytes.Equal(m, res.Model) {
				return nil, nil
			}
		}
		seen = append(seen, res.Model)
		if l.name != "" {
			res.Method += " " + l.name
		}
		rep, err := Evaluate(ctx, model, res.Model, eval, EvalOptions{Threads: threads, LayerSamples: 1, Runs: bestRuns})
		if err != nil {
			return nil, err
		}
		c := &cand{res: res, rep: rep, ok: Gate(rep, opts.Threshold) == nil, cal: cal}
		tried = append(tried, Variant{Method: res.Method, Agreement: rep.Agreement, Speedup: rep.Speedup(), SizeAfter: res.SizeAfter, Passed: c.ok})
		return c, nil
	}
	// The calibration is chosen on accuracy: it does not change the layout, so speed between
	// two calibrations of one layout differs by noise only.
	var calBest *cand
	for _, cal := range []Calibration{MinMax, Percentile} {
		c, err := try(cal, layouts[0])
		if err != nil {
			return nil, Report{}, err
		}
		if calBest == nil || (c.ok && !calBest.ok) || (c.ok == calBest.ok && c.rep.Agreement > calBest.rep.Agreement) {
			calBest = c
		}
	}
	best = calBest
	for _, l := range layouts[1:] {
		c, err := try(calBest.cal, l)
		if err != nil {
			return nil, Report{}, err
		}
		if c != nil && better(c, best) {
			best = c
		}
	}
	best.res.Variants = tried
	if !best.ok {
		return best.res, best.rep, &BestError{Tried: tried, Gate: Gate(best.rep, opts.Threshold)}
	}
	return best.res, best.rep, nil
}

func hasSkipPrefix(skips []Skip, prefix string) bool {
	for _, s := range skips {
		if len(s.Reason) >= len(prefix) && s.Reason[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}
