package quant

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"google.golang.org/protobuf/proto"
)

// Mode selects how a model is quantized.
type Mode int

const (
	// Static inserts QuantizeLinear/DequantizeLinear pairs with scales calibrated on samples, in
	// the layout ONNX Runtime fuses into QLinearConv, QGemm and QLinearMatMul. Use it for CNNs.
	Static Mode = iota
	// Dynamic rewrites MatMul and Gemm with constant weights into DynamicQuantizeLinear +
	// MatMulInteger; activation scales are computed at run time, so no samples are needed.
	Dynamic
)

func (m Mode) String() string {
	switch m {
	case Static:
		return "static"
	case Dynamic:
		return "dynamic"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Calibration selects how static mode turns observed activations into a range.
type Calibration int

const (
	// MinMax uses the smallest and largest value seen on the samples.
	MinMax Calibration = iota
	// Percentile clips the range to the Percentile-th percentile at each end, which spends the
	// 256 levels on the values that occur instead of on rare outliers.
	Percentile
)

func (c Calibration) String() string {
	if c == Percentile {
		return "percentile"
	}
	return "minmax"
}

// Options configure Quantize. The zero value is static, min-max, uint8 activations.
type Options struct {
	Mode        Mode
	Calibration Calibration
	// Percentile is the upper percentile kept by Percentile calibration, e.g. 99.99 (the default).
	Percentile float64
	// Samples are the calibration inputs (static mode), one set of named tensors per sample. They
	// should be the bundle's reference samples: realistic inputs, not noise.
	Samples [][]onnxrt.Tensor
	// Int8Activations quantizes activations to int8 instead of uint8. uint8 activations with int8
	// weights (U8S8) is MLAS's native path on x86 and, with AVX512-VNNI or AVX-VNNI, does not
	// saturate; int8 (S8S8) is what ORT recommends on ARM and on x86 without VNNI.
	Int8Activations bool
	// MinElements skips weights with fewer elements: quantizing a tiny tensor saves nothing and
	// costs accuracy. Default 16.
	MinElements int
	// ModelDir is the folder of the model file, where external tensor data is looked up.
	ModelDir string
	// Threads is the intra-op thread count of the calibration session (0: ORT's default).
	Threads int
	// FloatDepthwise keeps depthwise convolutions whose channel count is not a multiple of 16
	// in float (weights too: int8 weights behind a DequantizeLinear would cost ORT its NCHWc
	// float kernel). Faster on such models on x86, at some size; QuantizeBest tries both.
	FloatDepthwise bool
	// EvalSamples are the held-out samples QuantizeBest gates each variant on (default Samples).
	EvalSamples [][]onnxrt.Tensor
	// Threshold is the agreement QuantizeBest requires (0: DefaultThreshold).
	Threshold float64
	// EvalThreads is the intra-op thread count of QuantizeBest's evaluation sessions, the same
	// for the float and the int8 model (0: 1, an edge device's share).
	EvalThreads int
	// FloatHardSwish leaves hard-swish activations in float (DequantizeLinear, five float ops,
	// QuantizeLinear) instead of computing them on the integers. For measurements.
	FloatHardSwish bool
	// NoPadDepthwise keeps depthwise convolutions at their own channel count. By default one whose
	// count is not a multiple of 16 is widened to the next multiple with zero filters (exact, see
	// padDepthwise), so that ORT packs it for MLAS's fast int8 depthwise kernel. For measurements.
	NoPadDepthwise bool
	// NoCloseMul leaves a Mul of a quantized and a float activation (squeeze-excite scaling) in
	// float instead of quantizing the float input so that ORT runs it as QLinearMul, and a
	// GlobalAveragePool of a quantized activation in float instead of quantizing its output so that
	// ORT runs QLinearGlobalAveragePool. For measurements.
	NoCloseMul bool
	// KeepSlowLayout turns off the layout choices made for ORT's CPU kernels beyond padding and
	// QLinearMul gates: a hard-swish feeding a MaxPool stays integer (ORT then pools on uint8,
	// slowly) and isolated light nodes are quantized anyway. For measurements.
	KeepSlowLayout bool
}

// Skip records a tensor or node that was left in float, and why.
type Skip struct {
	Node   string `json:"node,omitempty"`
	Tensor string `json:"tensor"`
	Reason string `json:"reason"`
}

// Result is a quantized model and what was done to it.
type Result struct {
	Model []byte `json:"-"`
	// Method describes the recipe, e.g. "static-qdq u8s8 per-channel minmax opset 13", for the
	// bundle manifest.
	Method     string `json:"method"`
	SizeBefore int64  `json:"size_before"`
	SizeAfter  int64  `json:"size_after"`
	// OpsetBefore and OpsetAfter differ when static mode upgraded the model to opset 13.
	OpsetBefore int64 `json:"opset_before"`
	OpsetAfter  int64 `json:"opset_after"`
	// FoldedBatchNorms counts BatchNormalization nodes merged into the Conv before them.
	FoldedBatchNorms int `json:"folded_batch_norms,omitempty"`
	// FoldedAffines counts scalar Mul/Add nodes after a Conv merged into its weights and bias.
	FoldedAffines int `json:"folded_affines,omitempty"`
	// PaddedDepthwise lists the depthwise Convs widened to a multiple of 16 channels (padDepthwise).
	PaddedDepthwise []string `json:"padded_depthwise,omitempty"`
	// Quantized names the nodes that now run in int8 ("Conv conv1").
	Quantized []string `json:"quantized"`
	// Activations maps each quantized activation to its calibrated range.
	Activations map[string][2]float32 `json:"activations,omitempty"`
	Skipped     []Skip                `json:"skipped,omitempty"`
	// WeightErrors is the per-layer weight quantization error (relative RMS of dequantized vs
	// float weights), a cheap proxy for which layers quantization hurts most.
	WeightErrors []LayerErr `json:"weight_errors,omitempty"`
	// Variants lists what QuantizeBest tried before choosing this result.
	Variants []Variant `json:"variants,omitempty"`
}

// Ratio is SizeBefore / SizeAfter.
func (r *Result) Ratio() float64 {
	if r.SizeAfter == 0 {
		return 0
	}
	return float64(r.SizeBefore) / float64(r.SizeAfter)
}

// ErrNothingQuantized is returned (inside a *NothingQuantizedError) when no node of the model
// could be quantized; shipping an "int8" variant that is the float model would mislead.
var ErrNothingQuantized = errors.New("quant: nothing to quantize")

// ErrNoSamples means static mode was asked to calibrate without samples.
var ErrNoSamples = errors.New("quant: static quantization needs calibration samples")

// ErrAlreadyQuantized means the input already contains quantized operators.
var ErrAlreadyQuantized = errors.New("quant: model is already quantized")

// NothingQuantizedError lists why every candidate was skipped.
type NothingQuantizedError struct {
	Skipped []Skip
}

func (e *NothingQuantizedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %d candidates skipped", ErrNothingQuantized, len(e.Skipped))
	for i, s := range e.Skipped {
		if i == 3 {
			fmt.Fprintf(&b, "; ...")
			break
		}
		fmt.Fprintf(&b, "; %s %s: %s", s.Node, s.Tensor, s.Reason)
	}
	return b.String()
}

func (e *NothingQuantizedError) Is(target error) bool { return target == ErrNothingQuantized }

// Quantize returns an int8 version of a float32 ONNX model. Static mode needs onnxrt.Init to have
// succeeded (it calibrates in ONNX Runtime); dynamic mode does not run the model.
func Quantize(ctx context.Context, model []byte, opts Options) (*Result, error) {
	if opts.Percentile == 0 {
		opts.Percentile = 99.99
	}
	if opts.Percentile <= 50 || opts.Percentile > 100 {
		return nil, fmt.Errorf("quant: percentile %g out of (50, 100]", opts.Percentile)
	}
	if opts.MinElements == 0 {
		opts.MinElements = 16
	}
	md, err := parseModel(model, opts.ModelDir)
	if err != nil {
		return nil, err
	}
	if d := detect(md.m); d.Quantized() {
		return nil, fmt.Errorf("%w (%s: %s); evaluate it against its float parent with Evaluate", ErrAlreadyQuantized, d.Format, strings.Join(d.Ops, ", "))
	}
	res := &Result{SizeBefore: int64(len(model)), OpsetBefore: onnxpb.Opset(md.m)}
	switch opts.Mode {
	case Static:
		err = quantizeStatic(ctx, md, opts, res)
	case Dynamic:
		err = quantizeDynamic(md, opts, res)
	default:
		err = fmt.Errorf("quant: unknown mode %v", opts.Mode)
	}
	if err != nil {
		return nil, err
	}
	if len(res.Quantized) == 0 {
		return nil, &NothingQuantizedError{Skipped: res.Skipped}
	}
	res.OpsetAfter = onnxpb.Opset(md.m)
	if res.Model, err = proto.Marshal(md.m); err != nil {
		return nil, fmt.Errorf("quant: marshal: %w", err)
	}
	res.SizeAfter = int64(len(res.Model))
	sortLayers(res.WeightErrors)
	return res, nil
}
