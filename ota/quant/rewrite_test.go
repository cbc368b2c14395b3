package quant

import (
	"context"
	"testing"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"google.golang.org/protobuf/proto"
)

// floatRewritten returns the float model with the graph rewrites the quantizer makes before it
// quantizes — BatchNormalization and scalar affines folded into the Conv before them, each
// hard-swish computed as HardSigmoid(1/6, 1/2) * x (the body of ONNX's HardSwish function, which
// is how ORT runs HardSwish on CPU, and which needs no opset upgrade) — so that the benchmark can
// tell how much of int8's gain is graph surgery that fp32 could have had too.
func floatRewritten(tb testing.TB, model []byte) []byte {
	tb.Helper()
	md, err := parseModel(model, "")
	if err != nil {
		tb.Fatal(err)
	}
	foldBatchNorm(md)
	foldAffine(md)
	g := md.main
	swishes := 0
	for _, n := range append([]*onnxpb.NodeProto(nil), g.g.GetNode()...) {
		if n.GetOpType() != "Conv" {
			continue
		}
		h := matchHardSwish(md, n.GetOutput()[0])
		if h == nil {
			continue
		}
		out := h.nodes[h.core-1].GetOutput()[0]
		var at int
		for i, x := range g.g.Node {
			if x == h.nodes[0] {
				at = i
			}
		}
		gate := md.fresh(out + "_hardsigmoid")
		alpha := &onnxpb.AttributeProto{Name: proto.String("alpha"), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(1.0 / 6)}
		beta := &onnxpb.AttributeProto{Name: proto.String("beta"), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(0.5)}
		repl := []*onnxpb.NodeProto{
			node("HardSigmoid", gate, []string{h.x}, []string{gate}, alpha, beta),
			node("Mul", out, []string{h.x, gate}, []string{out}),
		}
		for _, c := range h.nodes[:h.core] {
			g.g.Node = deleteNode(g.g.Node, c)
		}
		at = min(at, len(g.g.Node))
		g.g.Node = append(g.g.Node[:at], append(repl, g.g.Node[at:]...)...)
		swishes++
	}
	if swishes == 0 {
		tb.Fatal("no hard-swish found")
	}
	b, err := proto.Marshal(md.m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestFloatRewriteIsExact checks the graph rewrites on their own, in float: folding BN and the
// affine blocks into the Conv and computing hard-swish as HardSigmoid*x must not change the
// outputs beyond float rounding. (The int8 path relies on the same pattern matching.)
func TestFloatRewriteIsExact(t *testing.T) {
	for _, c := range []struct {
		file    string
		samples func(in string) [][]onnxrt.Tensor
	}{
		{"ocr_cls.onnx", func(in string) [][]onnxrt.Tensor { return clsSamples(in, 8, 3) }},
		{"ocr_det.onnx", func(in string) [][]onnxrt.Tensor { return detSamples(in, 1, detSize, 3) }},
	} {
		float := realModel(t, c.file)
		schema, err := onnxrt.Inspect(float)
		if err != nil {
			t.Fatal(err)
		}
		rw := floatRewritten(t, float)
		rep, err := Evaluate(context.Background(), float, rw, c.samples(schema.Inputs[0].Name), EvalOptions{Threads: 1, Runs: 3, LayerSamples: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: max|d| %.3g, rel err %.3g, latency %v -> %v", c.file, rep.MaxAbsDiff, rep.RelErr, rep.LatencyFloat, rep.LatencyQuant)
		if rep.RelErr > 1e-4 || rep.Agreement < 1 {
			t.Errorf("%s: rewritten float model differs: rel err %.3g, agreement %.4f", c.file, rep.RelErr, rep.Agreement)
		}
	}
}

// TestHardSwishGrid: the hard-swish input grid puts -3 exactly on the lowest integer level and
// 0 exactly on the zero point, and still covers the calibrated maximum.
func TestHardSwishGrid(t *testing.T) {
	for _, hi := range []float32{0.5, 3, 6, 20, 200, 1000} {
		for _, int8Act := range []bool{false, true} {
			s, zp, k := hardSwishGrid(hi, int8Act)
			qmin, qmax := qrange(int8Act)
			if zp != int(qmin)+k || float64(s)*float64(k) < 3-1e-5 || float64(s)*float64(k) > 3+1e-5 {
				t.Errorf("hi %v int8 %v: scale %v zp %d k %d: k*scale must be 3", hi, int8Act, s, zp, k)
			}
			if covered := float64(s) * (qmax - float64(zp)); hi <= 762 && covered < float64(hi)-1e-4 {
				t.Errorf("hi %v int8 %v: grid covers up to %v only", hi, int8Act, covered)
			}
		}
	}
}

// TestPadDepthwiseIsExact: widening ocr_cls's depthwise convolutions (8, 24, 40, 88, 104 and
// 200 channels) to multiples of 16 with zero filters must not change the float model's outputs,
// and every depthwise Conv left must have a multiple of 16 channels.
func TestPadDepthwiseIsExact(t *testing.T) {
	float := realModel(t, "ocr_cls.onnx")
	md, err := parseModel(float, "")
	if err != nil {
		t.Fatal(err)
	}
	foldBatchNorm(md)
	foldAffine(md)
	padded := padDepthwise(md)
	for _, p := range padded {
		t.Log(p)
	}
	if len(padded) < 6 {
		t.Errorf("padded %d depthwise convolutions, want the 7 of 8, 24, 40, 88 (2), 104 and 200 channels", len(padded))
	}
	for _, n := range md.main.g.GetNode() {
		if c, ok := depthwiseChannels(md, n); ok && c%depthwiseAlign != 0 {
			t.Errorf("%s still has %d channels", nodeName(n), c)
		}
	}
	b, err := proto.Marshal(md.m)
	if err != nil {
		t.Fatal(err)
	}
	schema, err := onnxrt.Inspect(float)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Evaluate(context.Background(), float, b, clsSamples(schema.Inputs[0].Name, 8, 3), EvalOptions{Threads: 1, Runs: 3, LayerSamples: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("max|d| %.3g, rel err %.3g, latency %v -> %v", rep.MaxAbsDiff, rep.RelErr, rep.LatencyFloat, rep.LatencyQuant)
	if rep.RelErr > 1e-4 || rep.Agreement < 1 {
		t.Errorf("padded float model differs: rel err %.3g, agreement %.4f", rep.RelErr, rep.Agreement)
	}
}
