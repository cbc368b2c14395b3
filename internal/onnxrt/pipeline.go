package onnxrt

import (
	"context"
	"fmt"
)

// Pipeline runs an optional pre-processing graph, the model and an optional post-processing graph
// as one: the pre graph's outputs feed the model's inputs of the same names, the model's outputs
// feed the post graph's inputs of the same names. A bundle ships them together so that training
// and serving transform inputs identically.
type Pipeline struct {
	Pre, Post *Session // either may be nil
}

// Schema is what callers see: the pre graph's inputs (or the model's) and the post graph's
// outputs (or the model's).
func (p Pipeline) Schema(model Schema) Schema {
	s := model
	if p.Pre != nil {
		s.Inputs = p.Pre.Schema().Inputs
	}
	if p.Post != nil {
		s.Outputs = p.Post.Schema().Outputs
	}
	return s
}

// Check verifies that the stages fit: every model input comes out of the pre graph, every post
// input out of the model. Run once at load so a mismatched bundle fails its install, not a request.
func (p Pipeline) Check(model Schema) error {
	if p.Pre != nil {
		if err := covers(p.Pre.Schema().Outputs, model.Inputs); err != nil {
			return fmt.Errorf("pre-processing graph does not produce the model's inputs: %w", err)
		}
	}
	if p.Post != nil {
		if err := covers(model.Outputs, p.Post.Schema().Inputs); err != nil {
			return fmt.Errorf("post-processing graph's inputs are not model outputs: %w", err)
		}
	}
	return nil
}

func covers(have, need []TensorInfo) error {
	names := map[string]bool{}
	for _, t := range have {
		names[t.Name] = true
	}
	for _, t := range need {
		if !names[t.Name] {
			return fmt.Errorf("%q missing", t.Name)
		}
	}
	return nil
}

// pick keeps the tensors a stage takes as input, in its schema's order.
func pick(ts []Tensor, want []TensorInfo) []Tensor {
	by := make(map[string]Tensor, len(ts))
	for _, t := range ts {
		by[t.Name] = t
	}
	out := make([]Tensor, 0, len(want))
	for _, w := range want {
		if t, ok := by[w.Name]; ok {
			out = append(out, t)
		}
	}
	return out
}

// Run runs the stages around model.
func (p Pipeline) Run(ctx context.Context, model *Session, in []Tensor) ([]Tensor, error) {
	if p.Pre != nil {
		pre, err := p.Pre.Run(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("pre-processing: %w", err)
		}
		in = pick(pre, model.Schema().Inputs)
	}
	out, err := model.Run(ctx, in)
	if err != nil || p.Post == nil {
		return out, err
	}
	post, err := p.Post.Run(ctx, pick(out, p.Post.Schema().Inputs))
	if err != nil {
		return nil, fmt.Errorf("post-processing: %w", err)
	}
	return post, nil
}

// Close releases the pre and post sessions.
func (p Pipeline) Close() {
	if p.Pre != nil {
		p.Pre.Close()
	}
	if p.Post != nil {
		p.Post.Close()
	}
}
