package onnxpb

import (
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/proto"
)

// MaxModelBytes is the largest model ReadModel accepts. Protobuf cannot encode a message of 2 GiB
// or more, so bigger ONNX models keep their weights in external files, which we do not support.
const MaxModelBytes = 2<<30 - 1

var (
	// ErrNotModel is returned for bytes that parse as protobuf but do not describe an ONNX model.
	ErrNotModel = errors.New("not an ONNX model")
	// ErrTooLarge is returned for input larger than MaxModelBytes.
	ErrTooLarge = errors.New("ONNX model too large")
)

// DefaultDomain is the canonical name of the standard operator set. Models may also spell it
// "ai.onnx".
const DefaultDomain = ""

// ReadModel parses an ONNX model. It rejects input over MaxModelBytes and input that does not
// carry both an IR version and a graph: random bytes often parse as some protobuf message, and a
// caller must not mistake that for a model.
func ReadModel(b []byte) (*ModelProto, error) {
	if len(b) > MaxModelBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxModelBytes)
	}
	m := new(ModelProto)
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotModel, err)
	}
	if m.GetIrVersion() <= 0 || m.GetGraph() == nil {
		return nil, fmt.Errorf("%w: ir_version %d, graph present %t", ErrNotModel, m.GetIrVersion(), m.GetGraph() != nil)
	}
	return m, nil
}

// ReadModelFile reads and parses the model at path, checking its size before reading it all.
func ReadModelFile(path string) (*ModelProto, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxModelBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read model %s: %w", path, err)
	}
	m, err := ReadModel(b)
	if err != nil {
		return nil, fmt.Errorf("read model %s: %w", path, err)
	}
	return m, nil
}

// Opset returns the version of the standard operator set ("" or "ai.onnx") the model imports,
// or 0 if it imports none.
func Opset(m *ModelProto) int64 {
	v, _ := OpsetFor(m, DefaultDomain)
	return v
}

// OpsetFor returns the version the model imports for an operator-set domain. "" and "ai.onnx"
// name the same domain.
func OpsetFor(m *ModelProto, domain string) (int64, bool) {
	for _, o := range m.GetOpsetImport() {
		if sameDomain(o.GetDomain(), domain) {
			return o.GetVersion(), true
		}
	}
	return 0, false
}

func sameDomain(a, b string) bool {
	if a == "ai.onnx" {
		a = ""
	}
	if b == "ai.onnx" {
		b = ""
	}
	return a == b
}

// GraphInputs returns the inputs a caller must feed. Models from IR version 3 and older list
// every initializer as a graph input too; those have a default value and are left out.
func GraphInputs(g *GraphProto) []*ValueInfoProto {
	inits := make(map[string]bool, len(g.GetInitializer()))
	for _, t := range g.GetInitializer() {
		inits[t.GetName()] = true
	}
	var in []*ValueInfoProto
	for _, vi := range g.GetInput() {
		if !inits[vi.GetName()] {
			in = append(in, vi)
		}
	}
	return in
}

// TensorShape returns the dimensions of a tensor type, with -1 for a dimension whose size is not
// fixed, and per dimension its symbolic name ("" when it has none). ok is false when t is not a
// tensor or its rank is unknown; a scalar has ok true and zero dimensions.
func TensorShape(t *TypeProto) (dims []int64, params []string, ok bool) {
	tt := t.GetTensorType()
	if tt == nil || tt.GetShape() == nil {
		return nil, nil, false
	}
	ds := tt.GetShape().GetDim()
	dims = make([]int64, len(ds))
	params = make([]string, len(ds))
	for i, d := range ds {
		dims[i] = -1
		// Some old exporters wrote 0 or -1 for "unknown"; ONNX Runtime treats those as dynamic too.
		if v, isValue := d.GetValue().(*TensorShapeProto_Dimension_DimValue); isValue && v.DimValue > 0 {
			dims[i] = v.DimValue
		}
		params[i] = d.GetDimParam()
	}
	return dims, params, true
}

// WalkGraphs calls fn for g and then for every subgraph nested in its nodes' attributes (the
// branches of If, the bodies of Loop and Scan), depth first. Rewrites such as quantization must
// visit all of them: weights live in subgraphs too.
func WalkGraphs(g *GraphProto, fn func(*GraphProto)) {
	if g == nil {
		return
	}
	fn(g)
	for _, n := range g.GetNode() {
		for _, a := range n.GetAttribute() {
			WalkGraphs(a.GetG(), fn)
			for _, sub := range a.GetGraphs() {
				WalkGraphs(sub, fn)
			}
		}
	}
}

// ExternalTensors returns the names of tensors, in the graph or any subgraph, whose data lives in
// a file beside the model. Such a model cannot be loaded from its bytes alone.
func ExternalTensors(m *ModelProto) []string {
	var names []string
	check := func(t *TensorProto) {
		if t != nil && t.GetDataLocation() == TensorProto_EXTERNAL {
			names = append(names, t.GetName())
		}
	}
	WalkGraphs(m.GetGraph(), func(g *GraphProto) {
		for _, t := range g.GetInitializer() {
			check(t)
		}
		for _, n := range g.GetNode() {
			for _, a := range n.GetAttribute() {
				check(a.GetT())
				for _, t := range a.GetTensors() {
					check(t)
				}
			}
		}
	})
	return names
}
