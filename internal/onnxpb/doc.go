// Package onnxpb holds Go types for the ONNX protobuf schema (ModelProto, GraphProto, NodeProto,
// TensorProto, ...) and a few pure helpers over them: parsing a model with a size limit, reading
// the opset a model imports, and listing a graph's real inputs and tensor shapes.
//
// It owns the wire format only. It must not import ONNX Runtime (that is internal/onnxrt) and
// must not know about bundles, quantization or the fleet; those packages build on these types.
//
// onnx.proto is an unmodified copy of /usr/include/onnx/onnx.proto from Debian's libonnx-dev
// 1.12.0-2+b4 (ONNX 1.12, IR version 8; sha256
// a96f50c0fe1ff9180b6025843d4f7efcf53b024c83db55a36cd24a1e44345182). onnx.pb.go was generated
// from it with protoc 3.21.12 (Debian protobuf-compiler) and protoc-gen-go v1.36.12
// (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12), by running, in this folder:
//
//	protoc --proto_path=. --go_out=. --go_opt=paths=source_relative \
//	    --go_opt=Monnx.proto=github.com/edgefleet/edgefleet/internal/onnxpb onnx.proto
//
// which is what `go generate ./internal/onnxpb` runs (see gen.go). The M option names the Go
// package, so the proto file stays byte-identical to upstream.
//
// Models written by newer ONNX versions (IR 9/10, float8 or int4 types) still parse: fields this
// schema does not know are kept as unknown fields and written back unchanged by proto.Marshal,
// so a rewrite (e.g. quantization) does not silently drop them.
package onnxpb
