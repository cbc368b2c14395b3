package drift

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"

	"github.com/edgefleet/edgefleet/telemetry/hist"
)

// SchemaVersion is the reference.json schema this package writes and reads.
const SchemaVersion = 1

// MaxFeatures is K: the most features a reference may hold. It bounds what a device computes
// per inference and sends per window (raw pixels are never features; an image gets per-channel
// reductions).
const MaxFeatures = 16

// Source says where a feature's values come from.
type Source string

const (
	SourceInput     Source = "input"     // one element of an input tensor per sample
	SourceReduction Source = "reduction" // a reduction (mean, std, min, max) of an input tensor over axes
	SourceOutput    Source = "output"    // an output tensor, read as Kind says
	SourceEmbedding Source = "embedding" // an embedding output, summarised by its L2 norm
)

// Kind says how an output (or embedding) becomes one number per sample.
type Kind string

const (
	KindValue         Kind = "value"          // one element of the output (scalar, regression)
	KindClassMix      Kind = "class_mix"      // argmax class over the last axis: categorical
	KindConfidence    Kind = "confidence"     // max over the last axis (a probability output)
	KindEmbeddingNorm Kind = "embedding_norm" // L2 norm of the per-sample vector
)

// Reduction is how a SourceReduction feature reduces its input.
type Reduction string

const (
	ReduceMean Reduction = "mean"
	ReduceStd  Reduction = "std" // population standard deviation
	ReduceMin  Reduction = "min"
	ReduceMax  Reduction = "max"
)

// Errors a caller can decide on.
var (
	ErrInvalidReference = errors.New("drift: invalid reference")
	ErrSchemaVersion    = errors.New("drift: unsupported reference schema version")
)

// FeatureSpec names a feature and how to compute it from one inference; it is the part of a
// feature that exists before any data has been seen.
type FeatureSpec struct {
	Name   string `json:"name"`
	Source Source `json:"source"`
	// Tensor is the input or output name the feature reads.
	Tensor string `json:"tensor"`
	// Reduction and Axes (axes of the full tensor, batch axis 0 excluded) for SourceReduction.
	Reduction Reduction `json:"reduction,omitempty"`
	Axes      []int     `json:"axes,omitempty"`
	// Index selects one element per sample, as a flat row-major index into the sample's tensor
	// (batch axis dropped) after any reduction: a column for tabular input, a channel for a
	// per-channel reduction of an image.
	Index int `json:"index,omitempty"`
	// Kind for SourceOutput and SourceEmbedding.
	Kind Kind `json:"kind,omitempty"`
	// Classes is the number of classes of a class_mix feature.
	Classes int `json:"classes,omitempty"`
}

// Quantile is one reference quantile.
type Quantile struct {
	Q     float64 `json:"q"`
	Value float64 `json:"value"`
}

// Feature is one feature of a reference: its spec and the distribution seen on the reference
// samples.
type Feature struct {
	FeatureSpec
	// Edges are the interior cut points, strictly ascending and finite: len(Edges)+1 bins,
	// (-Inf, e1), [e1, e2), ..., [em, +Inf). The open ends mean any value has a bin.
	Edges     []float64  `json:"edges"`
	RefCounts []uint64   `json:"ref_counts"`
	Quantiles []Quantile `json:"quantiles,omitempty"`
	// Count is the number of finite reference values (the sum of RefCounts); Missing the
	// non-finite ones that were left out.
	Count    uint64  `json:"count"`
	Missing  uint64  `json:"missing,omitempty"`
	Mean     float64 `json:"mean"`
	Variance float64 `json:"variance"` // population variance
}

// Reference is the content of a bundle's reference.json.
type Reference struct {
	SchemaVersion int       `json:"schema_version"`
	Features      []Feature `json:"features"`
}

