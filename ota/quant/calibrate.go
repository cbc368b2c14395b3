package quant

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"google.golang.org/protobuf/proto"
)

// maxKept bounds the values kept per tensor and sample for percentile calibration: activation
// maps of a detector are millions of floats, and a strided subsample estimates a 99.99th
// percentile well enough at a fraction of the memory.
const maxKept = 1 << 15

// observed is what calibration learned about one tensor.
type observed struct {
	min, max float32
	rank     int
	shape    []int64
	kept     []float32 // strided subsample, for percentiles
}

// withOutputs returns a copy of the model whose main graph also outputs names, so that one ORT
// run shows the intermediate tensors. This is how calibration (and the per-layer report) observes
// activations without a second inference engine. Only main-graph tensors can be exposed: ONNX
// gives a subgraph's inner values no way out.
func withOutputs(m *onnxpb.ModelProto, names []string) ([]byte, error) {
	c := proto.Clone(m).(*onnxpb.ModelProto)
	g := c.GetGraph()
	have := map[string]bool{}
	for _, o := range g.GetOutput() {
		have[o.GetName()] = true
	}
	for _, in := range g.GetInput() {
		have[in.GetName()] = true
	}
	for _, n := range names {
		if have[n] {
			continue
		}
		have[n] = true
		g.Output = append(g.Output, &onnxpb.ValueInfoProto{Name: proto.String(n), Type: &onnxpb.TypeProto{
			Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT))}},
		}})
	}
	b, err := proto.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("quant: marshal observation model: %w", err)
	}
	return b, nil
}

// observe runs the model on samples and records the range (and, if keep, a subsample) of each
// named float tensor.
func observe(ctx context.Context, m *onnxpb.ModelProto, names []string, samples [][]onnxrt.Tensor, threads int, keep bool) (map[string]*observed, error) {
	b, err := withOutputs(m, names)
	if err != nil {
		return nil, err
	}
	sess, err := onnxrt.NewSession(b, onnxrt.Options{IntraOpThreads: threads})
	if err != nil {
		return nil, fmt.Errorf("quant: calibration session: %w", err)
	}
	defer sess.Close()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	obs := map[string]*observed{}
	record := func(t onnxrt.Tensor) {
		v, ok := t.Data.([]float32)
		if !ok || !want[t.Name] {
			return
		}
		o := obs[t.Name]
		if o == nil {
			o = &observed{min: float32(math.Inf(1)), max: float32(math.Inf(-1)), rank: len(t.Shape), shape: t.Shape}
			obs[t.Name] = o
		}
		for _, x := range v {
			if x < o.min {
				o.min = x
			}
			if x > o.max {
				o.max = x
			}
		}
		if keep {
			stride := max(1, len(v)/maxKept)
			for i := 0; i < len(v); i += stride {
				o.kept = append(o.kept, v[i])
			}
		}
	}
	for i, s := range samples {
		out, err := sess.Run(ctx, s)
		if err != nil {
			return nil, fmt.Errorf("quant: calibration sample %d: %w", i, err)
		}
		for _, t := range s {
			record(t)
		}
		for _, t := range out {
			record(t)
		}
	}
	return obs, nil
}

// rangeOf returns the calibrated range of a tensor.
func (o *observed) rangeOf(c Calibration, pct float64) (lo, hi float32) {
	if c != Percentile || len(o.kept) == 0 {
		return o.min, o.max
	}
	v := slices.Clone(o.kept)
	slices.Sort(v)
	at := func(p float64) float32 {
		i := int(math.Round(p / 100 * float64(len(v)-1)))
		return v[max(0, min(len(v)-1, i))]
	}
	return at(100 - pct), at(pct)
}
