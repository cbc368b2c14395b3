package quant

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
	"google.golang.org/protobuf/proto"
)

// graph wraps one ONNX graph with the indexes a rewrite needs. parent is nil for the main graph.
type graph struct {
	g      *onnxpb.GraphProto
	parent *graph
}

// weight is a constant float tensor, stored either as an initializer or as the value of a
// Constant node. Both forms are common: PyTorch writes initializers, Paddle2ONNX and spox write
// Constant nodes (ocr_det, silero), and a quantizer that looked only at initializers would
// silently leave those models float.
type weight struct {
	name  string
	t     *onnxpb.TensorProto
	owner *graph            // the graph that holds it
	node  *onnxpb.NodeProto // the Constant node, nil for an initializer
}

// model is a parsed ONNX model with its weights and consumers indexed across all graphs.
type model struct {
	m      *onnxpb.ModelProto
	main   *graph
	graphs []*graph
	// weights maps a tensor name to its constant. Names are unique across a well-formed model;
	// a name defined twice (shadowing in a subgraph) is recorded in ambiguous and never rewritten.
	weights   map[string]*weight
	ambiguous map[string]bool
	// uses counts, per tensor name, the node inputs in any graph that read it; a subgraph that
	// reads an outer name counts too, so a weight is only removed when nothing reads it.
	uses map[string]int
	// graphOf says which graph a node lives in.
	graphOf map[*onnxpb.NodeProto]*graph
	names   map[string]bool // every tensor name in use, to mint fresh ones
}

// parseModel reads a model and inlines external tensor data found relative to dir. dir "" means
// the model must be self-contained.
func parseModel(b []byte, dir string) (*model, error) {
	m, err := onnxpb.ReadModel(b)
	if err != nil {
		return nil, fmt.Errorf("quant: %w", err)
	}
	if err := inlineExternal(m, dir); err != nil {
		return nil, err
	}
	return index(m), nil
}

// index builds the lookup tables. It is called again after structural rewrites.
func index(m *onnxpb.ModelProto) *model {
	md := &model{m: m, weights: map[string]*weight{}, ambiguous: map[string]bool{}, uses: map[string]int{},
		graphOf: map[*onnxpb.NodeProto]*graph{}, names: map[string]bool{}}
	var walk func(g *onnxpb.GraphProto, parent *graph)
	walk = func(g *onnxpb.GraphProto, parent *graph) {
		gr := &graph{g: g, parent: parent}
		if parent == nil {
			md.main = gr
		}
		md.graphs = append(md.graphs, gr)
		add := func(w *weight) {
			if _, dup := md.weights[w.name]; dup {
				md.ambiguous[w.name] = true
			}
			md.weights[w.name] = w
			md.names[w.name] = true
		}
		for _, t := range g.GetInitializer() {
			add(&weight{name: t.GetName(), t: t, owner: gr})
		}
		for _, vi := range g.GetInput() {
			md.names[vi.GetName()] = true
		}
		for _, n := range g.GetNode() {
			md.graphOf[n] = gr
			for _, in := range n.GetInput() {
				if in != "" {
					md.uses[in]++
				}
			}
			for _, out := range n.GetOutput() {
				md.names[out] = true
			}
			if n.GetOpType() == "Constant" && n.GetDomain() == "" && len(n.GetOutput()) == 1 {
				for _, a := range n.GetAttribute() {
					if a.GetName() == "value" && a.GetT() != nil {
						add(&weight{name: n.GetOutput()[0], t: a.GetT(), owner: gr, node: n})
					}
				}
			}
			for _, a := range n.GetAttribute() {
				if a.GetG() != nil {
					walk(a.GetG(), gr)
				}
				for _, sub := range a.GetGraphs() {
					walk(sub, gr)
				}
			}
		}
		for _, o := range g.GetOutput() {
			md.uses[o.GetName()]++ // an output is a use: never delete what a graph returns
		}
	}
	walk(m.GetGraph(), nil)
	return md
}

