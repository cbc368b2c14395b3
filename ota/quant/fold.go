package quant

import (
	"math"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
)

// foldBatchNorm merges BatchNormalization nodes into the Conv that feeds them, in the main graph.
// Paddle exports (ocr_cls) keep BN separate. ORT folds it at load time for a float model, but a
// Q/DQ pair between Conv and BN would stop both that fold and the QLinearConv fusion, and the
// per-channel weight scales must be computed on the folded weights to be right. It returns the
// number of folds.
func foldBatchNorm(md *model) int {
	g := md.main
	producer := map[string]*onnxpb.NodeProto{}
	for _, n := range g.g.GetNode() {
		for _, o := range n.GetOutput() {
			producer[o] = n
		}
	}
	folded := 0
	for _, bn := range append([]*onnxpb.NodeProto(nil), g.g.GetNode()...) {
		if bn.GetOpType() != "BatchNormalization" || len(bn.GetInput()) != 5 || len(bn.GetOutput()) != 1 {
			continue
		}
		conv := producer[bn.GetInput()[0]]
		if conv == nil || conv.GetOpType() != "Conv" || len(conv.GetOutput()) != 1 {
			continue
		}
		mid := conv.GetOutput()[0]
		if md.uses[mid] != 1 || g.isOutput(mid) {
			continue
		}
		_, w, ok := md.constFloat(conv.GetInput()[1])
		if !ok {
			continue
		}
		var params [4][]float32
		for i := range params {
			if _, params[i], ok = md.constFloat(bn.GetInput()[i+1]); !ok {
				break
			}
		}
		if !ok {
			continue
		}
		wt := md.weights[conv.GetInput()[1]].t
		co := int(wt.GetDims()[0])
		scale, shift, mean, variance := params[0], params[1], params[2], params[3]
		if len(scale) != co || len(shift) != co || len(mean) != co || len(variance) != co {
			continue
		}
		b := make([]float32, co)
		if len(conv.GetInput()) > 2 && conv.GetInput()[2] != "" {
			var bv []float32
			if _, bv, ok = md.constFloat(conv.GetInput()[2]); !ok || len(bv) != co {
				continue
			}
			copy(b, bv)
		}
		eps := float64(attrFloat(bn, "epsilon", 1e-5))
		inner := len(w) / co
		nw := make([]float32, len(w))
		for c := 0; c < co; c++ {
			s := float64(scale[c]) / math.Sqrt(float64(variance[c])+eps)
			for i := c * inner; i < (c+1)*inner; i++ {
				nw[i] = float32(float64(w[i]) * s)
			}
			b[c] = float32((float64(b[c])-float64(mean[c]))*s + float64(shift[c]))
		}
		wName, bName := md.fresh(conv.GetInput()[1]+"_bnfolded"), md.fresh(conv.GetName()+"_bias_bnfolded")
		g.g.Initializer = append(g.g.Initializer, floatTensor(wName, wt.GetDims(), nw), floatTensor(bName, []int64{int64(co)}, b))
		md.weights[wName] = &weight{name: wName, t: g.g.Initializer[len(g.g.Initializer)-2], owner: g}
		md.weights[bName] = &weight{name: bName, t: g.g.Initializer[len(g.g.Initializer)-1], owner: g}
		old := append([]string(nil), conv.GetInput()...)
		for len(conv.Input) < 3 {
			conv.Input = append(conv.Input, "")
		}
		md.setInput(conv, 1, wName)
		if conv.Input[2] == "" {
			conv.Input[2] = bName
			md.uses[bName]++
		} else {
			md.setInput(conv, 2, bName)
		}
		for _, in := range bn.GetInput() {
			md.uses[in]--
		}
		conv.Output[0] = bn.GetOutput()[0]
		g.g.Node = deleteNode(g.g.Node, bn)
		for _, name := range append(old[1:], bn.GetInput()[1:]...) {
			md.removeIfUnused(name)
		}
		folded++
	}
	return folded
}

// foldAffine merges a per-tensor affine that follows a Conv — Mul by a scalar constant, Add of a
// scalar constant, in either order and either operand position — into the Conv's weights and
// bias: a*conv(x, w, b) + c = conv(x, a*w, a*b + c). PP-OCRv4's detector (PPLCNetV3's learnable
// affine blocks) puts one after almost every Conv; left alone, each is two float passes over the
// activation and keeps the Conv's output from being the tensor that QLinearConv requantizes. It
// returns the number of nodes folded.
func foldAffine(md *model) int {
	g := md.main
	folded := 0
	for changed := true; changed; {
		changed = false
		for _, conv := range append([]*onnxpb.NodeProto(nil), g.g.GetNode()...) {
			if conv.GetOpType() != "Conv" || len(conv.GetOutput()) != 1 || len(conv.GetInput()) < 2 {
				continue
			}
			out := conv.GetOutput()[0]
			if md.uses[out] != 1 || g.isOutput(out) || g.readsImplicitly(out) {
				continue
			}
			cons := g.consumers(out)
			if len(cons) != 1 || len(cons[0].GetOutput()) != 1 {
				continue
			}
			op := cons[0]
			if op.GetOpType() != "Mul" && op.GetOpType() != "Add" {
				continue
			}
			other, ok := otherInput(op, out)
			if !ok {
				continue
			}
			v, ok := scalarConst(md, other)
			if !ok {
				continue
			}
			w, wv, ok := md.constFloat(conv.GetInput()[1])
			if !ok || len(w.t.GetDims()) < 3 {
				continue
			}
			co := int(w.t.GetDims()[0])
			b := make([]float32, co)
			if len(conv.GetInput()) > 2 && conv.GetInput()[2] != "" {
				_, bv, ok := md.constFloat(conv.GetInput()[2])
				if !ok || len(bv) != co {
					continue
				}
				copy(b, bv)
			}
			nw := wv
			if op.GetOpType() == "Mul" {
				nw = make([]float32, len(wv))
				for i, x := range wv {
					nw[i] = x * v
				}
				for i := range b {
					b[i] *= v
				}
			} else {
				for i := range b {
					b[i] += v
				}
			}
			old := append([]string(nil), conv.GetInput()...)
			for len(conv.Input) < 3 {
				conv.Input = append(conv.Input, "")
			}
			if op.GetOpType() == "Mul" {
				wName := md.fresh(old[1] + "_affine")
				g.g.Initializer = append(g.g.Initializer, floatTensor(wName, w.t.GetDims(), nw))
				md.weights[wName] = &weight{name: wName, t: g.g.Initializer[len(g.g.Initializer)-1], owner: g}
				md.setInput(conv, 1, wName)
			}
			bName := md.fresh(conv.GetName() + "_bias_affine")
			g.g.Initializer = append(g.g.Initializer, floatTensor(bName, []int64{int64(co)}, b))
			md.weights[bName] = &weight{name: bName, t: g.g.Initializer[len(g.g.Initializer)-1], owner: g}
			if conv.Input[2] == "" {
				conv.Input[2] = bName
				md.uses[bName]++
			} else {
				md.setInput(conv, 2, bName)
			}
			for _, in := range op.GetInput() {
				md.uses[in]--
			}
			conv.Output[0] = op.GetOutput()[0]
			g.g.Node = deleteNode(g.g.Node, op)
			for _, name := range append(old[1:], other) {
				if name != "" {
					md.removeIfUnused(name)
				}
			}
			folded++
			changed = true
		}
	}
	return folded
}
