package infer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/onnxpb"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"google.golang.org/protobuf/proto"
)

// loadFile loads a model file as version version of name, closed at cleanup.
func loadFile(t testing.TB, path, name, version string, opts onnxrt.Options, lo LoadOptions) *Model {
	t.Helper()
	man := &bundle.Manifest{Name: name, Version: version, Files: []bundle.FileEntry{{Path: filepath.Base(path), Role: bundle.RoleModel}}}
	m, err := LoadWith(filepath.Dir(path), name+"-"+version, man, opts, lo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// loadReal loads one of scripts/fetch-models.sh's models (skips loudly without ORT, fails in CI).
func loadReal(t testing.TB, file, name, version string, lo LoadOptions) *Model {
	t.Helper()
	return loadFile(t, filepath.Join(fleettest.Models(t), file), name, version, onnxrt.Options{IntraOpThreads: 1}, lo)
}

type idInput struct {
	elem  onnxpb.TensorProto_DataType
	shape []int64
}

// identityModel writes a model that passes each input to "<input>_out", to test every datatype
// without a third-party file. -1 in a shape is a symbolic dimension "n".
func identityModel(t testing.TB, inputs map[string]idInput) string {
	t.Helper()
	fleettest.Models(t) // ORT must be initialized
	g := &onnxpb.GraphProto{Name: proto.String("identity")}
	names := make([]string, 0, len(inputs))
	for name := range inputs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		in := inputs[name]
		tt := &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(in.elem)), Shape: &onnxpb.TensorShapeProto{}}
		for _, d := range in.shape {
			dim := &onnxpb.TensorShapeProto_Dimension{}
			if d < 0 {
				dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "n"}
			} else {
				dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}
			}
			tt.Shape.Dim = append(tt.Shape.Dim, dim)
		}
		typ := &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: tt}}
		g.Input = append(g.Input, &onnxpb.ValueInfoProto{Name: proto.String(name), Type: typ})
		g.Output = append(g.Output, &onnxpb.ValueInfoProto{Name: proto.String(name + "_out"), Type: typ})
		g.Node = append(g.Node, &onnxpb.NodeProto{OpType: proto.String("Identity"), Input: []string{name}, Output: []string{name + "_out"}})
	}
	m := &onnxpb.ModelProto{IrVersion: proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(14)}}, Graph: g}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "identity.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// perturbed writes a copy of a model with every float initializer scaled by factor: the same
// inputs and outputs, different answers.
func perturbed(t testing.TB, src string, factor float32) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnxpb.ReadModel(b)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, init := range m.GetGraph().GetInitializer() {
		if init.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
			continue
		}
		if fd := init.GetFloatData(); len(fd) > 0 {
			for i := range fd {
				fd[i] *= factor
			}
			n++
			continue
		}
		raw := init.GetRawData()
		for i := 0; i+4 <= len(raw); i += 4 {
			f := bytesToF32(raw[i : i+4])
			f32ToBytes(raw[i:i+4], f*factor)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no float initializers to perturb")
	}
	out, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// do sends a request to h and returns status, headers and body.
func do(t testing.TB, h http.Handler, method, path string, body []byte, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Header(), rec.Body.Bytes()
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func bytesToF32(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) }

func f32ToBytes(b []byte, f float32) { binary.LittleEndian.PutUint32(b, math.Float32bits(f)) }
