package onnxpb

// The schema is copied verbatim from Debian's libonnx-dev (ONNX 1.12) so that regenerating does not
// depend on which version of that package a machine happens to have. See doc.go for versions.
//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go_opt=Monnx.proto=github.com/edgefleet/edgefleet/internal/onnxpb onnx.proto
