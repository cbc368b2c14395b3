package quant

import (
	"context"
	"fmt"
	"maps"
	"math"
	"sort"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
)

// candidate is a node whose weight is quantized, with the activations around it.
type candidate struct {
	n       *onnxpb.NodeProto
	x       string // activation input
	wIdx    int
	w       *weight
	wv      []float32
	axis    int // per-channel axis of the weight
	biasIdx int // -1 when the node has no bias input to quantize
	bv      []float32
	// out is the tensor quantized after the node: its own output, or the output of a Relu or
	// Clip(0, x) that is its only consumer. ORT removes such an activation when the Q after it
	// has the zero point at the bottom of the range, then fuses DQ->Conv->Q into QLinearConv;
	// a Q between Conv and Relu would leave an unfused DQ->Relu->Q in float.
	out string
	// weightOnly stores the weight as int8 behind a DequantizeLinear and leaves activations float:
	// the file shrinks, the speed does not change (ORT dequantizes per call, see SETUP.md). Used
	// where int8 compute gains nothing: convolutions on 1x1 maps, ConvTranspose.
	weightOnly bool
}

// nodeName names a node for reports, falling back to its first output.
func nodeName(n *onnxpb.NodeProto) string {
	if n.GetName() != "" {
		return n.GetOpType() + " " + n.GetName()
	}
	if len(n.GetOutput()) > 0 {
		return n.GetOpType() + " ->" + n.GetOutput()[0]
	}
	return n.GetOpType()
}

// quantizable op types and what makes an input a weight.
var weightOps = map[string]bool{"Conv": true, "MatMul": true, "Gemm": true, "ConvTranspose": true}

// pick decides whether node n can be quantized and, if not, returns why.
func pick(md *model, n *onnxpb.NodeProto, minElements int) (*candidate, string) {
	if n.GetDomain() != "" && n.GetDomain() != "ai.onnx" {
		return nil, "custom domain"
	}
	in := n.GetInput()
	if len(in) < 2 {
		return nil, "fewer than 2 inputs"
	}
	if _, _, isConst := md.constFloat(in[0]); isConst || md.weights[in[0]] != nil {
		return nil, "first input is a constant; only activation x constant-weight products are quantized"
	}
	w, wv, ok := md.constFloat(in[1])
	if !ok {
		if md.weights[in[1]] == nil {
			return nil, "weight input is computed at run time (activation x activation product is left float)"
		}
		return nil, "weight is not a FLOAT constant"
	}
	if len(wv) < minElements {
		return nil, fmt.Sprintf("weight has %d elements, fewer than MinElements %d", len(wv), minElements)
	}
	c := &candidate{n: n, x: in[0], wIdx: 1, w: w, wv: wv, biasIdx: -1}
	dims := w.t.GetDims()
	switch n.GetOpType() {
	case "Conv":
		if len(dims) < 3 {
			return nil, fmt.Sprintf("Conv weight of rank %d", len(dims))
		}
		c.axis = 0
	case "ConvTranspose":
		if len(dims) < 3 {
			return nil, fmt.Sprintf("ConvTranspose weight of rank %d", len(dims))
		}
		// Weights are [C_in, C_out/group, k...]. ORT has no QDQ fusion for ConvTranspose on every
		// CPU build, so only its weights shrink.
		c.axis, c.weightOnly = 1, true
	case "MatMul":
		if len(dims) != 2 {
			return nil, fmt.Sprintf("MatMul weight of rank %d (only 2-D weights get per-column scales)", len(dims))
		}
		c.axis = 1
	case "Gemm":
		if attrInt(n, "transA", 0) != 0 {
			return nil, "Gemm with transA"
		}
		if attrFloat(n, "alpha", 1) != 1 || attrFloat(n, "beta", 1) != 1 {
			return nil, "Gemm with alpha or beta other than 1"
		}
		if attrInt(n, "transB", 0) != 0 {
			c.axis = 0 // B is [N, K]: output channels on axis 0
		} else {
			c.axis = 1
		}
	}
	if len(in) > 2 && in[2] != "" {
		_, bv, ok := md.constFloat(in[2])
		channels := int(dims[c.axis])
		if !ok || len(bv) != channels || len(md.weights[in[2]].t.GetDims()) != 1 {
			return nil, "bias is not a 1-D FLOAT constant with one value per output channel"
		}
		c.biasIdx, c.bv = 2, bv
	}
	return c, ""
}