// inlineExternal replaces external tensor data (data_location EXTERNAL, file relative to the
// model's folder) with raw_data, so that the rewritten model is one self-contained file that
// ONNX Runtime can load from bytes. Quantized models are 4x smaller, which is what makes this
// affordable: a model that needed external data at fp32 (> 2 GiB) would still be refused by
// protobuf's limit after inlining, and that error is reported.
func inlineExternal(m *onnxpb.ModelProto, dir string) error {
	var errs []error
	fix := func(t *onnxpb.TensorProto) {
		if t == nil || t.GetDataLocation() != onnxpb.TensorProto_EXTERNAL {
			return
		}
		if err := readExternal(t, dir); err != nil {
			errs = append(errs, fmt.Errorf("tensor %q: %w", t.GetName(), err))
		}
	}
	onnxpb.WalkGraphs(m.GetGraph(), func(g *onnxpb.GraphProto) {
		for _, t := range g.GetInitializer() {
			fix(t)
		}
		for _, n := range g.GetNode() {
			for _, a := range n.GetAttribute() {
				fix(a.GetT())
				for _, t := range a.GetTensors() {
					fix(t)
				}
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("quant: external data: %w", errors.Join(errs...))
	}
	return nil
}

func readExternal(t *onnxpb.TensorProto, dir string) error {
	if dir == "" {
		return errors.New("data is external but no model folder was given (Options.ModelDir)")
	}
	var loc string
	var off, length int64 = 0, -1
	for _, kv := range t.GetExternalData() {
		switch kv.GetKey() {
		case "location":
			loc = kv.GetValue()
		case "offset":
			v, err := strconv.ParseInt(kv.GetValue(), 10, 64)
			if err != nil {
				return fmt.Errorf("offset: %w", err)
			}
			off = v
		case "length":
			v, err := strconv.ParseInt(kv.GetValue(), 10, 64)
			if err != nil {
				return fmt.Errorf("length: %w", err)
			}
			length = v
		}
	}
	// The location is relative to the model's folder and must stay inside it: a model from an
	// untrusted source must not make the builder read /etc/shadow into a bundle.
	if loc == "" || filepath.IsAbs(loc) || strings.HasPrefix(filepath.Clean(loc), "..") {
		return fmt.Errorf("location %q must be a relative path inside the model folder", loc)
	}
	f, err := os.Open(filepath.Join(dir, filepath.Clean(loc)))
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	var r io.Reader = f
	if length >= 0 {
		r = io.LimitReader(f, length)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if length >= 0 && int64(len(b)) != length {
		return fmt.Errorf("%s: want %d bytes at offset %d, file has %d", loc, length, off, len(b))
	}
	t.RawData = b
	t.ExternalData = nil
	t.DataLocation = nil
	return nil
}

// floats decodes a FLOAT tensor's values.
func floats(t *onnxpb.TensorProto) ([]float32, error) {
	if t.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
		return nil, fmt.Errorf("tensor %q is %s, not FLOAT", t.GetName(), onnxpb.TensorProto_DataType(t.GetDataType()))
	}
	n := int64(1)
	for _, d := range t.GetDims() {
		n *= d
	}
	if raw := t.GetRawData(); raw != nil {
		if int64(len(raw)) != 4*n {
			return nil, fmt.Errorf("tensor %q: %d raw bytes for %d floats", t.GetName(), len(raw), n)
		}
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return out, nil
	}
	if int64(len(t.GetFloatData())) != n {
		return nil, fmt.Errorf("tensor %q: %d values for %d elements", t.GetName(), len(t.GetFloatData()), n)
	}
	return append([]float32(nil), t.GetFloatData()...), nil
}

func numElements(t *onnxpb.TensorProto) int64 {
	n := int64(1)
	for _, d := range t.GetDims() {
		n *= d
	}
	return n
}

func floatTensor(name string, dims []int64, v []float32) *onnxpb.TensorProto {
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), RawData: raw}
}

func int8Tensor(name string, dims []int64, v []int8) *onnxpb.TensorProto {
	raw := make([]byte, len(v))
	for i, x := range v {
		raw[i] = byte(x)
	}
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(onnxpb.TensorProto_INT8)), RawData: raw}
}

func uint8Tensor(name string, dims []int64, v []uint8) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(onnxpb.TensorProto_UINT8)), RawData: append([]byte(nil), v...)}
}

