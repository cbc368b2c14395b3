package quant

import (
	"context"
	"errors"
	"fmt"
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

// QuantizeBest quantizes model statically with min-max and with percentile calibration, each
// with and without FloatDepthwise, evaluates every variant against the float model on
// opts.EvalSamples (default opts.Samples) and returns the one to ship: among the variants that
// pass the accuracy gate, those that are not slower than fp32 first, then the best agreement,
// then the fastest. The Report's Speedup says whether even the chosen one is slower (then
// SpeedGate fails and the builder should refuse it unless forced). When no variant passes the
// gate, it returns the best-agreement variant with a *BestError wrapping its *GateError.
// opts.Mode must be Static; opts.Calibration and opts.FloatDepthwise are overridden.
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
	}
	var (
		best  *cand
		tried []Variant
	)
	better := func(a, b *cand) bool { // a better than b
		if a.ok != b.ok {
			return a.ok
		}
		fa, fb := a.rep.Speedup() >= 1, b.rep.Speedup() >= 1
		if a.ok && fa != fb {
			return fa
		}
		if a.rep.Agreement != b.rep.Agreement {
			return a.rep.Agreement > b.rep.Agreement
		}
		return a.rep.Speedup() > b.rep.Speedup()
	}
	for _, cal := range []Calibration{MinMax, Percentile} {
		for _, fdw := range []bool{false, true} {
			o := opts
			o.Calibration, o.FloatDepthwise = cal, fdw
			res, err := Quantize(ctx, model, o)
			if err != nil {
				if fdw {
					continue // e.g. nothing left to quantize with depthwise kept float
				}
				return nil, Report{}, err
			}
			if fdw && !hasSkipPrefix(res.Skipped, "depthwise") {
				continue // no depthwise conv affected: the same model as without
			}
			method := res.Method
			if fdw {
				method += " float-depthwise"
				res.Method = method
			}
			rep, err := Evaluate(ctx, model, res.Model, eval, EvalOptions{Threads: threads, LayerSamples: 1})
			if err != nil {
				return nil, Report{}, err
			}
			c := &cand{res: res, rep: rep, ok: Gate(rep, opts.Threshold) == nil}
			tried = append(tried, Variant{Method: method, Agreement: rep.Agreement, Speedup: rep.Speedup(), SizeAfter: res.SizeAfter, Passed: c.ok})
			if best == nil || better(c, best) {
				best = c
			}
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