// removableActivation returns the output of a Relu or Clip(min 0) that is the only consumer of
// t, or "".
func removableActivation(md *model, t string) string {
	g := md.main
	if g.isOutput(t) || g.readsImplicitly(t) {
		return ""
	}
	cons := g.consumers(t)
	if len(cons) != 1 || len(cons[0].GetOutput()) != 1 {
		return ""
	}
	a := cons[0]
	switch a.GetOpType() {
	case "Relu":
		return a.GetOutput()[0]
	case "Clip":
		lo := float32(math.Inf(-1))
		if hasAttr(a, "min") {
			lo = attrFloat(a, "min", 0)
		} else if len(a.GetInput()) > 1 && a.GetInput()[1] != "" {
			if _, v, ok := md.constFloat(a.GetInput()[1]); ok && len(v) == 1 {
				lo = v[0]
			}
		}
		if lo == 0 {
			return a.GetOutput()[0]
		}
	}
	return ""
}

func quantizeStatic(ctx context.Context, md *model, opts Options, res *Result) error {
	if len(opts.Samples) == 0 {
		return ErrNoSamples
	}
	res.FoldedBatchNorms = foldBatchNorm(md)
	res.FoldedAffines = foldAffine(md)
	if !opts.NoPadDepthwise {
		res.PaddedDepthwise = padDepthwise(md)
	}

	var cands []*candidate
	for _, gr := range md.graphs {
		for _, n := range gr.g.GetNode() {
			op := n.GetOpType()
			switch {
			case weightOps[op] && gr != md.main:
				res.Skipped = append(res.Skipped, Skip{Node: nodeName(n), Tensor: input(n, 1),
					Reason: "inside an If/Loop/Scan subgraph: calibration cannot observe a subgraph's activations, so static Q/DQ cannot be placed (dynamic mode can handle MatMul/Gemm there)"})
			case weightOps[op]:
				c, why := pick(md, n, opts.MinElements)
				if c == nil {
					res.Skipped = append(res.Skipped, Skip{Node: nodeName(n), Tensor: input(n, 1), Reason: why})
					continue
				}
				cands = append(cands, c)
			case op == "LSTM" || op == "GRU" || op == "RNN":
				res.Skipped = append(res.Skipped, Skip{Node: nodeName(n), Tensor: input(n, 1),
					Reason: op + " stays float: no int8 kernel for it in ORT's default domain"})
			}
		}
	}
	if len(cands) == 0 {
		reportWeights(md, opts, res)
		return nil
	}

	// The tensors to calibrate: every candidate's input and (post-activation) output.
	var acts []string
	seen := map[string]bool{}
	addAct := func(t string) {
		if !seen[t] {
			seen[t] = true
			acts = append(acts, t)
		}
	}
	for _, c := range cands {
		if c.weightOnly {
			continue
		}
		c.out = c.n.GetOutput()[0]
		if a := removableActivation(md, c.out); a != "" {
			c.out = a
		}
		addAct(c.x)
		addAct(c.out)
	}
	// Hard-swish after a quantized Conv runs on the integers (see hardSwishGrid); its output is
	// observed too.
	swish := map[string]*hardSwish{} // by input
	for _, c := range cands {
		if !c.weightOnly && c.out == c.n.GetOutput()[0] && !opts.FloatHardSwish {
			if h := matchHardSwish(md, c.out); h != nil {
				if r := md.main.consumers(h.y); len(r) == 1 && r[0].GetOpType() == "MaxPool" && !opts.KeepSlowLayout {
					res.Skipped = append(res.Skipped, Skip{Node: "HardSwish ->" + h.y, Tensor: h.y,
						Reason: "feeds MaxPool: ORT runs MaxPool on uint8 NCHW tensors with a generic kernel (5-10x slower than its float NCHWc one on ocr_cls), so this hard-swish and the pooling stay float"})
					continue
				}
				swish[c.out] = h
			}
		}
	}
	observeNames := append(append([]string(nil), acts...), needsRanks(md)...)
	for _, h := range swish {
		observeNames = append(observeNames, h.y)
	}
	if !opts.NoCloseMul {
		observeNames = append(observeNames, floatMulInputs(md, quantizedSet(acts, swish))...)
		observeNames = append(observeNames, poolOutputs(md, quantizedSet(acts, swish))...)
	}
	obs, err := observe(ctx, md.m, observeNames, opts.Samples, opts.Threads, opts.Calibration == Percentile)
	if err != nil {
		return err
	}
	// A Conv on a 1x1 map (the squeeze-excite convolutions of MobileNetV3 after GlobalAveragePool)
	// costs a few thousand multiply-adds: int8 cannot make it faster, but quantizing its input and
	// output scales every channel of the block by a rounded factor. Keep their activations float and
	// store only their weights in int8 (a large share of the bytes in wide SE blocks).
	kept := cands[:0]
	for _, c := range cands {
		if o := obs[c.x]; o != nil && c.n.GetOpType() == "Conv" && len(o.shape) >= 3 && spatial(o.shape) == 1 {
			c.weightOnly = true
		}
		if opts.FloatDepthwise && slowDepthwise(c) {
			res.Skipped = append(res.Skipped, Skip{Node: nodeName(c.n), Tensor: c.w.name,
				Reason: "depthwise: int8 kernel slower on this CPU (channel count not a multiple of 16 and could not be padded: MLAS's packed symmetric int8 depthwise kernel does not take it, its generic one was slower than the float NCHWc kernel; Options.FloatDepthwise)"})
			continue
		}
		kept = append(kept, c)
	}
	cands = kept
	if !opts.KeepSlowLayout {
		cands = dropIsolated(md, cands, swish, obs, res)
	}
	acts = acts[:0]
	seen = map[string]bool{}
	swishByY := map[string]*hardSwish{}
	found := swish
	swish = map[string]*hardSwish{}
	for _, c := range cands {
		if c.weightOnly {
			continue
		}
		addAct(c.x)
		addAct(c.out)
		if h := found[c.out]; h != nil {
			addAct(h.y)
			swish[c.out], swishByY[h.y] = h, h
		}
	}
	if !opts.NoCloseMul {
		for _, t := range floatMulInputs(md, quantizedSet(acts, swish)) {
			addAct(t)
			res.Quantized = append(res.Quantized, "Mul input "+t+" (so that the Mul runs as QLinearMul)")
		}
		for _, t := range poolOutputs(md, quantizedSet(acts, swish)) {
			addAct(t)
			res.Quantized = append(res.Quantized, "GlobalAveragePool output "+t+" (so that the pooling runs as QLinearGlobalAveragePool)")
		}
	}
	ranks := map[string]int{}
	for name, o := range obs {
		ranks[name] = o.rank
	}
	if _, err := upgradeOpset(md, ranks); err != nil {
		return err
	}

	type qp struct {
		scale float32
		zp    int
	}
	params := map[string]qp{}
	res.Activations = map[string][2]float32{}
	for _, t := range acts {
		o := obs[t]
		if o == nil {
			return fmt.Errorf("quant: calibration did not observe %q (not a FLOAT tensor?)", t)
		}
		lo, hi := o.rangeOf(opts.Calibration, opts.Percentile)
		var s float32
		var z int
		switch {
		case swish[t] != nil:
			s, z, _ = hardSwishGrid(hi, opts.Int8Activations)
			lo = -3
		case swishByY[t] != nil:
			// The affine tail's shift is folded into the zero point of the Q after the
			// multiplication: the range must hold it.
			d := swishByY[t].shift
			lo, hi = min(lo, d), max(hi, d)
			s, z = activationParams(lo, hi, opts.Int8Activations)
		default:
			s, z = activationParams(lo, hi, opts.Int8Activations)
		}
		params[t] = qp{s, z}
		res.Activations[t] = [2]float32{lo, hi}
	}

	g := md.main
	var front []*onnxpb.NodeProto // weight DQs and graph-input Q/DQs
	after := map[string][]*onnxpb.NodeProto{}
	dq := map[string]string{} // activation -> its dequantized name
	zpTensor := func(name string, v int) *onnxpb.TensorProto {
		if opts.Int8Activations {
			return int8Tensor(name, nil, []int8{int8(v)})
		}
		return uint8Tensor(name, nil, []uint8{uint8(v)})
	}
	for _, t := range acts {
		if swishByY[t] != nil {
			continue // written with its hard-swish below
		}
		p := params[t]
		sName, zName := md.fresh(t+"_scale"), md.fresh(t+"_zero_point")
		qName, dqName := md.fresh(t+"_quantized"), md.fresh(t+"_dequantized")
		g.g.Initializer = append(g.g.Initializer, floatTensor(sName, nil, []float32{p.scale}))
		if opts.Int8Activations {
			g.g.Initializer = append(g.g.Initializer, int8Tensor(zName, nil, []int8{int8(p.zp)}))
		} else {
			g.g.Initializer = append(g.g.Initializer, uint8Tensor(zName, nil, []uint8{uint8(p.zp)}))
		}
		nodes := []*onnxpb.NodeProto{
			node("QuantizeLinear", qName, []string{t, sName, zName}, []string{qName}),
			node("DequantizeLinear", dqName, []string{qName, sName, zName}, []string{dqName}),
		}
		dq[t] = dqName
		if g.isInput(t) {
			front = append(front, nodes...)
		} else {
			after[t] = nodes
		}
		if h := swish[t]; h != nil {
			after[t] = append(after[t], hardSwishNodes(md, h, qName, dqName, p.scale, params[h.y].scale, p.zp, params[h.y].zp, opts.Int8Activations, zpTensor)...)
			dq[h.y] = after[t][len(after[t])-1].GetOutput()[0]
			res.Quantized = append(res.Quantized, "HardSwish ->"+h.y+" (Clip + QLinearMul on the integers)")
		}
	}
	// The hard-swish patterns are replaced by their integer form.
	for _, h := range swish {
		for _, n := range h.nodes {
			g.g.Node = deleteNode(g.g.Node, n)
			for _, in := range n.GetInput() {
				md.uses[in]--
			}
		}
		for _, n := range h.nodes {
			for _, in := range n.GetInput() {
				md.removeIfUnused(in)
			}
		}
	}
	// Every reader of a quantized activation now reads its Q->DQ copy. A graph output keeps its
	// float value, and subgraphs keep reading the float name: they are not calibrated.
	for _, n := range g.g.GetNode() {
		for i, in := range n.GetInput() {
			if d, ok := dq[in]; ok {
				md.setInput(n, i, d)
			}
		}
	}
	for _, c := range cands {
		dims := c.w.t.GetDims()
		q, scales, relErr := quantizeWeights(c.wv, dims, c.axis)
		base := c.w.name
		qName, sName, zName, dqName := md.fresh(base+"_quantized"), md.fresh(base+"_scale"), md.fresh(base+"_zero_point"), md.fresh(base+"_dequantized")
		g.g.Initializer = append(g.g.Initializer,
			int8Tensor(qName, dims, q),
			floatTensor(sName, []int64{int64(len(scales))}, scales),
			int8Tensor(zName, []int64{int64(len(scales))}, make([]int8, len(scales))))
		front = append(front, node("DequantizeLinear", dqName, []string{qName, sName, zName}, []string{dqName}, intAttr("axis", int64(c.axis))))
		md.setInput(c.n, c.wIdx, dqName)
		md.removeIfUnused(c.w.name)
		res.WeightErrors = append(res.WeightErrors, LayerErr{Layer: nodeName(c.n), Tensor: c.w.name, RelErr: relErr, Source: "weight"})

		if c.weightOnly {
			res.Quantized = append(res.Quantized, nodeName(c.n)+" (weights only)")
			continue
		}
		if c.biasIdx >= 0 {
			// Bias in int32 with scale x_scale * w_scale: exactly what QLinearConv/QGemm add to
			// their int32 accumulators, so the fused kernel needs no float bias pass.
			xs := params[c.x].scale
			bq := make([]int32, len(c.bv))
			bs := make([]float32, len(c.bv))
			clamped := 0
			for i, b := range c.bv {
				bs[i] = xs * scales[i]
				v := math.RoundToEven(float64(b) / float64(bs[i]))
				if v > math.MaxInt32 || v < math.MinInt32 {
					clamped++
					v = math.Max(math.MinInt32, math.Min(math.MaxInt32, v))
				}
				bq[i] = int32(v)
			}
			bName := c.n.GetInput()[c.biasIdx]
			if clamped > 0 {
				res.Skipped = append(res.Skipped, Skip{Node: nodeName(c.n), Tensor: bName,
					Reason: fmt.Sprintf("%d bias values overflow int32 at scale x_scale*w_scale and were clamped", clamped)})
			}
			bqName, bsName, bzName, bdqName := md.fresh(bName+"_quantized"), md.fresh(bName+"_scale"), md.fresh(bName+"_zero_point"), md.fresh(bName+"_dequantized")
			g.g.Initializer = append(g.g.Initializer,
				int32Tensor(bqName, []int64{int64(len(bq))}, bq),
				floatTensor(bsName, []int64{int64(len(bs))}, bs),
				int32Tensor(bzName, []int64{int64(len(bs))}, make([]int32, len(bs))))
			front = append(front, node("DequantizeLinear", bdqName, []string{bqName, bsName, bzName}, []string{bdqName}, intAttr("axis", 0)))
			md.setInput(c.n, c.biasIdx, bdqName)
			md.removeIfUnused(bName)
		}
		res.Quantized = append(res.Quantized, nodeName(c.n))
	}
	nodes := append([]*onnxpb.NodeProto(nil), front...)
	for _, n := range g.g.GetNode() {
		nodes = append(nodes, n)
		for _, o := range n.GetOutput() {
			nodes = append(nodes, after[o]...)
		}
	}
	g.g.Node = nodes
	act := "u8s8"
	if opts.Int8Activations {
		act = "s8s8"
	}
	cal := opts.Calibration.String()
	if opts.Calibration == Percentile {
		cal = fmt.Sprintf("percentile %g", opts.Percentile)
	}
	res.Method = fmt.Sprintf("static-qdq %s per-channel %s opset %d", act, cal, onnxpb.Opset(md.m))
	if len(swish) > 0 {
		res.Method += " integer-hardswish"
	}
	if len(res.PaddedDepthwise) > 0 {
		res.Method += " padded-depthwise"
	}
	reportWeights(md, opts, res)
	return nil
}

