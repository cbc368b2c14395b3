package quant

import (
	"context"
	"testing"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// BenchmarkFP32vsINT8 times one inference of each real model in fp32 and in int8, single
// intra-op thread (an edge device shares its cores), ORT's default graph optimizations (all,
// which is what fuses Q/DQ into QLinearConv). Compare ns/op of the fp32 and int8 sub-benchmarks.
func BenchmarkFP32vsINT8(b *testing.B) {
	type bench struct {
		file    string
		opts    func(input string) Options
		samples func(input string) [][]onnxrt.Tensor
	}
	for _, c := range []bench{
		{"ocr_cls.onnx",
			func(in string) Options { return Options{Samples: clsSamples(in, clsCalibSamples, 1)} },
			func(in string) [][]onnxrt.Tensor { return clsSamples(in, 1, 2) }},
		{"ocr_det.onnx",
			func(in string) Options {
				return Options{Calibration: Percentile, Samples: detSamples(in, detCalibSamples, detSize, 1)}
			},
			func(in string) [][]onnxrt.Tensor { return detSamples(in, 1, detSize, 2) }},
		{"hello_deepa.onnx",
			func(string) Options { return Options{Mode: Dynamic} },
			func(in string) [][]onnxrt.Tensor { return featureSamples(in, 1, 2) }},
	} {
		b.Run(c.file, func(b *testing.B) {
			float := realModel(b, c.file)
			schema, err := onnxrt.Inspect(float)
			if err != nil {
				b.Fatal(err)
			}
			in := schema.Inputs[0].Name
			res, err := Quantize(context.Background(), float, c.opts(in))
			if err != nil {
				b.Fatal(err)
			}
			sample := c.samples(in)[0]
			for _, v := range []struct {
				name  string
				model []byte
			}{{"fp32", float}, {"int8", res.Model}} {
				b.Run(v.name, func(b *testing.B) {
					s, err := onnxrt.NewSession(v.model, onnxrt.Options{IntraOpThreads: 1})
					if err != nil {
						b.Fatal(err)
					}
					defer s.Close()
					ctx := context.Background()
					if _, err := s.Run(ctx, sample); err != nil {
						b.Fatal(err)
					}
					b.ResetTimer()
					for b.Loop() {
						if _, err := s.Run(ctx, sample); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}
