// Package onnxrt is the one place in edgefleet that talks to ONNX Runtime (through
// github.com/yalue/onnxruntime_go). The bundle builder uses it to read a model's schema and
// compute golden outputs; the agent uses it to serve predictions.
//
// It owns: loading the shared library once per process (Init), describing a model's inputs and
// outputs (Inspect), sessions that validate inputs before crossing into cgo and are safe for
// concurrent use (NewSession, Session.Run), execution-provider selection with a recorded
// fallback to CPU, profiling, and deterministic test inputs (GenerateInputs).
//
// It must not: import anything else from edgefleet but internal/onnxpb, know about bundles,
// MQTT or the fleet, or let onnxruntime_go types leak into its API. Tensors cross the API as
// plain Go slices (Tensor) so that callers, and their tests, never need cgo types.
package onnxrt
