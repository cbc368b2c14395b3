package onnxrt

import (
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
)

// RawRunner is the least a caller of onnxruntime_go does per call, for benchmarks that compare
// edgefleet's serving path with the bare binding: one DynamicAdvancedSession, the input value
// made once, an output allocated by ORT and destroyed per call. It is not used for serving.
type RawRunner struct {
	sess *ort.DynamicAdvancedSession
	in   []ort.Value
	nout int
}

// NewRawRunner loads model with intraOp threads (0 = ORT's default) and prepares inputs, which
// must be FP32 or INT64 tensors in the model's input order.
func NewRawRunner(model []byte, inputs []Tensor, intraOp int) (*RawRunner, error) {
	schema, err := Inspect(model)
	if err != nil {
		return nil, err
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	if err := so.SetIntraOpNumThreads(intraOp); err != nil {
		return nil, err
	}
	var inNames, outNames []string
	for _, ti := range schema.Inputs {
		inNames = append(inNames, ti.Name)
	}
	for _, ti := range schema.Outputs {
		outNames = append(outNames, ti.Name)
	}
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(model, inNames, outNames, so)
	if err != nil {
		return nil, fmt.Errorf("raw session: %w", err)
	}
	r := &RawRunner{sess: s, nout: len(outNames)}
	for _, t := range inputs {
		v, err := toValue(t)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.in = append(r.in, v)
	}
	return r, nil
}

// Run runs once and releases the outputs.
func (r *RawRunner) Run() error {
	out := make([]ort.Value, r.nout)
	err := r.sess.Run(r.in, out)
	destroyAll(out)
	return err
}

// Close releases the session and inputs.
func (r *RawRunner) Close() {
	destroyAll(r.in)
	r.sess.Destroy()
}
