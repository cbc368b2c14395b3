package quant

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
)

// ErrOpsetUpgrade means the model imports an opset below 13 and contains an operator whose
// meaning changed on the way to 13 in a way this package does not convert. Per-channel
// QuantizeLinear/DequantizeLinear (the axis attribute) exists only from opset 13, so such a model
// cannot get the static per-channel treatment.
var ErrOpsetUpgrade = errors.New("quant: cannot upgrade the model's opset to 13 safely")

// targetOpset is the first default-domain opset with per-channel Q/DQ.
const targetOpset = 13

// sameSince lists operators whose definition between the given opset and 13 either did not change
// or changed only by adding types or optional inputs/attributes whose defaults keep the old
// meaning. An operator missing from this table and from the converters below makes the upgrade
// refuse: a silent semantic change would be worse than a float model.
var sameSince = map[string]int64{
	"Abs": 6, "Add": 7, "Sub": 7, "Mul": 7, "Div": 7, "Neg": 6, "Sqrt": 6, "Exp": 6, "Log": 6,
	"Pow": 7, "Reciprocal": 6, "Relu": 6, "Sigmoid": 6, "Tanh": 6, "HardSigmoid": 6,
	"LeakyRelu": 6, "Elu": 6, "Selu": 6, "PRelu": 7, "Softplus": 1, "Erf": 9,
	"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 7, "BatchNormalization": 9,
	"InstanceNormalization": 6, "GlobalAveragePool": 1, "GlobalMaxPool": 1, "AveragePool": 7,
	"MaxPool": 8, "LRN": 1, "Concat": 4, "Reshape": 5, "Shape": 1, "Flatten": 1,
	"Transpose": 1, "Cast": 6, "Constant": 9, "Identity": 1, "Gather": 1, "Equal": 7,
	"Less": 7, "Greater": 7, "Not": 1, "And": 7, "Or": 7, "Where": 9, "Tile": 6, "Expand": 8,
	"ReduceMean": 1, "ReduceMax": 1, "ReduceMin": 1, "ReduceProd": 1, "ReduceL2": 1,
	"ConstantOfShape": 9, "Range": 11, "Resize": 11, "Pad": 11, "ArgMax": 1, "ArgMin": 1,
	"Max": 8, "Min": 8, "Sum": 8, "Mean": 8, "Floor": 6, "Ceil": 6, "Round": 11, "Sign": 9,
	"NonZero": 9, "Einsum": 12, "Size": 1, "If": 1, "Loop": 11, "Scan": 11,
}

