package quant

import (
	"fmt"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
	"google.golang.org/protobuf/proto"
)

// depthwiseAlign is the channel block of MLAS's packed symmetric int8 depthwise kernel on x86
// (MlasConvSymPackWSize: GroupAlign 16; 8 on ARM64, so 16 suits both). QLinearConv packs a
// depthwise filter for that kernel only when the channel count is a multiple of it; otherwise it
// falls back to a generic kernel that measured 3-6x slower than the float NCHWc depthwise kernel
// on ocr_cls (RESULTS.md).
const depthwiseAlign = 16

// padDepthwise widens every depthwise Conv of the main graph whose channel count C is not a
// multiple of depthwiseAlign to the next multiple C', together with everything that carries those
// C channels (the "region"): the Conv that produces them gets zero filter rows and zero bias,
// channel-wise ops (activations, scalar arithmetic, pooling, the squeeze-excite Mul) carry the
// extra channels along, and every Conv that reads them gets zero filter columns. The extra
// channels therefore never reach anything outside the region: the rewrite is exact in float, and
// in int8 the padded channels hold the zero point. A region with anything else at its edge
// (a residual Add with an unpadded tensor, a Reshape, a graph output, a per-channel constant) is
// left alone. It returns one line per widened depthwise Conv.
func padDepthwise(md *model) []string {
	g := md.main
	producer := map[string]*onnxpb.NodeProto{}
	for _, n := range g.g.GetNode() {
		for _, o := range n.GetOutput() {
			producer[o] = n
		}
	}
	var padded []string
	done := map[*onnxpb.NodeProto]bool{}
	for _, n := range append([]*onnxpb.NodeProto(nil), g.g.GetNode()...) {
		c, ok := depthwiseChannels(md, n)
		if !ok || done[n] || c%depthwiseAlign == 0 {
			continue
		}
		r, ok := channelRegion(md, producer, n, c)
		if !ok {
			continue
		}
		cp := (c + depthwiseAlign - 1) / depthwiseAlign * depthwiseAlign
		if err := r.apply(md, c, cp); err != nil {
			continue // nothing was changed: apply checks before it writes
		}
		for dw := range r.dw {
			done[dw] = true
			padded = append(padded, fmt.Sprintf("%s: %d -> %d channels", nodeName(dw), c, cp))
		}
	}
	return padded
}

// depthwiseChannels returns C for a Conv with group C and a constant [C, 1, k...] filter.
func depthwiseChannels(md *model, n *onnxpb.NodeProto) (int, bool) {
	if n.GetOpType() != "Conv" || len(n.GetInput()) < 2 {
		return 0, false
	}
	w := md.weights[n.GetInput()[1]]
	if w == nil || md.ambiguous[w.name] {
		return 0, false
	}
	dims := w.t.GetDims()
	grp := attrInt(n, "group", 1)
	if len(dims) < 3 || grp <= 1 || dims[1] != 1 || dims[0] != grp {
		return 0, false
	}
	return int(grp), true
}

// region is what padDepthwise rewrites for one set of channels.
type region struct {
	tensors map[string]bool
	dw      map[*onnxpb.NodeProto]bool // depthwise Convs inside
	padOut  map[*onnxpb.NodeProto]bool // group-1 Convs whose output channels are the region's
	padIn   map[*onnxpb.NodeProto]bool // group-1 Convs that read the region (input channels)
}

// channelOps pass every channel through on its own (axis 1 unchanged, one output).
var channelOps = map[string]bool{
	"Relu": true, "Clip": true, "HardSigmoid": true, "Sigmoid": true, "HardSwish": true, "LeakyRelu": true,
	"Identity": true, "Add": true, "Sub": true, "Mul": true, "Div": true,
	"GlobalAveragePool": true, "GlobalMaxPool": true, "MaxPool": true, "AveragePool": true,
}

// channelRegion collects the tensors that carry the C channels of depthwise Conv dw and the Convs
// at the region's edges; ok is false when something at an edge cannot be padded.
func channelRegion(md *model, producer map[string]*onnxpb.NodeProto, dw *onnxpb.NodeProto, c int) (*region, bool) {
	g := md.main
	r := &region{tensors: map[string]bool{}, dw: map[*onnxpb.NodeProto]bool{}, padOut: map[*onnxpb.NodeProto]bool{}, padIn: map[*onnxpb.NodeProto]bool{}}
	var queue []string
	add := func(t string) {
		if t != "" && !r.tensors[t] {
			r.tensors[t] = true
			queue = append(queue, t)
		}
	}
	// through adds the non-constant inputs and the output of a channel-wise node; scalar
	// constants are fine, any other constant (per-channel scale, bias) would need padding too.
	through := func(n *onnxpb.NodeProto) bool {
		if len(n.GetOutput()) != 1 || (n.GetDomain() != "" && n.GetDomain() != "ai.onnx") {
			return false
		}
		for i, in := range n.GetInput() {
			if in == "" {
				continue
			}
			if w := md.weights[in]; w != nil {
				if numElements(w.t) != 1 {
					return false
				}
				continue
			}
			if i > 0 && n.GetOpType() == "Clip" {
				return false // a computed clip bound
			}
			add(in)
		}
		add(n.GetOutput()[0])
		return true
	}
	r.dw[dw] = true
	add(dw.GetInput()[0])
	add(dw.GetOutput()[0])
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		if g.isOutput(t) || g.isInput(t) || g.readsImplicitly(t) || md.weights[t] != nil {
			return nil, false
		}
		p := producer[t]
		if p == nil {
			return nil, false
		}
		switch {
		case p.GetOpType() == "Conv":
			if !convEdge(md, r, p, c, true) {
				return nil, false
			}
			if r.dw[p] {
				add(p.GetInput()[0])
			}
		case channelOps[p.GetOpType()]:
			if !through(p) {
				return nil, false
			}
		default:
			return nil, false
		}
		for _, n := range g.consumers(t) {
			switch {
			case n.GetOpType() == "Conv":
				if len(n.GetInput()) == 0 || n.GetInput()[0] != t {
					return nil, false // the region would be a weight
				}
				for _, in := range n.GetInput()[1:] {
					if in == t {
						return nil, false
					}
				}
				if !convEdge(md, r, n, c, false) {
					return nil, false
				}
				if r.dw[n] {
					add(n.GetOutput()[0])
				}
			case channelOps[n.GetOpType()]:
				if !through(n) {
					return nil, false
				}
			default:
				return nil, false
			}
		}
	}
	return r, true
}

