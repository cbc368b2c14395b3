package builder

import (
	"context"
	"fmt"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/telemetry"
	"github.com/edgefleet/edgefleet/telemetry/drift"
)

// DefaultSpecs picks the drift features of a model from its schema, at most drift.MaxFeatures:
// image-like inputs give per-channel means and one spread (raw pixels are never features), tabular
// inputs give their first columns, classifier outputs give the class mix and the confidence, a
// scalar output gives its value, a named embedding gives its norm, any other output its mean.
func DefaultSpecs(s onnxrt.Schema, embedding string) []drift.FeatureSpec {
	var specs []drift.FeatureSpec
	add := func(f drift.FeatureSpec) {
		if len(specs) < drift.MaxFeatures {
			specs = append(specs, f)
		}
	}
	allAxes := func(rank int) []int {
		var a []int
		for i := 1; i < rank; i++ {
			a = append(a, i)
		}
		return a
	}
	for _, in := range s.Inputs {
		if in.DType != onnxrt.FP32 || in.Shape == nil {
			continue
		}
		rank := len(in.Shape)
		switch {
		case rank == 4: // N, C, H, W
			c := int(in.Shape[1])
			if c <= 0 || c > 4 {
				c = 1
			}
			for ch := 0; ch < c; ch++ {
				add(drift.FeatureSpec{Name: fmt.Sprintf("%s.mean.c%d", in.Name, ch), Source: drift.SourceReduction, Tensor: in.Name, Reduction: drift.ReduceMean, Axes: []int{2, 3}, Index: ch})
			}
			add(drift.FeatureSpec{Name: in.Name + ".std", Source: drift.SourceReduction, Tensor: in.Name, Reduction: drift.ReduceStd, Axes: allAxes(rank)})
		case rank == 2 && in.Shape[1] > 0: // N, features
			for i := 0; i < int(min(in.Shape[1], 8)); i++ {
				add(drift.FeatureSpec{Name: fmt.Sprintf("%s[%d]", in.Name, i), Source: drift.SourceInput, Tensor: in.Name, Index: i})
			}
		case rank >= 2:
			add(drift.FeatureSpec{Name: in.Name + ".mean", Source: drift.SourceReduction, Tensor: in.Name, Reduction: drift.ReduceMean, Axes: allAxes(rank)})
			add(drift.FeatureSpec{Name: in.Name + ".std", Source: drift.SourceReduction, Tensor: in.Name, Reduction: drift.ReduceStd, Axes: allAxes(rank)})
		}
	}
	for _, out := range s.Outputs {
		if out.DType != onnxrt.FP32 || out.Shape == nil {
			continue
		}
		rank := len(out.Shape)
		last := int64(-1)
		if rank > 0 {
			last = out.Shape[rank-1]
		}
		switch {
		case out.Name == embedding:
			add(drift.FeatureSpec{Name: out.Name + ".norm", Source: drift.SourceEmbedding, Tensor: out.Name, Kind: drift.KindEmbeddingNorm})
		case rank == 2 && last >= 2 && last <= 1000:
			add(drift.FeatureSpec{Name: out.Name + ".class", Source: drift.SourceOutput, Tensor: out.Name, Kind: drift.KindClassMix, Classes: int(last)})
			add(drift.FeatureSpec{Name: out.Name + ".confidence", Source: drift.SourceOutput, Tensor: out.Name, Kind: drift.KindConfidence})
		case rank <= 2 && (last == 1 || rank == 0):
			add(drift.FeatureSpec{Name: out.Name, Source: drift.SourceOutput, Tensor: out.Name, Kind: drift.KindValue})
		case rank >= 2:
			add(drift.FeatureSpec{Name: out.Name + ".mean", Source: drift.SourceReduction, Tensor: out.Name, Reduction: drift.ReduceMean, Axes: allAxes(rank)})
		}
	}
	return specs
}

// buildReference computes the drift reference from the samples' inputs and the model's outputs on
// them. It returns nil when the model has nothing to profile.
func buildReference(ctx context.Context, run func(context.Context, []onnxrt.Tensor) ([]onnxrt.Tensor, error), schema onnxrt.Schema, samples [][]onnxrt.Tensor, embedding string) ([]byte, error) {
	specs := DefaultSpecs(schema, embedding)
	if len(specs) == 0 {
		return nil, nil
	}
	rb, err := drift.NewReferenceBuilder(specs, drift.DefaultBins)
	if err != nil {
		return nil, err
	}
	for i, in := range samples {
		out, err := run(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("run reference sample %d: %w", i, err)
		}
		all := map[string]onnxrt.Tensor{}
		for _, t := range in {
			all[t.Name] = t
		}
		for _, t := range out {
			all[t.Name] = t
		}
		vals, err := telemetry.FeatureValues(specs, all)
		if err != nil {
			return nil, fmt.Errorf("reference sample %d: %w", i, err)
		}
		if err := rb.Add(vals); err != nil {
			return nil, err
		}
	}
	ref, err := rb.Build()
	if err != nil {
		return nil, err
	}
	return ref.Encode()
}