func input(n *onnxpb.NodeProto, i int) string {
	if i < len(n.GetInput()) {
		return n.GetInput()[i]
	}
	return ""
}

// reportWeights adds a Skip for every float weight still in the model that no Skip names yet,
// saying why it stayed float.
func reportWeights(md *model, opts Options, res *Result) {
	named := map[string]bool{}
	for _, s := range res.Skipped {
		named[s.Tensor] = true
	}
	readers := map[string][]string{}
	for _, gr := range md.graphs {
		for _, n := range gr.g.GetNode() {
			for _, in := range n.GetInput() {
				readers[in] = append(readers[in], n.GetOpType())
			}
		}
	}
	var names []string
	for name := range md.weights {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		w := md.weights[name]
		if named[name] {
			continue
		}
		dt := onnxpb.TensorProto_DataType(w.t.GetDataType())
		var why string
		switch {
		case dt == onnxpb.TensorProto_INT8 || dt == onnxpb.TensorProto_UINT8 || dt == onnxpb.TensorProto_INT32:
			continue // written by this package
		case dt != onnxpb.TensorProto_FLOAT:
			why = fmt.Sprintf("%s constant: shapes, indices and integer data are never quantized", dt)
		case numElements(w.t) < int64(opts.MinElements):
			why = fmt.Sprintf("%d elements < MinElements %d (scalars, epsilons, small biases: nothing to save, accuracy to lose)", numElements(w.t), opts.MinElements)
		default:
			why = fmt.Sprintf("feeds %v, which stays float", dedupe(sortedCopy(readers[name])))
		}
		res.Skipped = append(res.Skipped, Skip{Tensor: name, Reason: why})
	}
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

// spatial is the product of the dimensions after batch and channel.
func spatial(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape[2:] {
		n *= d
	}
	return n
}

// slowDepthwise reports whether c is a depthwise Conv (one input and one output channel per
// group) whose channel count is not a multiple of 16. ORT's QLinearConv packs such weights for
// MLAS's symmetric depthwise kernel only when the channel count is a multiple of its block (16 on
// x86); otherwise it runs a generic kernel that was 3-6x slower than the float NCHWc depthwise
// kernel on ocr_cls's 5x5 convolutions with 40, 88, 104 and 200 channels.
func slowDepthwise(c *candidate) bool {
	if c.n.GetOpType() != "Conv" {
		return false
	}
	dims := c.w.t.GetDims()
	g := attrInt(c.n, "group", 1)
	return g > 1 && dims[1] == 1 && dims[0] == g && g%16 != 0
}

// quantizedSet is the set of activations that will have a Q/DQ pair: acts and the outputs of
// the integer hard-swishes.
func quantizedSet(acts []string, swish map[string]*hardSwish) map[string]bool {
	q := map[string]bool{}
	for _, t := range acts {
		q[t] = true
	}
	for _, h := range swish {
		q[h.y] = true
	}
	return q
}

// floatMulInputs returns, for every Mul of the main graph whose output and one input are
// quantized activations, its other input when that is a float activation (not a constant).
// Quantizing it too lets ORT fuse DQ, DQ -> Mul -> Q into one QLinearMul instead of running a
// DequantizeLinear, a float Mul and a QuantizeLinear: in MobileNetV3's squeeze-excite blocks that
// is the channel scaling x * hardsigmoid(...), whose float Mul over the whole feature map (and the
// conversions around it) cost more than the int8 convolutions gained (RESULTS.md). The gate's new
// rounding is at most half a step of a [0, 1]-ish range.
func floatMulInputs(md *model, quantized map[string]bool) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range md.main.g.GetNode() {
		if n.GetOpType() != "Mul" || len(n.GetInput()) != 2 || len(n.GetOutput()) != 1 || !quantized[n.GetOutput()[0]] {
			continue
		}
		a, b := n.GetInput()[0], n.GetInput()[1]
		if quantized[b] {
			a, b = b, a
		}
		if !quantized[a] || quantized[b] || seen[b] || md.weights[b] != nil || md.main.isInput(b) {
			continue
		}
		seen[b] = true
		out = append(out, b)
	}
	return out
}

