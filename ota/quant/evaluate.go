package quant

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// DefaultThreshold is the agreement the gate requires unless told otherwise.
const DefaultThreshold = 0.99

// LayerErr is the error one layer contributes.
type LayerErr struct {
	Layer  string  `json:"layer"`
	Tensor string  `json:"tensor"`
	RelErr float64 `json:"rel_err"` // ||q - f|| / ||f||
	// Source is "activation" (the layer's output in the quantized model vs the float model, on
	// the evaluation samples) or "weight" (dequantized vs float weights, a proxy).
	Source string `json:"source"`
}

func sortLayers(l []LayerErr) {
	sort.SliceStable(l, func(i, j int) bool { return l[i].RelErr > l[j].RelErr })
}

// EvalOptions configure Evaluate. The zero value is usable.
type EvalOptions struct {
	// Threads is the intra-op thread count of both models' sessions; the same for both so that the
	// latency comparison is fair. 0 is ORT's default.
	Threads int
	// Runs is how many timed runs the latency medians use. Default 20.
	Runs int
	// Tolerance, for outputs that are not class scores, is how far (as a fraction of the float
	// output's range over the samples) a quantized element may be from the float one and still
	// agree. Default 0.05.
	Tolerance float64
	// LayerSamples is how many samples the per-layer comparison runs (it exposes every layer as
	// an output, which is slow and memory-hungry on large maps). Default 2; -1 disables it.
	LayerSamples int
	// WorstLayers is how many layers the report keeps. Default 5.
	WorstLayers int
	// ProfileDir receives ORT's profile of the quantized model (default: a temporary folder,
	// removed afterwards).
	ProfileDir string
}

// Report compares a quantized model with its float parent.
type Report struct {
	Samples int `json:"samples"`
	// Agreement is the figure the gate checks: top-1 agreement when the model has a
	// classification output ([N, C], C >= 2), otherwise the fraction of output elements within
	// Tolerance. AgreementKind says which ("top1" or "elementwise").
	Agreement     float64 `json:"agreement"`
	AgreementKind string  `json:"agreement_kind"`
	// Top1Agreement is -1 when the model has no classification output.
	Top1Agreement float64 `json:"top1_agreement"`
	// FloatClasses counts the distinct top-1 classes of the float model over the samples: a set
	// on which the float model always says the same thing cannot show a broken quantization.
	FloatClasses int     `json:"float_classes,omitempty"`
	MaxAbsDiff   float64 `json:"max_abs_diff"`
	MeanAbsDiff  float64 `json:"mean_abs_diff"`
	RelErr       float64 `json:"rel_err"` // ||q - f|| / ||f|| over all outputs and samples
	SizeFloat    int64   `json:"size_float"`
	SizeQuant    int64   `json:"size_quant"`
	// LatencyFloat and LatencyQuant are medians of Runs runs on the first sample, same threads.
	LatencyFloat time.Duration `json:"latency_float"`
	LatencyQuant time.Duration `json:"latency_quant"`
	// Kernels lists the operator kernels the quantized model ran, longest total first, from
	// ORT's profile: the proof that QLinearConv (or MatMulInteger) ran, not an assumption.
	Kernels     []string            `json:"kernels"`
	KernelStats []onnxrt.KernelStat `json:"kernel_stats,omitempty"`
	// Format is how the quantized model is quantized (see Detect).
	Format      string     `json:"format"`
	WorstLayers []LayerErr `json:"worst_layers,omitempty"`
	// LayerNote says why WorstLayers is empty, when it is.
	LayerNote string `json:"layer_note,omitempty"`
}

// Speedup is LatencyFloat / LatencyQuant (> 1: the int8 model is faster).
func (r Report) Speedup() float64 {
	if r.LatencyQuant == 0 {
		return 0
	}
	return float64(r.LatencyFloat) / float64(r.LatencyQuant)
}

