package infer

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// BenchmarkInfer compares the bare binding (onnxrt.RawRunner) with the in-process call path
// (Server.Infer: policy, run slot, metrics, session), one intra-op thread, on hello_deepa, a model
// small enough that per-call overhead shows.
//
//	go test ./agent/infer -run '^$' -bench Infer -benchmem
func BenchmarkInfer(b *testing.B) {
	m := loadReal(b, "hello_deepa.onnx", "hello", "1.0.0", LoadOptions{})
	srv := NewServer("bench")
	srv.Swap("hello", m)
	defer m.Close()
	sets, err := onnxrt.GenerateInputs(m.Schema(), 1, 1, nil)
	if err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(fleettest.Models(b), "hello_deepa.onnx"))
	if err != nil {
		b.Fatal(err)
	}
	raw, err := onnxrt.NewRawRunner(data, sets[0], 1)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	b.Run("raw", func(b *testing.B) {
		for b.Loop() {
			if err := raw.Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Server.Infer", func(b *testing.B) {
		ctx := context.Background()
		for b.Loop() {
			if _, _, err := srv.Infer(ctx, "hello", sets[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