// chainOps are the operators through which ORT's QDQ passes keep a quantized tensor quantized
// (QLinearAdd/QLinearMul, uint8 pooling, Reshape and the other data-movement ops). Add and Mul
// count when any input is quantized, which overestimates the chain: dropIsolated only uses it to
// decide what is surely isolated.
var chainOps = map[string]bool{"Add": true, "Mul": true, "MaxPool": true, "AveragePool": true,
	"GlobalAveragePool": true, "Reshape": true, "Flatten": true, "Transpose": true, "Squeeze": true,
	"Unsqueeze": true, "Concat": true, "Relu": true, "Clip": true, "Resize": true}

// chainReach returns the tensors reachable from start through chainOps (the main graph's nodes are
// in topological order).
func chainReach(md *model, start map[string]bool) map[string]bool {
	reach := maps.Clone(start)
	for _, n := range md.main.g.GetNode() {
		if !chainOps[n.GetOpType()] {
			continue
		}
		for _, in := range n.GetInput() {
			if reach[in] {
				for _, o := range n.GetOutput() {
					reach[o] = true
				}
				break
			}
		}
	}
	return reach
}

// isolatedMACs bounds the work of a candidate that dropIsolated leaves float: a heavy
// convolution is worth its own Q/DQ pair, a classifier head is not.
const isolatedMACs = 1 << 20

