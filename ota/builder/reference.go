package builder

import (
	"context"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// buildReference computes the drift reference (telemetry/drift schema) from the samples' inputs
// and the model's outputs on them. It returns nil when the model has nothing to profile.
func buildReference(ctx context.Context, sess *onnxrt.Session, schema onnxrt.Schema, samples [][]onnxrt.Tensor, embedding string) ([]byte, error) {
	return nil, nil
}
