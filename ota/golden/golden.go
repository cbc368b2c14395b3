// Package golden holds a bundle's golden cases: inputs with the outputs the model gave at build
// time, which the agent replays as its smoke test before it switches to a new model. It owns the
// file format and the comparison with tolerances.
package golden

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// FileName is the golden file's name inside a bundle.
const FileName = "golden.json"

// Tensor is a tensor in JSON: values as numbers (booleans 0/1), row-major.
type Tensor struct {
	Name     string    `json:"name"`
	Datatype string    `json:"datatype"`
	Shape    []int64   `json:"shape"`
	Data     []float64 `json:"data"`
}

// Case is one input set with its expected outputs.
type Case struct {
	Inputs  []Tensor `json:"inputs"`
	Outputs []Tensor `json:"outputs"`
}

// Tolerance bounds |got-want| <= Abs + Rel*|want| element-wise.
type Tolerance struct {
	Abs float64 `json:"abs"`
	Rel float64 `json:"rel"`
}

// File is golden.json.
type File struct {
	Version   int       `json:"version"`
	Tolerance Tolerance `json:"tolerance"`
	Cases     []Case    `json:"cases"`
}

// DefaultTolerance absorbs differences between CPU kernels and builds of ONNX Runtime while still
// catching a wrong model (whose outputs differ by far more).
var DefaultTolerance = Tolerance{Abs: 1e-4, Rel: 1e-3}

// ErrMismatch is returned when a model's outputs differ from the golden ones.
var ErrMismatch = errors.New("outputs differ from the golden outputs")

// FromTensor converts a runtime tensor.
func FromTensor(t onnxrt.Tensor) (Tensor, error) {
	v, err := t.Float64s()
	if err != nil {
		return Tensor{}, err
	}
	for i, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return Tensor{}, fmt.Errorf("tensor %q element %d is %v: golden values must be finite", t.Name, i, x)
		}
	}
	return Tensor{Name: t.Name, Datatype: string(t.DType), Shape: t.Shape, Data: v}, nil
}

// ToTensor converts to a runtime tensor.
func (t Tensor) ToTensor() (onnxrt.Tensor, error) {
	return onnxrt.FromFloat64s(t.Name, onnxrt.DType(t.Datatype), t.Shape, t.Data)
}

// Record runs inputs through run and returns the golden file.
func Record(ctx context.Context, run func(context.Context, []onnxrt.Tensor) ([]onnxrt.Tensor, error), inputs [][]onnxrt.Tensor, tol Tolerance) (*File, error) {
	f := &File{Version: 1, Tolerance: tol}
	for i, in := range inputs {
		out, err := run(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("golden case %d: %w", i, err)
		}
		var c Case
		for _, t := range in {
			g, err := FromTensor(t)
			if err != nil {
				return nil, err
			}
			c.Inputs = append(c.Inputs, g)
		}
		for _, t := range out {
			g, err := FromTensor(t)
			if err != nil {
				return nil, fmt.Errorf("golden case %d: %w", i, err)
			}
			c.Outputs = append(c.Outputs, g)
		}
		f.Cases = append(f.Cases, c)
	}
	return f, nil
}

// Parse reads golden.json.
func Parse(b []byte) (*File, error) {
	var f File
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse %s: %w", FileName, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("parse %s: version %d not supported", FileName, f.Version)
	}
	return &f, nil
}

// SmokeTest replays every case through run and compares the outputs.
func (f *File) SmokeTest(ctx context.Context, run func(context.Context, []onnxrt.Tensor) ([]onnxrt.Tensor, error)) error {
	if len(f.Cases) == 0 {
		return fmt.Errorf("%w: the bundle has no golden cases", ErrMismatch)
	}
	for i, c := range f.Cases {
		var in []onnxrt.Tensor
		for _, t := range c.Inputs {
			rt, err := t.ToTensor()
			if err != nil {
				return fmt.Errorf("golden case %d: %w", i, err)
			}
			in = append(in, rt)
		}
		out, err := run(ctx, in)
		if err != nil {
			return fmt.Errorf("golden case %d: run: %w", i, err)
		}
		if err := compare(c.Outputs, out, f.Tolerance); err != nil {
			return fmt.Errorf("golden case %d: %w", i, err)
		}
	}
	return nil
}

func compare(want []Tensor, got []onnxrt.Tensor, tol Tolerance) error {
	byName := map[string]onnxrt.Tensor{}
	for _, t := range got {
		byName[t.Name] = t
	}
	for _, w := range want {
		g, ok := byName[w.Name]
		if !ok {
			return fmt.Errorf("%w: output %q missing", ErrMismatch, w.Name)
		}
		v, err := g.Float64s()
		if err != nil {
			return err
		}
		if len(v) != len(w.Data) {
			return fmt.Errorf("%w: output %q has %d elements, golden %d", ErrMismatch, w.Name, len(v), len(w.Data))
		}
		for i := range v {
			if d := math.Abs(v[i] - w.Data[i]); !(d <= tol.Abs+tol.Rel*math.Abs(w.Data[i])) {
				return fmt.Errorf("%w: output %q element %d is %g, golden %g (tolerance abs %g rel %g)", ErrMismatch, w.Name, i, v[i], w.Data[i], tol.Abs, tol.Rel)
			}
		}
	}
	return nil
}
