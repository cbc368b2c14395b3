// Package oip is the JSON shape of the Open Inference Protocol (v2, as KServe, Triton and MLServer
// speak it): request and response bodies and their conversion to and from runtime tensors. The
// agent's inference API and the bundle builder's reference samples both use it.
package oip

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// Tensor is a request input or response output.
type Tensor struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

// RequestOutput names an output the caller wants.
type RequestOutput struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

// Request is an inference request body.
type Request struct {
	ID         string          `json:"id,omitempty"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Inputs     []Tensor        `json:"inputs"`
	Outputs    []RequestOutput `json:"outputs,omitempty"`
}

// Response is an inference response body.
type Response struct {
	ModelName    string         `json:"model_name"`
	ModelVersion string         `json:"model_version,omitempty"`
	ID           string         `json:"id,omitempty"`
	Parameters   map[string]any `json:"parameters,omitempty"`
	Outputs      []Tensor       `json:"outputs"`
}

// ErrBadRequest wraps every problem with a request body.
var ErrBadRequest = errors.New("bad inference request")

// ParseRequest decodes a JSON request body.
func ParseRequest(b []byte) (*Request, error) {
	var r Request
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: body is not a JSON inference request: %v", ErrBadRequest, err)
	}
	if len(r.Inputs) == 0 {
		return nil, fmt.Errorf("%w: no inputs", ErrBadRequest)
	}
	return &r, nil
}

// Decode converts a JSON tensor (flat or nested data, numbers or for BOOL true/false) into a runtime
// tensor of its declared datatype. Integers are parsed exactly, not through float64.
func Decode(t Tensor) (onnxrt.Tensor, error) {
	dt := onnxrt.DType(t.Datatype)
	n, err := onnxrt.NumElements(t.Shape)
	if err != nil {
		return onnxrt.Tensor{}, &onnxrt.InputError{Input: t.Name, Reason: err.Error()}
	}
	var flat []json.Number
	if err := flatten(t.Data, &flat, 0); err != nil {
		return onnxrt.Tensor{}, &onnxrt.InputError{Input: t.Name, Reason: err.Error()}
	}
	if int64(len(flat)) != n {
		return onnxrt.Tensor{}, &onnxrt.InputError{Input: t.Name, Reason: fmt.Sprintf("shape %s needs %d elements, data has %d", onnxrt.FormatShape(t.Shape), n, len(flat))}
	}
	switch dt {
	case onnxrt.INT64:
		d := make([]int64, len(flat))
		for i, s := range flat {
			v, err := strconv.ParseInt(string(s), 10, 64)
			if err != nil {
				return onnxrt.Tensor{}, &onnxrt.InputError{Input: t.Name, Reason: fmt.Sprintf("element %d (%s) is not an INT64", i, s)}
			}
			d[i] = v
		}
		return onnxrt.Tensor{Name: t.Name, DType: dt, Shape: t.Shape, Data: d}, nil
	case onnxrt.UINT64:
		d := make([]uint64, len(flat))
		for i, s := range flat {
			v, err := strconv.ParseUint(string(s), 10, 64)
			if err != nil {
				return onnxrt.Tensor{}, &onnxrt.InputError{Input: t.Name, Reason: fmt.Sprintf("element %d (%s) is not a UINT64", i, s)}
			}
			d[i] = v
		}
		return onnxrt.Tensor{Name: t.Name, DType: dt, Shape: t.Shape, Data: d}, nil
	}
	vals := make([]float64, len(flat))
	for i, s := range flat {
		switch s {
		case "true":
			vals[i] = 1
		case "false":
			vals[i] = 0
		case "NaN", "nan":
			vals[i] = math.NaN()
		default:
			v, err := strconv.ParseFloat(string(s), 64)
			if err != nil {
				return onnxrt.Tensor{}, &onnxrt.InputError{Input: t.Name, Reason: fmt.Sprintf("element %d (%s) is not a number", i, s)}
			}
			vals[i] = v
		}
	}
	return onnxrt.FromFloat64s(t.Name, dt, t.Shape, vals)
}

// flatten walks nested JSON arrays into a flat list of scalars. Depth is bounded so a crafted body
// cannot exhaust the stack.
func flatten(raw json.RawMessage, out *[]json.Number, depth int) error {
	if depth > 32 {
		return errors.New("data nested deeper than 32 levels")
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return errors.New("no data")
	}
	switch raw[0] {
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return fmt.Errorf("data: %v", err)
		}
		for _, it := range items {
			if err := flatten(it, out, depth+1); err != nil {
				return err
			}
		}
		return nil
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return fmt.Errorf("data: %v", err)
		}
		*out = append(*out, json.Number(strconv.FormatBool(b)))
		return nil
	case '"':
		var s string
		json.Unmarshal(raw, &s)
		if s == "NaN" || s == "nan" {
			*out = append(*out, json.Number("NaN"))
			return nil
		}
		return fmt.Errorf("data element %q is a string; BYTES inputs are not supported by this model", s)
	}
	*out = append(*out, json.Number(raw))
	return nil
}

// Encode converts a runtime tensor to a JSON tensor with flat data.
func Encode(t onnxrt.Tensor) (Tensor, error) {
	var data any
	switch d := t.Data.(type) {
	case []float32:
		data = d
		for _, v := range d {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				data = finite32(d)
				break
			}
		}
	case []float64:
		data = d
		for _, v := range d {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				data = finite64(d)
				break
			}
		}
	case []uint16:
		if t.DType == onnxrt.FP16 {
			v, _ := t.Float64s()
			data = finite64(v)
		} else {
			data = d
		}
	case []uint8:
		// encoding/json would write []byte as base64; OIP wants numbers.
		v := make([]int, len(d))
		for i, x := range d {
			v[i] = int(x)
		}
		data = v
	default:
		data = d
	}
	b, err := json.Marshal(data)
	if err != nil {
		return Tensor{}, fmt.Errorf("encode output %q: %w", t.Name, err)
	}
	return Tensor{Name: t.Name, Shape: t.Shape, Datatype: string(t.DType), Data: b}, nil
}

// JSON has no NaN or Inf, so non-finite outputs become null and the caller sees it plainly.
func finite32(d []float32) []any {
	out := make([]any, len(d))
	for i, v := range d {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			out[i] = nil
		} else {
			out[i] = v
		}
	}
	return out
}

func finite64(d []float64) []any {
	out := make([]any, len(d))
	for i, v := range d {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			out[i] = nil
		} else {
			out[i] = v
		}
	}
	return out
}
