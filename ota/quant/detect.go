package quant

import (
	"fmt"
	"sort"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
)

// Detection says whether, and how, a model is already quantized.
type Detection struct {
	// Format is "qdq" (QuantizeLinear/DequantizeLinear around float ops), "qoperator" (QLinearConv,
	// QLinearMatMul, QGemm, ...), "integer" (MatMulInteger/ConvInteger, dynamic quantization) or ""
	// for a float model. A model mixing formats gets the first that applies in that order of
	// precedence: qoperator, integer, qdq.
	Format string `json:"format,omitempty"`
	// Ops lists the quantized operator types found, sorted.
	Ops []string `json:"ops,omitempty"`
}

// Quantized reports whether the model contains quantized operators.
func (d Detection) Quantized() bool { return d.Format != "" }

var quantOps = map[string]string{
	"QLinearConv": "qoperator", "QLinearMatMul": "qoperator", "QGemm": "qoperator", "QLinearAdd": "qoperator",
	"QLinearMul": "qoperator", "QLinearGlobalAveragePool": "qoperator", "QLinearConcat": "qoperator",
	"QLinearSigmoid": "qoperator", "QLinearLeakyRelu": "qoperator", "QLinearAveragePool": "qoperator",
	"QLinearSoftmax": "qoperator", "QAttention": "qoperator",
	"MatMulInteger": "integer", "ConvInteger": "integer", "DynamicQuantizeMatMul": "integer",
	"DynamicQuantizeLinear": "integer", "MatMulIntegerToFloat": "integer", "DynamicQuantizeLSTM": "integer",
	"QuantizeLinear": "qdq", "DequantizeLinear": "qdq",
}

// Detect reports whether model (ONNX bytes) is already quantized, e.g. by ORT's own tooling, so
// that a bundle build can put it through the accuracy gate against its float parent instead of
// quantizing it twice.
func Detect(model []byte) (Detection, error) {
	m, err := onnxpb.ReadModel(model)
	if err != nil {
		return Detection{}, fmt.Errorf("quant: %w", err)
	}
	return detect(m), nil
}

func detect(m *onnxpb.ModelProto) Detection {
	found := map[string]string{}
	onnxpb.WalkGraphs(m.GetGraph(), func(g *onnxpb.GraphProto) {
		for _, n := range g.GetNode() {
			if f, ok := quantOps[n.GetOpType()]; ok {
				found[n.GetOpType()] = f
			}
		}
	})
	var d Detection
	for op := range found {
		d.Ops = append(d.Ops, op)
	}
	sort.Strings(d.Ops)
	for _, f := range []string{"qoperator", "integer", "qdq"} {
		for _, ff := range found {
			if ff == f && d.Format == "" {
				d.Format = f
			}
		}
	}
	return d
}