// ParseReference decodes and validates reference.json. Unknown fields are ignored so optional
// fields can be added within a schema version; anything that changes meaning bumps the version,
// which older readers refuse with ErrSchemaVersion.
func ParseReference(data []byte) (*Reference, error) {
	var probe struct {
		SchemaVersion *int `json:"schema_version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("decode reference: %w", err)
	}
	if probe.SchemaVersion == nil {
		return nil, fmt.Errorf("reference has no schema_version: %w", ErrInvalidReference)
	}
	if *probe.SchemaVersion != SchemaVersion {
		return nil, fmt.Errorf("reference schema_version %d, this build reads %d: %w", *probe.SchemaVersion, SchemaVersion, ErrSchemaVersion)
	}
	var r Reference
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode reference: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Encode validates r and returns its indented JSON, as stored in a bundle.
func (r *Reference) Encode() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return nil, fmt.Errorf("encode reference: %w", err)
	}
	return buf.Bytes(), nil
}

// Validate checks everything a device relies on before it bins values on these edges.
func (r *Reference) Validate() error {
	if r == nil {
		return fmt.Errorf("nil reference: %w", ErrInvalidReference)
	}
	if r.SchemaVersion != SchemaVersion {
		return fmt.Errorf("schema_version %d, want %d: %w", r.SchemaVersion, SchemaVersion, ErrSchemaVersion)
	}
	if len(r.Features) == 0 {
		return fmt.Errorf("no features: %w", ErrInvalidReference)
	}
	if len(r.Features) > MaxFeatures {
		return fmt.Errorf("%d features, at most %d: %w", len(r.Features), MaxFeatures, ErrInvalidReference)
	}
	seen := make(map[string]bool, len(r.Features))
	for i := range r.Features {
		f := &r.Features[i]
		if seen[f.Name] {
			return fmt.Errorf("feature %q appears twice: %w", f.Name, ErrInvalidReference)
		}
		seen[f.Name] = true
		if err := f.validate(); err != nil {
			return fmt.Errorf("feature %d %q: %w", i, f.Name, err)
		}
	}
	return nil
}

func (s *FeatureSpec) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, ErrInvalidReference)...)
	}
	if s.Name == "" {
		return bad("empty name")
	}
	if s.Tensor == "" {
		return bad("no tensor name")
	}
	if s.Index < 0 {
		return bad("negative index %d", s.Index)
	}
	switch s.Source {
	case SourceInput:
		if s.Reduction != "" || s.Kind != "" {
			return bad("input feature takes neither reduction nor kind")
		}
	case SourceReduction:
		switch s.Reduction {
		case ReduceMean, ReduceStd, ReduceMin, ReduceMax:
		default:
			return bad("unknown reduction %q", s.Reduction)
		}
		if len(s.Axes) == 0 {
			return bad("reduction without axes")
		}
		for _, a := range s.Axes {
			if a < 1 {
				return bad("reduction axis %d: axis 0 is the batch and is never reduced", a)
			}
		}
		if s.Kind != "" {
			return bad("reduction feature takes no kind")
		}
	case SourceOutput:
		switch s.Kind {
		case KindValue, KindClassMix, KindConfidence, KindEmbeddingNorm:
		default:
			return bad("unknown output kind %q", s.Kind)
		}
	case SourceEmbedding:
		if s.Kind != KindEmbeddingNorm {
			return bad("embedding feature kind %q, want %q", s.Kind, KindEmbeddingNorm)
		}
	default:
		return bad("unknown source %q", s.Source)
	}
	if s.Source != SourceReduction && len(s.Axes) > 0 {
		return bad("axes apply only to reductions")
	}
	if (s.Kind == KindClassMix) != (s.Classes > 0) {
		return bad("classes %d is for class_mix features only, and required there", s.Classes)
	}
	return nil
}

func (f *Feature) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, ErrInvalidReference)...)
	}
	if err := f.FeatureSpec.validate(); err != nil {
		return err
	}
	if err := hist.CheckEdges(f.Edges); err != nil {
		return bad("edges: %v", err)
	}
	if len(f.RefCounts) != len(f.Edges)+1 {
		return bad("%d ref_counts for %d edges, want %d", len(f.RefCounts), len(f.Edges), len(f.Edges)+1)
	}
	if f.Kind == KindClassMix && !hist.SameEdges(f.Edges, classEdges(f.Classes)) {
		return bad("class_mix edges must be k+0.5 for k in 0..classes-2")
	}
	var total uint64
	for _, c := range f.RefCounts {
		total += c
	}
	if total != f.Count {
		return bad("ref_counts sum to %d, count is %d", total, f.Count)
	}
	if f.Count == 0 {
		return bad("no reference values")
	}
	if !finite(f.Mean) || !finite(f.Variance) || f.Variance < 0 {
		return bad("mean %v variance %v", f.Mean, f.Variance)
	}
	for i, q := range f.Quantiles {
		if !finite(q.Value) || !(q.Q > 0 && q.Q < 1) {
			return bad("quantile %d (%v at %v) not finite or level outside (0,1)", i, q.Value, q.Q)
		}
		if i > 0 && (q.Q <= f.Quantiles[i-1].Q || q.Value < f.Quantiles[i-1].Value) {
			return bad("quantile %d not ascending", i)
		}
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// classEdges puts class k in bin k: edges at 0.5, 1.5, ..., classes-1.5.
func classEdges(classes int) []float64 {
	e := make([]float64, max(classes-1, 0))
	for k := range e {
		e[k] = float64(k) + 0.5
	}
	return e
}

// Fingerprint identifies what summaries against r can be merged and compared: feature names and
// edges, not reference counts or statistics. Summaries carry it so a control plane never adds
// up histograms binned on different edges.
func (r *Reference) Fingerprint() string {
	h := fnv.New64a()
	var b [8]byte
	for _, f := range r.Features {
		h.Write([]byte(f.Name))
		h.Write([]byte{0})
		for _, e := range f.Edges {
			binary.LittleEndian.PutUint64(b[:], math.Float64bits(e))
			h.Write(b[:])
		}
		h.Write([]byte{1})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Feature returns the feature named name and its position.
func (r *Reference) Feature(name string) (*Feature, int, bool) {
	for i := range r.Features {
		if r.Features[i].Name == name {
			return &r.Features[i], i, true
		}
	}
	return nil, -1, false
}
