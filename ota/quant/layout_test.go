package quant

import (
	"context"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// kernelCount returns how many times op ran in a profiled run.
func kernelCount(stats []onnxrt.KernelStat, op string) int {
	n := 0
	for _, s := range stats {
		if s.Op == op {
			n += s.Count
		}
	}
	return n
}

// TestLayoutKernels asserts the structure that makes ocr_cls's int8 model fast, from ORT's
// profile (no timings): by default every depthwise convolution is widened to a multiple of 16
// channels (so that ORT packs it for MLAS's symmetric depthwise kernel) and runs as QLinearConv,
// and the squeeze-excite blocks pool on the integers (QLinearGlobalAveragePool) and scale as
// QLinearMul instead of a float Mul between a DequantizeLinear and a QuantizeLinear. The hard-swish before the MaxPool and the classifier
// MatMul after it stay float (ORT's uint8 MaxPool is slow; an isolated MatMul would need its own
// Q/DQ pair) and are reported as skipped. With padding off and FloatDepthwise on, the depthwise
// convolutions ORT's int8 kernel would be slow on stay float and are reported as skipped, with the
// reason.
func TestLayoutKernels(t *testing.T) {
	float := realModel(t, "ocr_cls.onnx")
	schema, err := onnxrt.Inspect(float)
	if err != nil {
		t.Fatal(err)
	}
	in := schema.Inputs[0].Name
	calib, eval := clsSamples(in, clsCalibSamples, 1), clsSamples(in, 2, 2)
	const depthwise = 9 // depthwise Convs in ocr_cls
	const unaligned = 8 // of which not a multiple of 16 channels (8, 24, 88, 88, 40, 104, 200, 200)
	const hardSwishes = 18
	const seBlocks = 9

	t.Run("default", func(t *testing.T) {
		res, err := Quantize(context.Background(), float, Options{Samples: calib})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.PaddedDepthwise) != unaligned {
			t.Errorf("padded %d depthwise convolutions, want %d: %v", len(res.PaddedDepthwise), unaligned, res.PaddedDepthwise)
		}
		for _, s := range res.Skipped {
			if strings.HasPrefix(s.Reason, "depthwise") {
				t.Errorf("depthwise conv skipped although padded: %+v", s)
			}
		}
		rep, err := Evaluate(context.Background(), float, res.Model, eval, EvalOptions{Threads: 1, Runs: 1, LayerSamples: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kernels: %+v", rep.KernelStats)
		if n := kernelCount(rep.KernelStats, "QLinearConv"); n < 35 {
			t.Errorf("QLinearConv ran %d times, want every non-SE convolution (35) including the %d depthwise", n, depthwise)
		}
		if n := kernelCount(rep.KernelStats, "QLinearMul"); n != hardSwishes-1+seBlocks {
			t.Errorf("QLinearMul ran %d times, want %d (hard-swish, all but the one before MaxPool) + %d (squeeze-excite scaling)", n, hardSwishes-1, seBlocks)
		}
		if n := kernelCount(rep.KernelStats, "Mul"); n > 1 {
			t.Errorf("%d float Mul kernels ran, want at most the hard-swish before the MaxPool", n)
		}
		var poolSkip, headSkip bool
		for _, s := range res.Skipped {
			poolSkip = poolSkip || strings.HasPrefix(s.Reason, "feeds MaxPool")
			headSkip = headSkip || (strings.HasPrefix(s.Node, "MatMul") && strings.HasPrefix(s.Reason, "isolated"))
		}
		if !poolSkip || !headSkip {
			t.Errorf("want the hard-swish before MaxPool and the isolated classifier MatMul reported as skipped: %+v", res.Skipped)
		}
		if hasKernel(rep.Kernels, "QLinearMatMul") {
			t.Errorf("the isolated classifier MatMul ran as QLinearMatMul")
		}
		if n := kernelCount(rep.KernelStats, "QLinearGlobalAveragePool"); n != seBlocks {
			t.Errorf("QLinearGlobalAveragePool ran %d times, want one per squeeze-excite block (%d)", n, seBlocks)
		}
		if n := kernelCount(rep.KernelStats, "Conv"); n != 0 {
			t.Errorf("%d float Conv kernels ran (a depthwise conv fell back to float?)", n)
		}
	})
	t.Run("float-depthwise", func(t *testing.T) {
		res, err := Quantize(context.Background(), float, Options{Samples: calib, NoPadDepthwise: true, FloatDepthwise: true})
		if err != nil {
			t.Fatal(err)
		}
		var skipped int
		for _, s := range res.Skipped {
			if strings.HasPrefix(s.Reason, "depthwise: int8 kernel slower on this CPU") {
				skipped++
				if !strings.HasPrefix(s.Node, "Conv") || s.Tensor == "" {
					t.Errorf("skip does not name the conv and its weight: %+v", s)
				}
			}
		}
		if skipped != unaligned {
			t.Errorf("%d depthwise convolutions reported skipped, want %d", skipped, unaligned)
		}
		rep, err := Evaluate(context.Background(), float, res.Model, eval, EvalOptions{Threads: 1, Runs: 1, LayerSamples: -1})
		if err != nil {
			t.Fatal(err)
		}
		if !hasKernel(rep.Kernels, "QLinearConv") {
			t.Errorf("no QLinearConv: %v", rep.Kernels)
		}
		if n := kernelCount(rep.KernelStats, "Conv") + kernelCount(rep.KernelStats, "FusedConv"); n < unaligned {
			t.Errorf("%d float convolution kernels, want at least the %d depthwise left float", n, unaligned)
		}
	})
}
