package onnxrt

import (
	"context"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
)

// BenchmarkRun compares a bare onnxruntime_go DynamicAdvancedSession (input tensor made once,
// output allocated by ORT and destroyed per call: the least a caller of the binding does) with
// Session.Run (validation, input copied into a reused ORT value or wrapped when large, output
// pre-allocated where its shape is known and copied out for the caller). Both use one intra-op
// thread so the figures measure per-call cost, not thread-pool scheduling.
//
//	go test ./internal/onnxrt/ -run '^$' -bench BenchmarkRun -benchmem
func BenchmarkRun(b *testing.B) {
	for _, bm := range []struct {
		file  string
		shape map[string][]int64
	}{
		{"hello_deepa.onnx", nil},
		{"ocr_cls.onnx", map[string][]int64{"x": {1, 3, 48, 192}}},
	} {
		data := model(b, bm.file)
		opts := Options{IntraOpThreads: 1}
		s, err := NewSession(data, opts)
		if err != nil {
			b.Fatal(err)
		}
		inputs, err := GenerateInputs(s.Schema(), 1, 1, bm.shape)
		if err != nil {
			b.Fatal(err)
		}
		in := inputs[0][0]

		b.Run(bm.file+"/raw", func(b *testing.B) {
			so, err := ort.NewSessionOptions()
			if err != nil {
				b.Fatal(err)
			}
			defer so.Destroy()
			if err := so.SetIntraOpNumThreads(1); err != nil {
				b.Fatal(err)
			}
			raw, err := ort.NewDynamicAdvancedSessionWithONNXData(data, []string{in.Name},
				[]string{s.Schema().Outputs[0].Name}, so)
			if err != nil {
				b.Fatal(err)
			}
			defer raw.Destroy()
			x, err := ort.NewTensor(ort.Shape(in.Shape), in.Data.([]float32))
			if err != nil {
				b.Fatal(err)
			}
			defer x.Destroy()
			for b.Loop() {
				out := []ort.Value{nil}
				if err := raw.Run([]ort.Value{x}, out); err != nil {
					b.Fatal(err)
				}
				_ = out[0].(*ort.Tensor[float32]).GetData()[0]
				out[0].Destroy()
			}
		})
		b.Run(bm.file+"/onnxrt", func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				out, err := s.Run(ctx, inputs[0])
				if err != nil {
					b.Fatal(err)
				}
				_ = out[0].Data.([]float32)[0]
			}
		})
		b.Run(bm.file+"/onnxrt-cancellable", func(b *testing.B) {
			// A request context with a Done channel adds ORT run options and a context.AfterFunc.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for b.Loop() {
				if _, err := s.Run(ctx, inputs[0]); err != nil {
					b.Fatal(err)
				}
			}
		})
		s.Close()
	}
}
