package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/onnxpb"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/builder"
)

// scaleGraph is a one-node graph out = in * k, float tensors of shape dims.
func scaleGraph(t *testing.T, in, out string, dims []int64, k float32) []byte {
	t.Helper()
	tt := &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Shape: &onnxpb.TensorShapeProto{}}
	for _, d := range dims {
		tt.Shape.Dim = append(tt.Shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
	}
	typ := &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: tt}}
	g := &onnxpb.GraphProto{
		Name:        proto.String("scale"),
		Input:       []*onnxpb.ValueInfoProto{{Name: proto.String(in), Type: typ}},
		Output:      []*onnxpb.ValueInfoProto{{Name: proto.String(out), Type: typ}},
		Initializer: []*onnxpb.TensorProto{{Name: proto.String("k"), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: []float32{k}}},
		Node:        []*onnxpb.NodeProto{{OpType: proto.String("Mul"), Input: []string{in, "k"}, Output: []string{out}}},
	}
	b, err := proto.Marshal(&onnxpb.ModelProto{IrVersion: proto.Int64(8), Graph: g,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPrePostProcessingGraphs: a bundle's pre- and post-processing graphs run around the model on
// the device, exactly as at build time: the device answers post(model(pre(x))).
func TestPrePostProcessingGraphs(t *testing.T) {
	models := fleettest.Models(t)
	k := fleettest.NewKeys(t)
	dir := t.TempDir()
	pre := filepath.Join(dir, "pre.onnx")
	post := filepath.Join(dir, "post.onnx")
	os.WriteFile(pre, scaleGraph(t, "audio", "onnx::Flatten_0", []int64{1, 25, 96}, 0.5), 0o644)
	os.WriteFile(post, scaleGraph(t, "39", "score", []int64{1, 1}, 100), 0o644)
	var buf bytes.Buffer
	res, err := builder.Build(context.Background(), builder.Options{ModelPath: filepath.Join(models, "hello_deepa.onnx"), Name: "wake", Version: "1.0.0",
		PrePath: pre, PostPath: post, Golden: 2}, k.Release, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.Schema.Inputs[0].Name != "audio" || res.Manifest.Schema.Outputs[0].Name != "score" {
		t.Fatalf("manifest schema is not the pipeline's: %+v", res.Manifest.Schema)
	}
	path := filepath.Join(dir, "wake.bundle")
	os.WriteFile(path, buf.Bytes(), 0o644)

	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	ag := fleettest.OTAAgent(t, cp, k, "pp-1", "g")
	addr := ag.ListenAddr(t)
	cp.Push(path)
	fleettest.Eventually(t, 30*time.Second, "registered", func() bool { _, ok := cp.Devices()["pp-1"]; return ok })
	assign(t, cp, "pp-1", "wake@1.0.0", "0s")
	waitModel(t, cp, "pp-1", "wake", "installed (its smoke test ran the whole pipeline)", func(a, s, _ string) bool { return a == res.ID && s == updater.StepCommitted })

	mb, _ := os.ReadFile(filepath.Join(models, "hello_deepa.onnx"))
	sess, err := onnxrt.NewSession(mb, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	x := make([]float32, 25*96)
	half := make([]float32, len(x))
	for i := range x {
		x[i] = float32(i%17) / 17
		half[i] = x[i] * 0.5
	}
	want, err := sess.Run(t.Context(), []onnxrt.Tensor{{Name: "onnx::Flatten_0", DType: onnxrt.FP32, Shape: []int64{1, 25, 96}, Data: half}})
	if err != nil {
		t.Fatal(err)
	}
	got, code, body := infer(t, addr, "wake", []onnxrt.Tensor{{Name: "audio", DType: onnxrt.FP32, Shape: []int64{1, 25, 96}, Data: x}})
	if code != 200 {
		t.Fatalf("infer through the pipeline: %d %s", code, body)
	}
	var vals []float64
	json.Unmarshal(got.Outputs[0].Data, &vals)
	w := float64(want[0].Data.([]float32)[0]) * 100
	if got.Outputs[0].Name != "score" || len(vals) != 1 || math.Abs(vals[0]-w) > 1e-3 {
		t.Fatalf("device answered %s=%v, want score=%v (post(model(pre(x))))", got.Outputs[0].Name, vals, w)
	}
}