// upgradeOpset rewrites a model that imports default-domain opset < 13 to import 13. ranks gives
// the observed rank of tensors (from calibration), which Softmax needs: before 13 it flattened
// its input to 2-D at axis, from 13 it works along one axis, and the two agree only when axis is
// the last dimension.
func upgradeOpset(md *model, ranks map[string]int) (from int64, err error) {
	from = onnxpb.Opset(md.m)
	if from >= targetOpset {
		return from, nil
	}
	if from < 7 {
		return from, fmt.Errorf("%w: opset %d is older than 7 (legacy broadcast and consumed_inputs)", ErrOpsetUpgrade, from)
	}
	var bad []string
	type edit func()
	var edits []edit
	for _, gr := range md.graphs {
		for _, n := range gr.g.GetNode() {
			if d := n.GetDomain(); d != "" && d != "ai.onnx" {
				continue
			}
			op := n.GetOpType()
			if since, ok := sameSince[op]; ok && from >= since {
				if op == "BatchNormalization" && hasAttr(n, "spatial") {
					bad = append(bad, op+" with spatial attribute")
				}
				continue
			}
			switch op {
			case "Clip":
				if from >= 11 {
					continue
				}
				// Clip-6 carried min/max as attributes; from 11 they are inputs.
				lo, hi := attrFloat(n, "min", -math.MaxFloat32), attrFloat(n, "max", math.MaxFloat32)
				n, gr := n, gr
				edits = append(edits, func() {
					minName, maxName := md.fresh(n.GetName()+"_min"), md.fresh(n.GetName()+"_max")
					gr.g.Initializer = append(gr.g.Initializer, floatTensor(minName, nil, []float32{lo}), floatTensor(maxName, nil, []float32{hi}))
					n.Input = []string{n.Input[0], minName, maxName}
					n.Attribute = nil
				})
			case "Slice":
				if from >= 10 {
					continue
				}
				n, gr := n, gr
				edits = append(edits, func() {
					var starts, ends, axes []int64
					for _, a := range n.GetAttribute() {
						switch a.GetName() {
						case "starts":
							starts = a.GetInts()
						case "ends":
							ends = a.GetInts()
						case "axes":
							axes = a.GetInts()
						}
					}
					in := []string{n.Input[0]}
					for _, p := range []struct {
						suffix string
						v      []int64
					}{{"_starts", starts}, {"_ends", ends}, {"_axes", axes}} {
						if p.v == nil {
							break
						}
						name := md.fresh(n.GetName() + p.suffix)
						gr.g.Initializer = append(gr.g.Initializer, int64Tensor(name, []int64{int64(len(p.v))}, p.v))
						in = append(in, name)
					}
					n.Input, n.Attribute = in, nil
				})
			case "Squeeze", "Unsqueeze":
				n, gr := n, gr
				edits = append(edits, func() {
					for i, a := range n.GetAttribute() {
						if a.GetName() == "axes" {
							name := md.fresh(n.GetName() + "_axes")
							gr.g.Initializer = append(gr.g.Initializer, int64Tensor(name, []int64{int64(len(a.GetInts()))}, a.GetInts()))
							n.Input = append(n.Input[:1], name)
							n.Attribute = append(n.Attribute[:i], n.Attribute[i+1:]...)
							return
						}
					}
				})
			case "Dropout":
				n := n
				edits = append(edits, func() { // inference no-op; its attributes changed in 12
					n.OpType, n.Attribute, n.Input, n.Output = ptr("Identity"), nil, n.Input[:1], n.Output[:1]
				})
			case "Softmax", "LogSoftmax":
				axis := attrInt(n, "axis", 1)
				r, known := ranks[n.GetInput()[0]]
				if !known || !(axis == -1 || axis == int64(r-1)) {
					bad = append(bad, fmt.Sprintf("%s %q (axis %d, input rank %s: pre-13 semantics flatten to 2-D)", op, n.GetName(), axis, rankString(r, known)))
					continue
				}
				n := n
				edits = append(edits, func() {
					n.Attribute = []*onnxpb.AttributeProto{intAttr("axis", -1)}
				})
			default:
				bad = append(bad, op)
			}
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return from, fmt.Errorf("%w: from opset %d: %s", ErrOpsetUpgrade, from, strings.Join(dedupe(bad), ", "))
	}
	for _, e := range edits {
		e()
	}
	for _, o := range md.m.GetOpsetImport() {
		if d := o.GetDomain(); d == "" || d == "ai.onnx" {
			o.Version = ptr(int64(targetOpset))
		}
	}
	if md.m.GetIrVersion() < 7 {
		md.m.IrVersion = ptr(int64(7)) // opset 13 needs IR >= 7
	}
	return from, nil
}

// needsRanks lists tensors whose rank the upgrade must know.
func needsRanks(md *model) []string {
	if onnxpb.Opset(md.m) >= targetOpset {
		return nil
	}
	var names []string
	for _, n := range md.main.g.GetNode() {
		if n.GetOpType() == "Softmax" || n.GetOpType() == "LogSoftmax" {
			names = append(names, n.GetInput()[0])
		}
	}
	return names
}

func rankString(r int, known bool) string {
	if !known {
		return "unknown"
	}
	return fmt.Sprint(r)
}

func dedupe(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }
