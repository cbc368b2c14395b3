package onnxrt

import (
	"fmt"
	"strings"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
	ort "github.com/yalue/onnxruntime_go"
)

// TensorInfo describes one model input or output as ONNX Runtime sees it.
type TensorInfo struct {
	Name string `json:"name"`
	// DType is "" when the value is not a tensor (see Kind).
	DType DType `json:"datatype"`
	// Shape has -1 for each dimension whose size is not fixed; nil when the rank itself is not
	// known (any shape is accepted), empty for a scalar.
	Shape []int64 `json:"shape"`
	// DimNames gives, per dimension, the symbolic name the model file uses ("batch",
	// "p2o.DynamicDimension.0"), or "" for none. Nil when no dimension is named.
	DimNames []string `json:"dim_names,omitempty"`
	// Kind is "tensor", or what ORT reports instead ("sequence", "map", "optional", ...).
	Kind string `json:"kind"`
}

func (ti TensorInfo) String() string {
	if ti.Kind != "tensor" {
		return fmt.Sprintf("%s %s", ti.Name, ti.Kind)
	}
	if ti.Shape == nil {
		return fmt.Sprintf("%s %s[?]", ti.Name, ti.DType)
	}
	return fmt.Sprintf("%s %s%s", ti.Name, ti.DType, FormatShape(ti.Shape))
}

// Dynamic reports whether any dimension (or the rank) is not fixed.
func (ti TensorInfo) Dynamic() bool {
	if ti.Shape == nil {
		return true
	}
	for _, d := range ti.Shape {
		if d < 0 {
			return true
		}
	}
	return false
}

// Schema is what a model takes and returns, plus the format versions a runtime needs to load it.
type Schema struct {
	Inputs  []TensorInfo `json:"inputs"`
	Outputs []TensorInfo `json:"outputs"`
	// IRVersion is the ONNX IR version of the file.
	IRVersion int64 `json:"ir_version"`
	// Opset is the version of the standard operator set ("" domain) the model imports.
	Opset int64 `json:"opset"`
	// Opsets lists every imported operator-set domain and version, e.g. "com.microsoft": 1.
	Opsets map[string]int64 `json:"opsets,omitempty"`
}

// Input returns the input with the given name.
func (s Schema) Input(name string) (TensorInfo, bool) {
	for _, ti := range s.Inputs {
		if ti.Name == name {
			return ti, true
		}
	}
	return TensorInfo{}, false
}

// Runnable returns nil if a Session can feed every input and return every output: all must be
// tensors of a supported DType.
func (s Schema) Runnable() error {
	var bad []string
	for _, group := range []struct {
		what string
		tis  []TensorInfo
	}{{"input", s.Inputs}, {"output", s.Outputs}} {
		for _, ti := range group.tis {
			if ti.Kind != "tensor" || !ti.DType.Supported() {
				bad = append(bad, fmt.Sprintf("%s %s", group.what, ti))
			}
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("onnxrt: model has values a session cannot exchange: %s", strings.Join(bad, ", "))
	}
	return nil
}

// Inspect reads a model's inputs and outputs as ONNX Runtime resolves them (it builds a
// throwaway CPU session, so this costs about as much as loading the model) and its IR version
// and opsets from the file. Init must have succeeded.
func Inspect(model []byte) (Schema, error) {
	if !Initialized() {
		return Schema{}, ErrNotInitialized
	}
	m, err := onnxpb.ReadModel(model)
	if err != nil {
		return Schema{}, fmt.Errorf("inspect model: %w", err)
	}
	if ext := onnxpb.ExternalTensors(m); len(ext) > 0 {
		return Schema{}, fmt.Errorf("inspect model: %d tensors (first %q) keep their data in external files, which a model loaded from bytes cannot reach", len(ext), ext[0])
	}
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		return Schema{}, fmt.Errorf("inspect model: onnxruntime: %w", err)
	}
	declared := make(map[string]*onnxpb.ValueInfoProto)
	for _, vi := range m.GetGraph().GetInput() {
		declared[vi.GetName()] = vi
	}
	for _, vi := range m.GetGraph().GetOutput() {
		declared[vi.GetName()] = vi
	}
	s := Schema{
		IRVersion: m.GetIrVersion(),
		Opset:     onnxpb.Opset(m),
		Opsets:    make(map[string]int64),
	}
	for _, o := range m.GetOpsetImport() {
		s.Opsets[o.GetDomain()] = o.GetVersion()
	}
	for _, io := range ins {
		s.Inputs = append(s.Inputs, tensorInfo(io, declared[io.Name]))
	}
	for _, io := range outs {
		s.Outputs = append(s.Outputs, tensorInfo(io, declared[io.Name]))
	}
	return s, nil
}

// tensorInfo merges ORT's view (authoritative for types and shapes: it may know more than the
// file declares after shape inference) with the file's symbolic dimension names, which the
// binding does not expose.
func tensorInfo(io ort.InputOutputInfo, vi *onnxpb.ValueInfoProto) TensorInfo {
	ti := TensorInfo{Name: io.Name, Kind: kindName(io.OrtValueType)}
	if io.OrtValueType != ort.ONNXTypeTensor {
		return ti
	}
	ti.DType = dtypeFromORT(io.DataType)
	ti.Shape = make([]int64, len(io.Dimensions))
	for i, d := range io.Dimensions {
		ti.Shape[i] = d
		if d <= 0 {
			ti.Shape[i] = -1
		}
	}
	dims, params, known := onnxpb.TensorShape(vi.GetType())
	if len(ti.Shape) == 0 && !known && vi != nil {
		// ORT reports zero dimensions both for a scalar and for "rank unknown"; only the file
		// tells them apart.
		ti.Shape = nil
	}
	if known && len(dims) == len(ti.Shape) {
		for i, p := range params {
			if p != "" && ti.Shape[i] < 0 {
				if ti.DimNames == nil {
					ti.DimNames = make([]string, len(ti.Shape))
				}
				ti.DimNames[i] = p
			}
		}
	}
	return ti
}

func kindName(t ort.ONNXType) string {
	switch t {
	case ort.ONNXTypeTensor:
		return "tensor"
	case ort.ONNXTypeSequence:
		return "sequence"
	case ort.ONNXTypeMap:
		return "map"
	case ort.ONNXTypeOpaque:
		return "opaque"
	case ort.ONNXTypeSparseTensor:
		return "sparse_tensor"
	case ort.ONNXTypeOptional:
		return "optional"
	}
	return "unknown"
}