// dropIsolated keeps float the light candidates whose input does not come from an int8 chain and
// whose output does not lead into one: quantizing such a node alone costs a QuantizeLinear before
// it and a DequantizeLinear after it, more than int8 saves on it (e.g. ocr_cls's final MatMul once
// the hard-swish and MaxPool before it are float). Repeated until nothing changes, since dropping
// one node can isolate its neighbour.
func dropIsolated(md *model, cands []*candidate, swish map[string]*hardSwish, obs map[string]*observed, res *Result) []*candidate {
	g := md.main
	for changed := true; changed; {
		changed = false
		qout, qin := map[string]bool{}, map[string]bool{}
		for _, c := range cands {
			if c.weightOnly {
				continue
			}
			qout[c.out], qin[c.x] = true, true
			if h := swish[c.out]; h != nil {
				qout[h.y] = true
			}
		}
		for _, t := range g.g.GetInput() {
			qout[t.GetName()] = true
		}
		reach := chainReach(md, qout)
		kept := cands[:0]
		for _, c := range cands {
			if c.weightOnly || reach[c.x] || swish[c.out] != nil || macs(c, obs) >= isolatedMACs {
				kept = append(kept, c)
				continue
			}
			into := false
			for t := range chainReach(md, map[string]bool{c.out: true}) {
				if qin[t] {
					into = true
					break
				}
			}
			if into {
				kept = append(kept, c)
				continue
			}
			res.Skipped = append(res.Skipped, Skip{Node: nodeName(c.n), Tensor: c.w.name,
				Reason: "isolated: its input is not int8 and its output leads to no int8 op, so quantizing it alone would add a QuantizeLinear/DequantizeLinear pair around one light op; it stays float"})
			changed = true
		}
		cands = kept
	}
	return cands
}

