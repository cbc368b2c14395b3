package quant

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// TestQuantizeBest: on both OCR models QuantizeBest must return a variant that passes the gate on
// held-out samples, say which recipes it tried (calibrations and layouts), pick the calibration by
// agreement and the layout by measured speed among those that pass (what it measured is in
// Variants; the test checks the choice is consistent with it, it asserts no timing), and record in the Report whether the chosen
// variant is slower than fp32 (SpeedGate), which the bundle builder uses to refuse it unless
// forced. Which variant wins is logged, not asserted: it depends on borderline samples and on
// latency medians taken on a shared machine.
func TestQuantizeBest(t *testing.T) {
	for _, c := range []struct {
		file  string
		calib func(in string) [][]onnxrt.Tensor
		eval  func(in string) [][]onnxrt.Tensor
	}{
		{"ocr_cls.onnx", func(in string) [][]onnxrt.Tensor { return clsSamples(in, clsCalibSamples, 1) },
			func(in string) [][]onnxrt.Tensor { return clsSamples(in, clsEvalSamples, 2) }},
		{"ocr_det.onnx", func(in string) [][]onnxrt.Tensor { return detSamples(in, detCalibSamples, detSize, 1) },
			func(in string) [][]onnxrt.Tensor { return detSamples(in, detEvalSamples, detSize, 2) }},
	} {
		t.Run(c.file, func(t *testing.T) {
			float := realModel(t, c.file)
			schema, err := onnxrt.Inspect(float)
			if err != nil {
				t.Fatal(err)
			}
			in := schema.Inputs[0].Name
			res, rep, err := QuantizeBest(context.Background(), float, Options{Samples: c.calib(in), EvalSamples: c.eval(in), Threads: 2})
			for _, v := range res.Variants {
				t.Logf("tried %-60q agreement %.4f speedup %.2fx size %d passed %v", v.Method, v.Agreement, v.Speedup, v.SizeAfter, v.Passed)
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("chose %q: agreement %.4f, %d -> %d bytes, speedup %.2fx, speed gate: %v", res.Method, rep.Agreement, res.SizeBefore, res.SizeAfter, rep.Speedup(), SpeedGate(rep, 0))
			if len(res.Variants) < 2 {
				t.Errorf("tried %d variants, want min-max and percentile at least", len(res.Variants))
			}
			if err := Gate(rep, 0); err != nil {
				t.Errorf("chosen variant fails the gate: %v", err)
			}
			// Calibrations are chosen on agreement on the default layout, then layouts on measured
			// speed with that calibration.
			calOf := func(m string) string {
				if strings.Contains(m, "percentile") {
					return "percentile"
				}
				return "minmax"
			}
			layoutOf := func(m string) string {
				for _, l := range []string{" plain", " float-depthwise"} {
					if strings.HasSuffix(m, l) {
						return l
					}
				}
				return ""
			}
			var agreeDefault float64
			for _, v := range res.Variants {
				if layoutOf(v.Method) == "" && calOf(v.Method) == calOf(res.Method) {
					agreeDefault = v.Agreement
				}
			}
			for _, v := range res.Variants {
				if !v.Passed || v.Method == res.Method {
					continue
				}
				if layoutOf(v.Method) == "" && calOf(v.Method) != calOf(res.Method) && v.Agreement > agreeDefault {
					t.Errorf("calibration %q agrees better (%.4f > %.4f) but was not chosen", v.Method, v.Agreement, agreeDefault)
				}
				if calOf(v.Method) == calOf(res.Method) && v.Speedup > rep.Speedup()*(1+speedTie) {
					t.Errorf("layout %q passed and measured faster (%.2fx > %.2fx) but was not chosen", v.Method, v.Speedup, rep.Speedup())
				}
			}
			if len(res.Variants) < 3 {
				t.Errorf("tried %d variants, want min-max and percentile on the default layout and at least the plain layout", len(res.Variants))
			}
			if !hasKernel(rep.Kernels, "QLinearConv") {
				t.Errorf("no QLinearConv in the chosen variant: %v", rep.Kernels)
			}
		})
	}
	// SpeedGate itself.
	if err := SpeedGate(Report{LatencyFloat: 100, LatencyQuant: 120}, 0); !errors.Is(err, ErrSlower) {
		t.Errorf("SpeedGate passed a slower int8 model: %v", err)
	}
	if err := SpeedGate(Report{LatencyFloat: 100, LatencyQuant: 90}, 0); err != nil {
		t.Errorf("SpeedGate refused a faster int8 model: %v", err)
	}
}
