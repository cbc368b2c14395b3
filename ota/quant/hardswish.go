package quant

import (
	"math"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
)

// hardSwish is a hard-swish, x * clip(x+3, 0, 6) / 6, found in the graph in one of the forms
// exporters write (Add/Clip/Mul/Div from Paddle2ONNX, HardSigmoid/Mul, or the HardSwish op), with
// an optional per-tensor affine tail y = scale*h + shift (PPLCNetV3's learnable affine blocks).
type hardSwish struct {
	x, y         string // the input (a Conv output) and the last output of the pattern
	nodes        []*onnxpb.NodeProto
	core         int // nodes[:core] compute the hard-swish, the rest is the affine tail
	scale, shift float32
}

// scalarConst returns the value of a one-element FLOAT constant.
func scalarConst(md *model, name string) (float32, bool) {
	_, v, ok := md.constFloat(name)
	if !ok || len(v) != 1 {
		return 0, false
	}
	return v[0], true
}

// otherInput returns the input of a two-input node that is not t, and whether t was one of them.
func otherInput(n *onnxpb.NodeProto, t string) (string, bool) {
	in := n.GetInput()
	if len(in) != 2 {
		return "", false
	}
	switch t {
	case in[0]:
		return in[1], true
	case in[1]:
		return in[0], true
	}
	return "", false
}

// clipBounds reads a Clip's bounds from attributes (opset < 11) or inputs.
func clipBounds(md *model, n *onnxpb.NodeProto) (lo, hi float32, ok bool) {
	lo, hi = float32(math.Inf(-1)), float32(math.Inf(1))
	if hasAttr(n, "min") || hasAttr(n, "max") {
		return attrFloat(n, "min", lo), attrFloat(n, "max", hi), true
	}
	in := n.GetInput()
	if len(in) > 1 && in[1] != "" {
		if lo, ok = scalarConst(md, in[1]); !ok {
			return 0, 0, false
		}
	}
	if len(in) > 2 && in[2] != "" {
		if hi, ok = scalarConst(md, in[2]); !ok {
			return 0, 0, false
		}
	}
	return lo, hi, true
}

func near(a float32, b float64) bool { return math.Abs(float64(a)-b) <= 1e-6*math.Max(1, math.Abs(b)) }

// matchHardSwish returns the hard-swish that reads x, or nil. Every reader of x and of each
// intermediate tensor must be inside the pattern (so x may be clipped at -3 and the pattern's
// nodes removed), and none of them may be a graph output. The output y may have any readers but
// must not be a graph output either: its float value is replaced by a dequantized one.
func matchHardSwish(md *model, x string) *hardSwish {
	g := md.main
	only := func(t string) *onnxpb.NodeProto { // the single reader of t, if it is the only one
		if g.isOutput(t) || g.readsImplicitly(t) || md.uses[t] != 1 {
			return nil
		}
		c := g.consumers(t)
		if len(c) != 1 || len(c[0].GetOutput()) != 1 || (c[0].GetDomain() != "" && c[0].GetDomain() != "ai.onnx") {
			return nil
		}
		return c[0]
	}
	if g.isOutput(x) || g.readsImplicitly(x) {
		return nil
	}
	readers := g.consumers(x)
	h := &hardSwish{x: x, scale: 1}
	var out string
	switch {
	case len(readers) == 1 && readers[0].GetOpType() == "HardSwish" && md.uses[x] == 1:
		h.nodes, out = readers, readers[0].GetOutput()[0]
	case len(readers) == 2 && md.uses[x] == 2:
		// One reader computes the gate from x, the other multiplies x by the gate.
		for _, first := range readers {
			gate, nodes, ok := hardSigmoidOf(md, first, x, only)
			if !ok {
				continue
			}
			mul := only(gate)
			if mul == nil || mul.GetOpType() != "Mul" || !contains(readers, mul) {
				continue
			}
			if o, ok := otherInput(mul, gate); !ok || o != x {
				continue
			}
			h.nodes, out = append(nodes, mul), mul.GetOutput()[0]
			break
		}
		if h.nodes == nil {
			// Add(x,3) -> Clip(0,6) -> Mul(x, .) -> Div(6) | Mul(1/6)
			for _, add := range readers {
				if add.GetOpType() != "Add" {
					continue
				}
				if o, ok := otherInput(add, x); !ok || !constIs(md, o, 3) {
					continue
				}
				clip := only(add.GetOutput()[0])
				if clip == nil || clip.GetOpType() != "Clip" {
					continue
				}
				if lo, hi, ok := clipBounds(md, clip); !ok || !near(lo, 0) || !near(hi, 6) {
					continue
				}
				mul := only(clip.GetOutput()[0])
				if mul == nil || mul.GetOpType() != "Mul" || !contains(readers, mul) {
					continue
				}
				if o, ok := otherInput(mul, clip.GetOutput()[0]); !ok || o != x {
					continue
				}
				div := only(mul.GetOutput()[0])
				if div == nil || len(div.GetInput()) != 2 || div.GetInput()[0] != mul.GetOutput()[0] {
					continue
				}
				if !(div.GetOpType() == "Div" && constIs(md, div.GetInput()[1], 6)) && !(div.GetOpType() == "Mul" && constIs(md, div.GetInput()[1], 1.0/6)) {
					continue
				}
				h.nodes, out = []*onnxpb.NodeProto{add, clip, mul, div}, div.GetOutput()[0]
				break
			}
		}
	}
	if h.nodes == nil || g.isOutput(out) {
		return nil
	}
	h.y, h.core = out, len(h.nodes)
	// Optional affine tail: Mul by a positive scalar, then Add of a scalar.
	if n := only(h.y); n != nil && n.GetOpType() == "Mul" {
		if o, ok := otherInput(n, h.y); ok {
			if v, ok := scalarConst(md, o); ok && v > 0 && !g.isOutput(n.GetOutput()[0]) {
				h.nodes, h.y, h.scale = append(h.nodes, n), n.GetOutput()[0], v
			}
		}
	}
	if n := only(h.y); n != nil && n.GetOpType() == "Add" {
		if o, ok := otherInput(n, h.y); ok {
			if v, ok := scalarConst(md, o); ok && !g.isOutput(n.GetOutput()[0]) {
				h.nodes, h.y, h.shift = append(h.nodes, n), n.GetOutput()[0], v
			}
		}
	}
	return h
}

