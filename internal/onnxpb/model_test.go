package onnxpb

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// modelsDir provisions the real test models with the project's script. Without them the tests
// skip loudly, except in CI, where a missing model is a broken pipeline.
func modelsDir(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(root, "scripts", "fetch-models.sh")).Output()
	if err != nil {
		msg := "scripts/fetch-models.sh failed: " + err.Error()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg += ": " + string(ee.Stderr)
		}
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING real-model tests: " + msg)
	}
	return strings.TrimSpace(string(out))
}

func TestReadRealModels(t *testing.T) {
	dir := modelsDir(t)
	tests := []struct {
		file    string
		ir      int64
		opset   int64
		inputs  []string
		outputs []string
		// first input's shape and symbolic names, as the file declares them
		shape  []int64
		params []string
		graphs int
	}{
		{"hello_deepa.onnx", 7, 13, []string{"onnx::Flatten_0"}, []string{"39"}, []int64{1, 25, 96}, []string{"", "", ""}, 1},
		{"ocr_cls.onnx", 8, 9, []string{"x"}, []string{"softmax_0.tmp_0"}, []int64{-1, 3, -1, -1},
			[]string{"p2o.DynamicDimension.0", "", "p2o.DynamicDimension.1", "p2o.DynamicDimension.2"}, 1},
		{"ocr_det.onnx", 8, 11, []string{"x"}, []string{"sigmoid_0.tmp_0"}, []int64{-1, 3, -1, -1},
			[]string{"p2o.DynamicDimension.0", "", "p2o.DynamicDimension.1", "p2o.DynamicDimension.2"}, 1},
		// silero's If branches and loops make it the subgraph case.
		{"silero_vad_v5.onnx", 8, 16, []string{"input", "state", "sr"}, []string{"output", "stateN"}, []int64{-1, -1}, []string{"", ""}, 51},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			m, err := ReadModelFile(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := m.GetIrVersion(); got != tc.ir {
				t.Errorf("ir_version = %d, want %d", got, tc.ir)
			}
			if got := Opset(m); got != tc.opset {
				t.Errorf("Opset = %d, want %d", got, tc.opset)
			}
			var in, out []string
			for _, vi := range GraphInputs(m.GetGraph()) {
				in = append(in, vi.GetName())
			}
			for _, vi := range m.GetGraph().GetOutput() {
				out = append(out, vi.GetName())
			}
			if !slices.Equal(in, tc.inputs) || !slices.Equal(out, tc.outputs) {
				t.Errorf("inputs %q outputs %q, want %q %q", in, out, tc.inputs, tc.outputs)
			}
			dims, params, ok := TensorShape(GraphInputs(m.GetGraph())[0].GetType())
			if !ok || !slices.Equal(dims, tc.shape) || !slices.Equal(params, tc.params) {
				t.Errorf("first input shape %v %q (ok %t), want %v %q", dims, params, ok, tc.shape, tc.params)
			}
			n := 0
			WalkGraphs(m.GetGraph(), func(*GraphProto) { n++ })
			if n != tc.graphs {
				t.Errorf("WalkGraphs visited %d graphs, want %d", n, tc.graphs)
			}
			if ext := ExternalTensors(m); len(ext) != 0 {
				t.Errorf("ExternalTensors = %q, want none", ext)
			}
			// A rewrite must be able to write the model back without losing anything.
			b, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			m2, err := ReadModel(b)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(m, m2) {
				t.Error("model differs after a marshal round trip")
			}
		})
	}
}

func TestSileroScalarInput(t *testing.T) {
	m, err := ReadModelFile(filepath.Join(modelsDir(t), "silero_vad_v5.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	sr := GraphInputs(m.GetGraph())[2]
	if got := TensorProto_DataType(sr.GetType().GetTensorType().GetElemType()); got != TensorProto_INT64 {
		t.Errorf("sr elem type %v, want INT64", got)
	}
	dims, _, ok := TensorShape(sr.GetType())
	if !ok || dims == nil || len(dims) != 0 {
		t.Errorf("sr shape %v ok %t, want a known scalar", dims, ok)
	}
}

func TestReadModelRejects(t *testing.T) {
	noGraph, _ := proto.Marshal(&ModelProto{IrVersion: proto.Int64(8)})
	tests := map[string][]byte{
		"empty":    nil,
		"garbage":  []byte("\xff\xff\xff\xff not protobuf"),
		"text":     []byte("hello world"),
		"no graph": noGraph,
	}
	for name, b := range tests {
		if _, err := ReadModel(b); !errors.Is(err, ErrNotModel) {
			t.Errorf("%s: err %v, want ErrNotModel", name, err)
		}
	}
}

func TestOpsetDomainsAndInitializers(t *testing.T) {
	ext := TensorProto_EXTERNAL
	m := &ModelProto{
		IrVersion: proto.Int64(3),
		OpsetImport: []*OperatorSetIdProto{
			{Domain: proto.String("com.microsoft"), Version: proto.Int64(1)},
			{Domain: proto.String("ai.onnx"), Version: proto.Int64(12)},
		},
		Graph: &GraphProto{
			Input:       []*ValueInfoProto{{Name: proto.String("x")}, {Name: proto.String("w")}},
			Initializer: []*TensorProto{{Name: proto.String("w")}},
			Node: []*NodeProto{{
				OpType: proto.String("If"),
				Attribute: []*AttributeProto{{
					Name: proto.String("then_branch"),
					G: &GraphProto{Node: []*NodeProto{{
						OpType: proto.String("Constant"),
						Attribute: []*AttributeProto{{
							Name: proto.String("value"),
							T:    &TensorProto{Name: proto.String("big"), DataLocation: &ext},
						}},
					}}},
				}},
			}},
		},
	}
	if got := Opset(m); got != 12 {
		t.Errorf("Opset = %d, want 12 (ai.onnx is the default domain)", got)
	}
	if v, ok := OpsetFor(m, "com.microsoft"); !ok || v != 1 {
		t.Errorf("OpsetFor(com.microsoft) = %d %t", v, ok)
	}
	if _, ok := OpsetFor(m, "ai.onnx.ml"); ok {
		t.Error("OpsetFor(ai.onnx.ml) found a domain the model does not import")
	}
	in := GraphInputs(m.GetGraph())
	if len(in) != 1 || in[0].GetName() != "x" {
		t.Errorf("GraphInputs = %v, want only x (w is an initializer)", in)
	}
	if got := ExternalTensors(m); !slices.Equal(got, []string{"big"}) {
		t.Errorf("ExternalTensors = %q, want [big] from the subgraph's Constant", got)
	}
	if _, _, ok := TensorShape(&TypeProto{}); ok {
		t.Error("TensorShape of a non-tensor type reported ok")
	}
}
