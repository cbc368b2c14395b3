package onnxrt

import (
	"slices"
	"testing"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
	"google.golang.org/protobuf/proto"
)

type idInput struct {
	elem  onnxpb.TensorProto_DataType
	shape []int64
}

// identityModel builds a model that passes each input straight to an output named "<input>_out",
// to test every element type and rank without depending on a third-party file. A dim of -1 in
// a shape becomes a symbolic dimension named "n"; a nil shape leaves the rank unknown.
func identityModel(t testing.TB, inputs map[string]idInput) []byte {
	t.Helper()
	g := &onnxpb.GraphProto{Name: proto.String("identity")}
	names := make([]string, 0, len(inputs))
	for name := range inputs {
		names = append(names, name)
	}
	slices.Sort(names) // so the model's input order is stable
	for _, name := range names {
		in := inputs[name]
		tt := &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(in.elem))}
		if in.shape != nil {
			tt.Shape = &onnxpb.TensorShapeProto{}
			for _, d := range in.shape {
				dim := &onnxpb.TensorShapeProto_Dimension{}
				if d < 0 {
					dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "n"}
				} else {
					dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}
				}
				tt.Shape.Dim = append(tt.Shape.Dim, dim)
			}
		}
		typ := &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: tt}}
		g.Input = append(g.Input, &onnxpb.ValueInfoProto{Name: proto.String(name), Type: typ})
		g.Output = append(g.Output, &onnxpb.ValueInfoProto{Name: proto.String(name + "_out"), Type: typ})
		g.Node = append(g.Node, &onnxpb.NodeProto{
			OpType: proto.String("Identity"),
			Input:  []string{name},
			Output: []string{name + "_out"},
		})
	}
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(14)}},
		Graph:       g,
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
