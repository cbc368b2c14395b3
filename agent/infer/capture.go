package infer

import (
	"sync/atomic"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// CaptureFunc sees every successful call: the model version, the request id (empty for
// in-process calls without one), inputs and outputs. It runs on the request's goroutine before
// the caller may reuse its input buffers, so it must copy what it keeps and return quickly.
type CaptureFunc func(m *Model, id string, in, out []onnxrt.Tensor)

var noCapture CaptureFunc = func(*Model, string, []onnxrt.Tensor, []onnxrt.Tensor) {}

// captureHook is the Server's capture hook: one atomic load per call when none is set.
type captureHook struct{ fn atomic.Pointer[CaptureFunc] }

// SetCapture installs the sample-capture hook (nil removes it).
func (s *Server) SetCapture(fn CaptureFunc) {
	if fn == nil {
		fn = noCapture
	}
	s.capture.fn.Store(&fn)
}

func (s *Server) captureCall(m *Model, id string, in, out []onnxrt.Tensor) {
	if p := s.capture.fn.Load(); p != nil {
		(*p)(m, id, in, out)
	}
}