func int32Tensor(name string, dims []int64, v []int32) *onnxpb.TensorProto {
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(x))
	}
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(onnxpb.TensorProto_INT32)), RawData: raw}
}

func int64Tensor(name string, dims []int64, v []int64) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Int64Data: v}
}

// fresh returns an unused tensor name derived from base.
func (md *model) fresh(base string) string {
	name := base
	for i := 1; md.names[name]; i++ {
		name = fmt.Sprintf("%s_%d", base, i)
	}
	md.names[name] = true
	return name
}

// constFloat returns the float values of a weight that a node in g may read by name, or ok false
// when name is not a usable constant (an activation, an int tensor, shadowed, or external).
func (md *model) constFloat(name string) (*weight, []float32, bool) {
	w := md.weights[name]
	if w == nil || md.ambiguous[name] || w.t.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
		return nil, nil, false
	}
	v, err := floats(w.t)
	if err != nil {
		return nil, nil, false
	}
	return w, v, true
}

// removeIfUnused drops a weight (initializer or Constant node) that no node reads any more, so the
// float copy does not ride along in the int8 file.
func (md *model) removeIfUnused(name string) {
	w := md.weights[name]
	if w == nil || md.uses[name] > 0 || md.ambiguous[name] {
		return
	}
	g := w.owner.g
	if w.node != nil {
		g.Node = deleteNode(g.Node, w.node)
	} else {
		for i, t := range g.Initializer {
			if t == w.t {
				g.Initializer = append(g.Initializer[:i], g.Initializer[i+1:]...)
				break
			}
		}
		// IR < 4 lists initializers as inputs too; a stale input would make ORT expect a feed.
		for i, vi := range g.Input {
			if vi.GetName() == name {
				g.Input = append(g.Input[:i], g.Input[i+1:]...)
				break
			}
		}
	}
	delete(md.weights, name)
}

func deleteNode(nodes []*onnxpb.NodeProto, n *onnxpb.NodeProto) []*onnxpb.NodeProto {
	for i, x := range nodes {
		if x == n {
			return append(nodes[:i], nodes[i+1:]...)
		}
	}
	return nodes
}

// setInput rewires input i of n, keeping the use counts right.
func (md *model) setInput(n *onnxpb.NodeProto, i int, name string) {
	md.uses[n.Input[i]]--
	n.Input[i] = name
	md.uses[name]++
}

func attrInt(n *onnxpb.NodeProto, name string, def int64) int64 {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return a.GetI()
		}
	}
	return def
}

func attrFloat(n *onnxpb.NodeProto, name string, def float32) float32 {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return a.GetF()
		}
	}
	return def
}

func hasAttr(n *onnxpb.NodeProto, name string) bool {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return true
		}
	}
	return false
}

func intAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func node(op, name string, in, out []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String(name), Input: in, Output: out, Attribute: attrs}
}

// inputInput reports whether name is the main graph's input (a value fed by the caller).
func (g *graph) isInput(name string) bool {
	for _, vi := range g.g.GetInput() {
		if vi.GetName() == name {
			return true
		}
	}
	return false
}

func (g *graph) isOutput(name string) bool {
	for _, vi := range g.g.GetOutput() {
		if vi.GetName() == name {
			return true
		}
	}
	return false
}

// consumers lists the nodes of g that read name.
func (g *graph) consumers(name string) []*onnxpb.NodeProto {
	var out []*onnxpb.NodeProto
	for _, n := range g.g.GetNode() {
		for _, in := range n.GetInput() {
			if in == name {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

// readsImplicitly reports whether a subgraph of some node in g reads name from the outer scope.
func (g *graph) readsImplicitly(name string) bool {
	found := false
	for _, n := range g.g.GetNode() {
		for _, a := range n.GetAttribute() {
			subs := a.GetGraphs()
			if a.GetG() != nil {
				subs = append(subs, a.GetG())
			}
			for _, s := range subs {
				onnxpb.WalkGraphs(s, func(sg *onnxpb.GraphProto) {
					for _, sn := range sg.GetNode() {
						for _, in := range sn.GetInput() {
							if in == name {
								found = true
							}
						}
					}
				})
			}
		}
	}
	return found
}
