package quant

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// BenchmarkFP32vsINT8 times one inference of each real model in fp32 and in int8, single
// intra-op thread (an edge device shares its cores), ORT's default graph optimizations (all,
// which is what fuses Q/DQ into QLinearConv). Compare ns/op of the fp32 and int8 sub-benchmarks.
// fp32-rewritten is the float model after the quantizer's graph rewrites (see floatRewritten):
// the baseline stays the original model, this one shows how much of the gain is not int8's.
// For ocr_cls, int8-unpadded is the layout before depthwise padding and QLinearMul gates
// (NoPadDepthwise, NoCloseMul) and int8-float-depthwise keeps its unpadded depthwise
// convolutions float (FloatDepthwise), for comparison in the same run.
// QUANT_BENCH_THREADS sets the intra-op threads of every session (default 1).
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
			variants := []struct {
				name  string
				model []byte
			}{{"fp32", float}, {"int8", res.Model}}
			if c.file != "hello_deepa.onnx" {
				variants = append(variants, struct {
					name  string
					model []byte
				}{"fp32-rewritten", floatRewritten(b, float)})
			}
			if c.file == "ocr_cls.onnx" {
				o := c.opts(in)
				o.NoPadDepthwise, o.NoCloseMul = true, true
				old, err := Quantize(context.Background(), float, o)
				if err != nil {
					b.Fatal(err)
				}
				o.FloatDepthwise = true
				fdw, err := Quantize(context.Background(), float, o)
				if err != nil {
					b.Fatal(err)
				}
				variants = append(variants, struct {
					name  string
					model []byte
				}{"int8-unpadded", old.Model}, struct {
					name  string
					model []byte
				}{"int8-float-depthwise", fdw.Model})
			}
			for _, v := range variants {
				b.Run(v.name, func(b *testing.B) {
					s, err := onnxrt.NewSession(v.model, onnxrt.Options{IntraOpThreads: benchThreads()})
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

func benchThreads() int {
	if n, err := strconv.Atoi(os.Getenv("QUANT_BENCH_THREADS")); err == nil && n > 0 {
		return n
	}
	return 1
}