// Evaluate runs the float model and the quantized one on samples in ONNX Runtime and compares
// their outputs, speed and kernels. quant may come from Quantize or from elsewhere (ORT's
// quantize_static, a vendor tool): the gate is the same. onnxrt.Init must have succeeded.
func Evaluate(ctx context.Context, float, quant []byte, samples [][]onnxrt.Tensor, opts EvalOptions) (Report, error) {
	if len(samples) == 0 {
		return Report{}, errors.New("quant: evaluate needs at least one sample")
	}
	if opts.Runs <= 0 {
		opts.Runs = 20
	}
	if opts.Tolerance <= 0 {
		opts.Tolerance = 0.05
	}
	if opts.LayerSamples == 0 {
		opts.LayerSamples = 2
	}
	if opts.WorstLayers <= 0 {
		opts.WorstLayers = 5
	}
	qm, err := onnxpb.ReadModel(quant)
	if err != nil {
		return Report{}, fmt.Errorf("quant: quantized model: %w", err)
	}
	rep := Report{Samples: len(samples), SizeFloat: int64(len(float)), SizeQuant: int64(len(quant)), Format: detect(qm).Format}
	so := onnxrt.Options{IntraOpThreads: opts.Threads}
	fs, err := onnxrt.NewSession(float, so)
	if err != nil {
		return Report{}, fmt.Errorf("quant: float model: %w", err)
	}
	defer fs.Close()
	qs, err := onnxrt.NewSession(quant, so)
	if err != nil {
		return Report{}, fmt.Errorf("quant: quantized model: %w", err)
	}
	defer qs.Close()

	fOut := make([][]onnxrt.Tensor, len(samples))
	qOut := make([][]onnxrt.Tensor, len(samples))
	for i, s := range samples {
		if fOut[i], err = fs.Run(ctx, s); err != nil {
			return Report{}, fmt.Errorf("quant: float model, sample %d: %w", i, err)
		}
		if qOut[i], err = qs.Run(ctx, s); err != nil {
			return Report{}, fmt.Errorf("quant: quantized model, sample %d: %w", i, err)
		}
	}
	if err := compareOutputs(&rep, fOut, qOut, opts.Tolerance); err != nil {
		return Report{}, err
	}
	if rep.LatencyFloat, rep.LatencyQuant, err = latency(ctx, fs, qs, samples[0], opts.Runs); err != nil {
		return Report{}, err
	}
	if err := profileKernels(ctx, &rep, quant, samples[0], so, opts.ProfileDir); err != nil {
		return Report{}, err
	}
	if opts.LayerSamples > 0 {
		n := min(opts.LayerSamples, len(samples))
		layers, err := layerErrors(ctx, float, quant, samples[:n], opts.Threads)
		if err != nil {
			rep.LayerNote = "per-layer comparison unavailable: " + err.Error()
		} else {
			rep.WorstLayers = layers[:min(len(layers), opts.WorstLayers)]
			if len(layers) == 0 {
				rep.LayerNote = "no layer output has the same name in both models"
			}
		}
	}
	return rep, nil
}

