package quant

import (
	"fmt"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
)

// quantizeDynamic rewrites each MatMul/Gemm with a constant 2-D weight, in every graph, into
//
//	DynamicQuantizeLinear(A) -> MatMulInteger(A_u8, W_s8, A_zp, 0) -> Cast(float) -> Mul(A_scale*W_scale)
//
// (plus Add for a Gemm bias), the layout of ORT's quantize_dynamic, which ORT's CPU provider
// runs as MatMulInteger or fuses into DynamicQuantizeMatMul. Activation scales are computed per
// call, so no calibration is needed and subgraphs are handled too. Conv is left float: ConvInteger's
// CPU kernel takes uint8 weights only and is slower than float Conv; use static mode for CNNs.
func quantizeDynamic(md *model, opts Options, res *Result) error {
	if onnxpb.Opset(md.m) < 11 {
		// DynamicQuantizeLinear exists from opset 11.
		if _, err := upgradeOpset(md, nil); err != nil {
			return err
		}
	}
	for _, gr := range md.graphs {
		var nodes []*onnxpb.NodeProto
		quantizedA := map[string][3]string{} // activation -> its u8, scale, zero point
		for _, n := range gr.g.GetNode() {
			op := n.GetOpType()
			if op == "Conv" || op == "LSTM" || op == "GRU" || op == "ConvTranspose" {
				why := op + " stays float in dynamic mode: ConvInteger's CPU kernel takes uint8 weights only and runs slower than float Conv; use static mode"
				if op != "Conv" && op != "ConvTranspose" {
					why = op + " stays float: the default domain has no integer " + op + " kernel"
				}
				res.Skipped = append(res.Skipped, Skip{Node: nodeName(n), Tensor: input(n, 1), Reason: why})
			}
			if op != "MatMul" && op != "Gemm" {
				nodes = append(nodes, n)
				continue
			}
			c, why := pick(md, n, opts.MinElements)
			if c == nil {
				res.Skipped = append(res.Skipped, Skip{Node: nodeName(n), Tensor: input(n, 1), Reason: why})
				nodes = append(nodes, n)
				continue
			}
			dims := c.w.t.GetDims()
			wv := c.wv
			if c.axis == 0 { // Gemm transB: store W as [K, N] for MatMulInteger
				wv, dims = transpose(wv, dims), []int64{dims[1], dims[0]}
			}
			q, scales, relErr := quantizeWeights(wv, dims, 1)
			y := n.GetOutput()[0]
			a, ok := quantizedA[c.x]
			if !ok {
				a = [3]string{md.fresh(c.x + "_quantized"), md.fresh(c.x + "_scale"), md.fresh(c.x + "_zero_point")}
				nodes = append(nodes, node("DynamicQuantizeLinear", a[0], []string{c.x}, a[:]))
				quantizedA[c.x] = a
			}
			base := c.w.name
			wq, ws, wz := md.fresh(base+"_quantized"), md.fresh(base+"_scale"), md.fresh(base+"_zero_point")
			gr.g.Initializer = append(gr.g.Initializer,
				int8Tensor(wq, dims, q),
				floatTensor(ws, []int64{int64(len(scales))}, scales),
				// One zero point for all columns: the weights are symmetric (all zero points 0),
				// and a scalar is what every MatMulInteger implementation accepts.
				int8Tensor(wz, nil, []int8{0}))
			acc, accF, scale := md.fresh(y+"_int32"), md.fresh(y+"_float"), md.fresh(y+"_scales")
			pre := y
			if c.biasIdx >= 0 {
				pre = md.fresh(y + "_nobias")
			}
			nodes = append(nodes,
				node("MatMulInteger", acc, []string{a[0], wq, a[2], wz}, []string{acc}),
				node("Cast", accF, []string{acc}, []string{accF}, intAttr("to", int64(onnxpb.TensorProto_FLOAT))),
				node("Mul", scale, []string{a[1], ws}, []string{scale}),
				node("Mul", pre, []string{accF, scale}, []string{pre}))
			if c.biasIdx >= 0 {
				nodes = append(nodes, node("Add", y, []string{pre, n.GetInput()[c.biasIdx]}, []string{y}))
			}
			for _, in := range n.GetInput() {
				md.uses[in]--
			}
			if c.biasIdx >= 0 {
				md.uses[n.GetInput()[c.biasIdx]]++
			}
			md.removeIfUnused(c.w.name)
			res.Quantized = append(res.Quantized, nodeName(n))
			res.WeightErrors = append(res.WeightErrors, LayerErr{Layer: nodeName(n), Tensor: c.w.name, RelErr: relErr, Source: "weight"})
		}
		gr.g.Node = nodes
	}
	res.Method = fmt.Sprintf("dynamic matmulinteger u8s8 per-column opset %d", onnxpb.Opset(md.m))
	reportWeights(md, opts, res)
	return nil
}

// transpose swaps the two axes of a 2-D tensor.
func transpose(v []float32, dims []int64) []float32 {
	r, c := int(dims[0]), int(dims[1])
	out := make([]float32, len(v))
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			out[j*r+i] = v[i*c+j]
		}
	}
	return out
}
