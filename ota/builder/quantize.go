package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/quant"
)

// Quantize modes of `bundle build --quantize`.
const (
	QuantInt8        = "int8"         // static QDQ (convolutional models), dynamic when static finds nothing
	QuantInt8Static  = "int8-static"  // static QDQ only
	QuantInt8Dynamic = "int8-dynamic" // MatMulInteger for MatMul-heavy models
)

// quantizeModel turns the float model into the int8 one, or fails the build with the gate's
// report. It returns the quantized model's path (a temp file) and the manifest's facts.
func quantizeModel(ctx context.Context, o Options, model []byte, samples [][]onnxrt.Tensor, schema onnxrt.Schema) (string, *bundle.Quantization, error) {
	if len(samples) == 0 && o.Quantize != QuantInt8Dynamic {
		return "", nil, errors.New("static int8 quantization calibrates on real inputs: pass --reference SAMPLES (or use --quantize int8-dynamic)")
	}
	if len(samples) == 0 {
		gen, err := onnxrt.GenerateInputs(schema, 16, o.Seed+7, nil)
		if err != nil {
			return "", nil, err
		}
		samples = gen
	}
	// Hold out a third of the samples for the accuracy gate when there are enough.
	calib, eval := samples, samples
	if len(samples) >= 30 {
		cut := len(samples) * 2 / 3
		calib, eval = samples[:cut], samples[cut:]
	}
	threshold := o.MinAgreement
	if threshold == 0 {
		threshold = quant.DefaultThreshold
	}
	opts := quant.Options{Samples: calib, EvalSamples: eval, ModelDir: filepath.Dir(o.ModelPath), Threshold: threshold}
	var res *quant.Result
	var rep quant.Report
	var err error
	switch o.Quantize {
	case QuantInt8, QuantInt8Static:
		o.say("quantizing to int8 (static, calibrating on %d samples, gating on %d)", len(calib), len(eval))
		res, rep, err = quant.QuantizeBest(ctx, model, opts)
		if o.Quantize == QuantInt8 && errors.Is(err, quant.ErrNothingQuantized) {
			o.say("no convolution or matrix weights to quantize statically; trying dynamic")
			res, rep, err = dynamic(ctx, model, opts, eval)
		}
	case QuantInt8Dynamic:
		o.say("quantizing to int8 (dynamic)")
		res, rep, err = dynamic(ctx, model, opts, eval)
	default:
		return "", nil, fmt.Errorf("--quantize %q: use int8, int8-static or int8-dynamic", o.Quantize)
	}
	var be *quant.BestError
	if err != nil && !(o.Force && errors.As(err, &be) && res != nil) {
		return "", nil, fmt.Errorf("int8 quantization: %w (--force ships it anyway)", err)
	}
	gateErr := quant.Gate(rep, threshold)
	if gateErr != nil && !o.Force {
		return "", nil, fmt.Errorf("int8 model fails the accuracy gate: %w (--force ships it anyway)", gateErr)
	}
	// 0.9, not 1: a tie on a microsecond model measures as either side of 1 from run to run.
	if err := quant.SpeedGate(rep, 0.9); err != nil && !o.Force {
		return "", nil, fmt.Errorf("int8 model is slower than fp32 on this CPU (%.2fx): %w; ship the fp32 variant, or --force", rep.Speedup(), err)
	}
	f, err := os.CreateTemp("", "edgefleet-int8-*.onnx")
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	if _, err := f.Write(res.Model); err != nil {
		os.Remove(f.Name())
		return "", nil, err
	}
	q := &bundle.Quantization{Method: res.Method, SizeBefore: res.SizeBefore, SizeAfter: res.SizeAfter, Agreement: rep.Agreement,
		Extra: map[string]string{
			"agreement_kind":    rep.AgreementKind,
			"max_abs_diff":      strconv.FormatFloat(rep.MaxAbsDiff, 'g', 6, 64),
			"mean_abs_diff":     strconv.FormatFloat(rep.MeanAbsDiff, 'g', 6, 64),
			"latency_fp32_us":   strconv.FormatInt(rep.LatencyFloat.Microseconds(), 10),
			"latency_int8_us":   strconv.FormatInt(rep.LatencyQuant.Microseconds(), 10),
			"samples":           strconv.Itoa(rep.Samples),
			"kernels":           strings.Join(rep.Kernels, ","),
			"skipped":           strconv.Itoa(len(res.Skipped)),
			"gate_threshold":    strconv.FormatFloat(threshold, 'g', 4, 64),
			"forced":            strconv.FormatBool(o.Force && gateErr != nil),
			"quantized_tensors": strconv.Itoa(len(res.Quantized)),
			"padded_depthwise":  strconv.Itoa(len(res.PaddedDepthwise)),
			"variants_tried":    strconv.Itoa(len(res.Variants)),
		}}
	o.say("int8: %d -> %d bytes (%.2fx), agreement %.4f, latency %v -> %v", res.SizeBefore, res.SizeAfter, res.Ratio(), rep.Agreement, rep.LatencyFloat, rep.LatencyQuant)
	return f.Name(), q, nil
}

func dynamic(ctx context.Context, model []byte, opts quant.Options, eval [][]onnxrt.Tensor) (*quant.Result, quant.Report, error) {
	opts.Mode = quant.Dynamic
	res, err := quant.Quantize(ctx, model, opts)
	if err != nil {
		return nil, quant.Report{}, err
	}
	rep, err := quant.Evaluate(ctx, model, res.Model, eval, quant.EvalOptions{Threads: 1})
	return res, rep, err
}