// convEdge records Conv n, which produces (out) or reads (!out) a region tensor.
func convEdge(md *model, r *region, n *onnxpb.NodeProto, c int, out bool) bool {
	if cc, ok := depthwiseChannels(md, n); ok {
		if cc != c {
			return false
		}
		r.dw[n] = true
		return true
	}
	if attrInt(n, "group", 1) != 1 || len(n.GetInput()) < 2 || len(n.GetOutput()) != 1 {
		return false
	}
	w := md.weights[n.GetInput()[1]]
	if w == nil || md.ambiguous[w.name] || w.t.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
		return false
	}
	dims := w.t.GetDims()
	if len(dims) < 3 {
		return false
	}
	if out {
		if dims[0] != int64(c) {
			return false
		}
		if len(n.GetInput()) > 2 && n.GetInput()[2] != "" {
			if b := md.weights[n.GetInput()[2]]; b == nil || md.ambiguous[b.name] || numElements(b.t) != int64(c) || b.t.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
				return false
			}
		}
		r.padOut[n] = true
		return true
	}
	if dims[1] != int64(c) {
		return false
	}
	r.padIn[n] = true
	return true
}

// apply writes the padded filters and biases. It checks every constant first, so that a
// failure leaves the model as it was.
func (r *region) apply(md *model, c, cp int) error {
	type job struct {
		n            *onnxpb.NodeProto
		w            []float32
		dims         []int64
		b            []float32
		padO, padI   bool
		depthwiseGrp bool
	}
	var jobs []job
	nodes := map[*onnxpb.NodeProto]bool{}
	for n := range r.dw {
		nodes[n] = true
	}
	for n := range r.padOut {
		nodes[n] = true
	}
	for n := range r.padIn {
		nodes[n] = true
	}
	for n := range nodes {
		_, w, ok := md.constFloat(n.GetInput()[1])
		if !ok {
			return fmt.Errorf("quant: %s: weight not a float constant", nodeName(n))
		}
		j := job{n: n, w: w, dims: md.weights[n.GetInput()[1]].t.GetDims(), depthwiseGrp: r.dw[n]}
		j.padO = r.dw[n] || r.padOut[n]
		j.padI = r.padIn[n] && !r.dw[n]
		if j.padO && len(n.GetInput()) > 2 && n.GetInput()[2] != "" {
			if _, j.b, ok = md.constFloat(n.GetInput()[2]); !ok || len(j.b) != c {
				return fmt.Errorf("quant: %s: bias not a float constant of %d", nodeName(n), c)
			}
		}
		jobs = append(jobs, j)
	}
	g := md.main
	for _, j := range jobs {
		dims := append([]int64(nil), j.dims...)
		w := j.w
		if j.padI { // [O, C, k...] -> [O, C', k...]
			inner := len(w) / int(dims[0]) / int(dims[1])
			nw := make([]float32, 0, int(dims[0])*cp*inner)
			for o := 0; o < int(dims[0]); o++ {
				nw = append(nw, w[o*c*inner:(o+1)*c*inner]...)
				nw = append(nw, make([]float32, (cp-c)*inner)...)
			}
			w, dims[1] = nw, int64(cp)
		}
		if j.padO { // [C, I, k...] -> [C', I, k...]
			row := len(w) / int(dims[0])
			w = append(append([]float32(nil), w...), make([]float32, (cp-c)*row)...)
			dims[0] = int64(cp)
		}
		wName := md.fresh(j.n.GetInput()[1] + "_padded")
		g.g.Initializer = append(g.g.Initializer, floatTensor(wName, dims, w))
		md.weights[wName] = &weight{name: wName, t: g.g.Initializer[len(g.g.Initializer)-1], owner: g}
		old := j.n.GetInput()[1]
		md.setInput(j.n, 1, wName)
		md.removeIfUnused(old)
		if j.b != nil {
			bName := md.fresh(j.n.GetInput()[2] + "_padded")
			g.g.Initializer = append(g.g.Initializer, floatTensor(bName, []int64{int64(cp)}, append(append([]float32(nil), j.b...), make([]float32, cp-c)...)))
			md.weights[bName] = &weight{name: bName, t: g.g.Initializer[len(g.g.Initializer)-1], owner: g}
			old := j.n.GetInput()[2]
			md.setInput(j.n, 2, bName)
			md.removeIfUnused(old)
		}
		if j.depthwiseGrp {
			for _, a := range j.n.GetAttribute() {
				if a.GetName() == "group" {
					a.I = proto.Int64(int64(cp))
				}
			}
		}
	}
	// Recorded shapes of the region's tensors are stale now; ORT infers them again.
	vis := g.g.GetValueInfo()[:0]
	for _, vi := range g.g.GetValueInfo() {
		if !r.tensors[vi.GetName()] {
			vis = append(vis, vi)
		}
	}
	g.g.ValueInfo = vis
	return nil
}