// hardSigmoidOf matches first as the start of clip(x/6 + 0.5, 0, 1) computed from x and returns
// the gate tensor and its nodes.
func hardSigmoidOf(md *model, first *onnxpb.NodeProto, x string, only func(string) *onnxpb.NodeProto) (string, []*onnxpb.NodeProto, bool) {
	if first.GetOpType() == "HardSigmoid" && near(attrFloat(first, "alpha", 0.2), 1.0/6) && near(attrFloat(first, "beta", 0.5), 0.5) {
		return first.GetOutput()[0], []*onnxpb.NodeProto{first}, true
	}
	return "", nil, false
}

func constIs(md *model, name string, want float64) bool {
	v, ok := scalarConst(md, name)
	return ok && near(v, want)
}

func contains(nodes []*onnxpb.NodeProto, n *onnxpb.NodeProto) bool {
	for _, x := range nodes {
		if x == n {
			return true
		}
	}
	return false
}

// hardSwishGrid returns quantization parameters for the input x of a hard-swish whose calibrated
// maximum is hi: the range starts at -3 (every value below -3 gives 0, so clipping there loses
// nothing) and the zero point k above qmin is an integer with k*scale = 3 exactly. Then x+3 is
// (q - qmin)*scale with no rounding, clip(x+3, 0, 6) is Clip(q, qmin, qmin+2k) on the integers,
// and the gate clip(x+3,0,6)/6 is that integer tensor read with scale/6 and zero point qmin.
func hardSwishGrid(hi float32, int8Act bool) (scale float32, zp, k int) {
	qmin, qmax := qrange(int8Act)
	levels := qmax - qmin
	k = int(math.Floor(3 * levels / (math.Max(float64(hi), 0) + 3)))
	k = max(1, min(k, int(levels)))
	return float32(3 / float64(k)), int(qmin) + k, k
}

// hardSwishNodes writes a hard-swish (and its affine tail) on the quantized input q (scale sx,
// zero point zx, from hardSwishGrid):
//
//	gate = Clip(q, qmin, qmin+2k)                      integers; read with scale sx*c/6, zp qmin
//	y    = Q(DQ(q) * DQ(gate), sy, zy + round(d/sy))   ORT fuses this into QLinearMul
//	DQ(y, sy, zy)                                      what the readers of the pattern's output get
//
// where c, d are the affine tail's scale and shift: c*h + d quantized at (sy, zy) is h quantized
// at (sy/c, zy + d/sy), so the tail costs nothing. The last node's output is the dequantized y.
func hardSwishNodes(md *model, h *hardSwish, q, dqx string, sx, sy float32, zx, zy int, int8Act bool, zpTensor func(string, int) *onnxpb.TensorProto) []*onnxpb.NodeProto {
	g := md.main
	qmin, qmax := qrange(int8Act)
	k := zx - int(qmin)
	hiGate := min(int(qmax), int(qmin)+2*k)
	lo, hi, gate := md.fresh(h.y+"_gate_min"), md.fresh(h.y+"_gate_max"), md.fresh(h.y+"_gate")
	gs, gz, gdq := md.fresh(h.y+"_gate_scale"), md.fresh(h.y+"_gate_zero_point"), md.fresh(h.y+"_gate_dequantized")
	prod, ys, yqz, yz := md.fresh(h.y+"_product"), md.fresh(h.y+"_scale"), md.fresh(h.y+"_product_zero_point"), md.fresh(h.y+"_zero_point")
	yq, ydq := md.fresh(h.y+"_quantized"), md.fresh(h.y+"_dequantized")
	zq := zy + int(math.RoundToEven(float64(h.shift)/float64(sy)))
	zq = max(int(qmin), min(int(qmax), zq))
	g.g.Initializer = append(g.g.Initializer,
		zpTensor(lo, int(qmin)), zpTensor(hi, hiGate),
		floatTensor(gs, nil, []float32{sx * h.scale / 6}), zpTensor(gz, int(qmin)),
		floatTensor(ys, nil, []float32{sy}), zpTensor(yqz, zq), zpTensor(yz, zy))
	return []*onnxpb.NodeProto{
		node("Clip", gate, []string{q, lo, hi}, []string{gate}),
		node("DequantizeLinear", gdq, []string{gate, gs, gz}, []string{gdq}),
		node("Mul", prod, []string{dqx, gdq}, []string{prod}),
		node("QuantizeLinear", yq, []string{prod, ys, yqz}, []string{yq}),
		node("DequantizeLinear", ydq, []string{yq, ys, yz}, []string{ydq}),
	}
}