// macs estimates the multiply-adds of one run of c from its weight size and the calibrated
// shape of its input (0 when the shape is unknown).
func macs(c *candidate, obs map[string]*observed) int64 {
	o := obs[c.x]
	if o == nil || len(o.shape) < 2 {
		return 0
	}
	w := int64(len(c.wv))
	switch c.n.GetOpType() {
	case "Conv":
		if len(o.shape) < 3 {
			return 0
		}
		n := o.shape[0] * spatial(o.shape) * w // output positions ~ input positions / stride^2; an upper bound
		return n
	default: // MatMul, Gemm: rows x K x N
		rows := int64(1)
		for _, d := range o.shape[:len(o.shape)-1] {
			rows *= d
		}
		return rows * w
	}
}

// poolOutputs returns the outputs of GlobalAveragePool nodes whose input is a quantized
// activation and whose output is not. Quantizing the pooled vector lets ORT pool on the integers
// (QLinearGlobalAveragePool, in NHWC next to the QLinearConvs) instead of dequantizing the whole
// feature map, transposing it back to NCHW and pooling in float: in MobileNetV3's
// squeeze-excite blocks that was a DequantizeLinear, a Transpose and a float pool per block.
func poolOutputs(md *model, quantized map[string]bool) []string {
	var out []string
	for _, n := range md.main.g.GetNode() {
		if n.GetOpType() != "GlobalAveragePool" || len(n.GetInput()) != 1 || len(n.GetOutput()) != 1 {
			continue
		}
		if quantized[n.GetInput()[0]] && !quantized[n.GetOutput()[0]] && !md.main.isOutput(n.GetOutput()[0]) {
			out = append(out, n.GetOutput()[0])
		}
	}
	return out
}
