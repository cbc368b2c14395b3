package onnxrt

import (
	"fmt"
	"slices"
	"strings"
)

// InputError says which input of a Run call is wrong and how. It is returned before anything
// reaches ONNX Runtime, so a caller can map it to a client error (HTTP 400) with confidence.
type InputError struct {
	Input  string // the input's name as the caller gave it, or as the model expects it when missing
	Reason string // what is wrong, including what the model expects
}

func (e *InputError) Error() string {
	return fmt.Sprintf("input %q: %s", e.Input, e.Reason)
}

// orderInputs checks inputs against the schema and returns them in the schema's order. The first
// problem found wins: unknown and duplicate names in the caller's order, then missing inputs in
// the model's order, then each input's type and shape.
func orderInputs(s Schema, inputs []Tensor) ([]Tensor, error) {
	// Models take a handful of inputs: linear scans beat a map, and a call that gives them in
	// the model's order (the usual one) needs no reordered copy.
	inOrder := len(inputs) == len(s.Inputs)
	for i, in := range inputs {
		if _, known := s.Input(in.Name); !known {
			return nil, &InputError{Input: in.Name, Reason: fmt.Sprintf("the model has no such input; it takes %s", describe(s.Inputs))}
		}
		for _, prev := range inputs[:i] {
			if prev.Name == in.Name {
				return nil, &InputError{Input: in.Name, Reason: "given more than once"}
			}
		}
		inOrder = inOrder && in.Name == s.Inputs[i].Name
	}
	ordered := inputs
	if !inOrder {
		ordered = make([]Tensor, len(s.Inputs))
		for i, ti := range s.Inputs {
			j := slices.IndexFunc(inputs, func(t Tensor) bool { return t.Name == ti.Name })
			if j < 0 {
				return nil, &InputError{Input: ti.Name, Reason: fmt.Sprintf("missing; the model expects %s", expect(ti))}
			}
			ordered[i] = inputs[j]
		}
	}
	for i, ti := range s.Inputs {
		if reason := checkAgainst(ti, ordered[i]); reason != "" {
			return nil, &InputError{Input: ti.Name, Reason: reason}
		}
	}
	return ordered, nil
}

// checkAgainst returns why t does not fit ti, or "".
func checkAgainst(ti TensorInfo, t Tensor) string {
	if t.DType != ti.DType {
		return fmt.Sprintf("datatype is %s, the model expects %s", orNone(string(t.DType)), expect(ti))
	}
	if ti.Shape != nil {
		if len(t.Shape) != len(ti.Shape) {
			return fmt.Sprintf("shape %s has rank %d, the model expects rank %d: %s",
				FormatShape(t.Shape), len(t.Shape), len(ti.Shape), expect(ti))
		}
		for i, want := range ti.Shape {
			if want >= 0 && t.Shape[i] != want {
				return fmt.Sprintf("dimension %d is %d, the model expects %d: %s", i, t.Shape[i], want, expect(ti))
			}
		}
	}
	return t.check()
}

func expect(ti TensorInfo) string {
	if ti.Shape == nil {
		return fmt.Sprintf("%s of any shape", ti.DType)
	}
	s := fmt.Sprintf("%s%s", ti.DType, FormatShape(ti.Shape))
	if ti.Dynamic() {
		s += " (-1: any size)"
	}
	return s
}

func describe(tis []TensorInfo) string {
	parts := make([]string, len(tis))
	for i, ti := range tis {
		parts[i] = ti.String()
	}
	return strings.Join(parts, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "empty"
	}
	return s
}