// compareOutputs fills the accuracy figures. Outputs are matched by name.
func compareOutputs(rep *Report, fOut, qOut [][]onnxrt.Tensor, tol float64) error {
	type acc struct {
		lo, hi       float64
		agree, total int
	}
	var (
		top1Agree, top1Total int
		num, den, sumAbs     float64
		count                int
		classes              = map[int]bool{}
	)
	// The range of each float output over all samples sets the elementwise tolerance.
	ranges := map[string]*acc{}
	for _, outs := range fOut {
		for _, t := range outs {
			v, ok := t.Data.([]float32)
			if !ok {
				continue
			}
			a := ranges[t.Name]
			if a == nil {
				a = &acc{lo: math.Inf(1), hi: math.Inf(-1)}
				ranges[t.Name] = a
			}
			for _, x := range v {
				a.lo, a.hi = math.Min(a.lo, float64(x)), math.Max(a.hi, float64(x))
			}
		}
	}
	for i := range fOut {
		qByName := map[string]onnxrt.Tensor{}
		for _, t := range qOut[i] {
			qByName[t.Name] = t
		}
		for _, ft := range fOut[i] {
			qt, ok := qByName[ft.Name]
			if !ok {
				return fmt.Errorf("quant: quantized model has no output %q", ft.Name)
			}
			fv, ok1 := ft.Data.([]float32)
			qv, ok2 := qt.Data.([]float32)
			if !ok1 || !ok2 {
				continue // integer outputs (e.g. a state counter) carry no accuracy signal here
			}
			if len(fv) != len(qv) {
				return fmt.Errorf("quant: output %q: float has %d elements, quantized %d", ft.Name, len(fv), len(qv))
			}
			a := ranges[ft.Name]
			span := a.hi - a.lo
			for j := range fv {
				d := math.Abs(float64(qv[j]) - float64(fv[j]))
				rep.MaxAbsDiff = math.Max(rep.MaxAbsDiff, d)
				sumAbs += d
				num += d * d
				den += float64(fv[j]) * float64(fv[j])
				count++
				a.total++
				if d <= tol*span || d == 0 {
					a.agree++
				}
			}
			if len(ft.Shape) == 2 && ft.Shape[1] >= 2 {
				c := int(ft.Shape[1])
				for r := 0; r < int(ft.Shape[0]); r++ {
					fc, qc := argmax(fv[r*c:(r+1)*c]), argmax(qv[r*c:(r+1)*c])
					classes[fc] = true
					top1Total++
					if fc == qc {
						top1Agree++
					}
				}
			}
		}
	}
	if count == 0 {
		return errors.New("quant: the model has no FLOAT outputs to compare")
	}
	rep.MeanAbsDiff = sumAbs / float64(count)
	if den > 0 {
		rep.RelErr = math.Sqrt(num / den)
	}
	rep.Top1Agreement = -1
	if top1Total > 0 {
		rep.Top1Agreement = float64(top1Agree) / float64(top1Total)
		rep.Agreement, rep.AgreementKind = rep.Top1Agreement, "top1"
		rep.FloatClasses = len(classes)
		return nil
	}
	rep.Agreement, rep.AgreementKind = 1, "elementwise"
	for _, a := range ranges {
		if a.total > 0 {
			rep.Agreement = math.Min(rep.Agreement, float64(a.agree)/float64(a.total))
		}
	}
	return nil
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// latency returns the median run time of each session, alternating runs so that a change in
// machine load (other tests, turbo) hits both alike.
func latency(ctx context.Context, fs, qs *onnxrt.Session, sample []onnxrt.Tensor, runs int) (time.Duration, time.Duration, error) {
	var ft, qt []time.Duration
	for i := -2; i < runs; i++ { // two warm-up runs each
		for _, p := range []struct {
			s *onnxrt.Session
			d *[]time.Duration
		}{{fs, &ft}, {qs, &qt}} {
			start := time.Now()
			if _, err := p.s.Run(ctx, sample); err != nil {
				return 0, 0, fmt.Errorf("quant: latency run: %w", err)
			}
			if i >= 0 {
				*p.d = append(*p.d, time.Since(start))
			}
		}
	}
	return median(ft), median(qt), nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func profileKernels(ctx context.Context, rep *Report, quant []byte, sample []onnxrt.Tensor, so onnxrt.Options, dir string) error {
	if dir == "" {
		tmp, err := os.MkdirTemp("", "quant-profile-")
		if err != nil {
			return fmt.Errorf("quant: profile folder: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	so.ProfilePath = filepath.Join(dir, "quant")
	s, err := onnxrt.NewSession(quant, so)
	if err != nil {
		return fmt.Errorf("quant: profiling session: %w", err)
	}
	if _, err := s.Run(ctx, sample); err != nil {
		s.Close()
		return fmt.Errorf("quant: profiling run: %w", err)
	}
	path, err := s.EndProfiling()
	if err != nil {
		return fmt.Errorf("quant: end profiling: %w", err)
	}
	stats, err := onnxrt.ReadProfile(path)
	if err != nil {
		return fmt.Errorf("quant: %w", err)
	}
	rep.KernelStats = stats
	seen := map[string]bool{}
	for _, st := range stats {
		if !seen[st.Op] {
			seen[st.Op] = true
			rep.Kernels = append(rep.Kernels, st.Op)
		}
	}
	return nil
}

// layerOps are the float ops whose outputs the per-layer comparison looks at.
var layerOps = map[string]bool{"Conv": true, "MatMul": true, "Gemm": true, "BatchNormalization": true, "ConvTranspose": true}

// intOps produce integer tensors; a same-named tensor from one of them is not comparable.
var intOps = map[string]bool{"QuantizeLinear": true, "DynamicQuantizeLinear": true, "MatMulInteger": true,
	"ConvInteger": true, "QLinearConv": true, "QLinearMatMul": true, "QGemm": true, "QLinearAdd": true, "QLinearMul": true}

// layerErrors compares, layer by layer, the outputs the two models share by name: each model is
// re-run with those tensors exposed as outputs. In a Q/DQ model, exposing a Conv's output keeps
// ORT from fusing it, so the quantized side runs DequantizeLinear -> Conv in float: the figure is
// the error that quantized inputs and weights cause at that layer, before its own output
// rounding. Tensors the quantizer renamed (or an external tool's QOperator model, whose layer
// outputs are uint8) do not appear; then only Result.WeightErrors remains as a proxy.
func layerErrors(ctx context.Context, float, quant []byte, samples [][]onnxrt.Tensor, threads int) ([]LayerErr, error) {
	fm, err := onnxpb.ReadModel(float)
	if err != nil {
		return nil, err
	}
	qm, err := onnxpb.ReadModel(quant)
	if err != nil {
		return nil, err
	}
	qProducer := map[string]string{}
	for _, n := range qm.GetGraph().GetNode() {
		for _, o := range n.GetOutput() {
			qProducer[o] = n.GetOpType()
		}
	}
	var names []string
	layerOf := map[string]string{}
	for _, n := range fm.GetGraph().GetNode() {
		if !layerOps[n.GetOpType()] || len(n.GetOutput()) == 0 {
			continue
		}
		o := n.GetOutput()[0]
		if op, ok := qProducer[o]; ok && !intOps[op] {
			names = append(names, o)
			layerOf[o] = nodeName(n)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	fObs, err := observeValues(ctx, fm, names, samples, threads)
	if err != nil {
		return nil, fmt.Errorf("float: %w", err)
	}
	qObs, err := observeValues(ctx, qm, names, samples, threads)
	if err != nil {
		return nil, fmt.Errorf("quantized: %w", err)
	}
	var out []LayerErr
	for _, name := range names {
		f, q := fObs[name], qObs[name]
		if len(f) == 0 || len(f) != len(q) {
			continue
		}
		var num, den float64
		for i := range f {
			d := float64(q[i]) - float64(f[i])
			num += d * d
			den += float64(f[i]) * float64(f[i])
		}
		e := math.Sqrt(num / math.Max(den, 1e-30))
		out = append(out, LayerErr{Layer: layerOf[name], Tensor: name, RelErr: e, Source: "activation"})
	}
	sortLayers(out)
	return out, nil
}

// observeValues runs m with names exposed and returns their values concatenated over samples.
func observeValues(ctx context.Context, m *onnxpb.ModelProto, names []string, samples [][]onnxrt.Tensor, threads int) (map[string][]float32, error) {
	b, err := withOutputs(m, names)
	if err != nil {
		return nil, err
	}
	s, err := onnxrt.NewSession(b, onnxrt.Options{IntraOpThreads: threads})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	vals := map[string][]float32{}
	for _, in := range samples {
		out, err := s.Run(ctx, in)
		if err != nil {
			return nil, err
		}
		for _, t := range out {
			if v, ok := t.Data.([]float32); ok && want[t.Name] {
				vals[t.Name] = append(vals[t.Name], v...)
			}
		}
	}
	return vals, nil
}

// ErrGate is returned (inside a *GateError) when a quantized model disagrees with its float
// parent more than the threshold allows.
var ErrGate = errors.New("quant: accuracy gate failed")

// GateError carries the figures a failed gate reports.
type GateError struct {
	Agreement, Threshold float64
	Kind                 string
	Worst                []LayerErr
}

func (e *GateError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %s agreement %.4f below %.4f", ErrGate, e.Kind, e.Agreement, e.Threshold)
	if len(e.Worst) > 0 {
		b.WriteString("; worst layers:")
		for _, l := range e.Worst {
			fmt.Fprintf(&b, " %s (%s) rel err %.3g;", l.Layer, l.Source, l.RelErr)
		}
	}
	return strings.TrimSuffix(b.String(), ";")
}

func (e *GateError) Is(target error) bool { return target == ErrGate }

// Gate returns a *GateError when the report's agreement is below threshold (0 means
// DefaultThreshold). Forcing a build past a failed gate is the caller's decision: it should log
// the error, with its worst layers, into the manifest.
func Gate(r Report, threshold float64) error {
	if threshold == 0 {
		threshold = DefaultThreshold
	}
	if r.Agreement >= threshold && !math.IsNaN(r.Agreement) {
		return nil
	}
	return &GateError{Agreement: r.Agreement, Threshold: threshold, Kind: r.AgreementKind, Worst: r.WorstLayers}
}
