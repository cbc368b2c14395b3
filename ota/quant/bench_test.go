package quant

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

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

// BenchmarkResultsTable prints the results table of RESULTS.md for every real model, measured in
// one run: what the bundle builder would ship (QuantizeBest for the CNNs, dynamic for
// hello_deepa), its size, its agreement on the held-out samples, and the int8/fp32 latency ratio
// as the median of QUANT_TABLE_RUNS (default 300) interleaved runs of each, 1 intra-op thread,
// with the kernels ORT's profiler saw. Run it with -benchtime 1x; the rows come out with -v.
func BenchmarkResultsTable(b *testing.B) {
	runs := 300
	if n, err := strconv.Atoi(os.Getenv("QUANT_TABLE_RUNS")); err == nil && n > 0 {
		runs = n
	}
	ctx := context.Background()
	for b.Loop() {
		b.Logf("| model | variant shipped | fp32 size | int8 size | ratio | agreement | latency fp32 -> int8 (ratio) | kernels that ran (int8) |")
		b.Logf("| --- | --- | --- | --- | --- | --- | --- | --- |")
		for _, file := range []string{"ocr_cls.onnx", "ocr_det.onnx", "hello_deepa.onnx", "silero_vad_v5.onnx"} {
			float := realModel(b, file)
			schema, err := onnxrt.Inspect(float)
			if err != nil {
				b.Fatal(err)
			}
			in := schema.Inputs[0].Name
			var (
				res  *Result
				eval [][]onnxrt.Tensor
			)
			switch file {
			case "ocr_cls.onnx":
				eval = clsSamples(in, clsEvalSamples, 2)
				res, _, err = QuantizeBest(ctx, float, Options{Samples: clsSamples(in, clsCalibSamples, 1), EvalSamples: eval, Threads: 2})
			case "ocr_det.onnx":
				eval = detSamples(in, detEvalSamples, detSize, 2)
				res, _, err = QuantizeBest(ctx, float, Options{Samples: detSamples(in, detCalibSamples, detSize, 1), EvalSamples: eval, Threads: 2})
			case "hello_deepa.onnx":
				eval = featureSamples(in, deepaEvalSamples, 1)
				res, err = Quantize(ctx, float, Options{Mode: Dynamic})
			default:
				_, err = Quantize(ctx, float, Options{Samples: featureSamples(in, 4, 1)})
				b.Logf("| %s | not quantized | %d | - | - | - | - | %v |", file, len(float), err)
				continue
			}
			if err != nil {
				b.Fatal(err)
			}
			rep, err := Evaluate(ctx, float, res.Model, eval, EvalOptions{Threads: 1, Runs: runs, LayerSamples: -1})
			if err != nil {
				b.Fatal(err)
			}
			var ks []string
			for _, k := range rep.KernelStats {
				ks = append(ks, fmt.Sprintf("%s %d", k.Op, k.Count))
			}
			b.Logf("| %s | %s | %d | %d | %.2fx | %s %.4f | %v -> %v (%.2f) | %s |", file, res.Method, res.SizeBefore, res.SizeAfter, res.Ratio(),
				rep.AgreementKind, rep.Agreement, rep.LatencyFloat.Round(time.Microsecond/10), rep.LatencyQuant.Round(time.Microsecond/10),
				float64(rep.LatencyQuant)/float64(rep.LatencyFloat), strings.Join(ks, ", "))
			for _, v := range res.Variants {
				b.Logf("|   | tried: %s | | %d | | %.4f passed %v | speedup %.2fx | |", v.Method, v.SizeAfter, v.Agreement, v.Passed, v.Speedup)
			}
		}
	}
}

// BenchmarkLayoutSteps measures, in one run, what each layout choice gives on ocr_cls: fp32 and
// the int8 model with the choices added one at a time, each the median of QUANT_TABLE_RUNS
// (default 300) interleaved runs, 1 intra-op thread, with its agreement on the held-out samples.
// Run it with -benchtime 1x -v.
func BenchmarkLayoutSteps(b *testing.B) {
	runs := 300
	if n, err := strconv.Atoi(os.Getenv("QUANT_TABLE_RUNS")); err == nil && n > 0 {
		runs = n
	}
	ctx := context.Background()
	float := realModel(b, "ocr_cls.onnx")
	schema, err := onnxrt.Inspect(float)
	if err != nil {
		b.Fatal(err)
	}
	in := schema.Inputs[0].Name
	calib, eval := clsSamples(in, clsCalibSamples, 1), clsSamples(in, clsEvalSamples, 2)
	steps := []struct {
		name string
		opts Options
	}{
		{"plain (before this round)", Options{NoPadDepthwise: true, NoCloseMul: true, KeepSlowLayout: true}},
		{"+ depthwise padded to 16", Options{NoCloseMul: true, KeepSlowLayout: true}},
		{"+ SE pool and scale on the integers", Options{KeepSlowLayout: true}},
		{"+ float MaxPool tail, isolated MatMul float (default)", Options{}},
		{"float depthwise, unpadded (FloatDepthwise)", Options{NoPadDepthwise: true, FloatDepthwise: true}},
	}
	for b.Loop() {
		names := []string{"fp32"}
		sessions := []*onnxrt.Session{}
		s, err := onnxrt.NewSession(float, onnxrt.Options{IntraOpThreads: 1})
		if err != nil {
			b.Fatal(err)
		}
		sessions = append(sessions, s)
		for _, st := range steps {
			o := st.opts
			o.Samples = calib
			res, err := Quantize(ctx, float, o)
			if err != nil {
				b.Fatal(err)
			}
			rep, err := Evaluate(ctx, float, res.Model, eval, EvalOptions{Threads: 1, Runs: 1, LayerSamples: -1})
			if err != nil {
				b.Fatal(err)
			}
			names = append(names, fmt.Sprintf("%s: %d bytes, agreement %.2f", st.name, res.SizeAfter, rep.Agreement))
			s, err := onnxrt.NewSession(res.Model, onnxrt.Options{IntraOpThreads: 1})
			if err != nil {
				b.Fatal(err)
			}
			sessions = append(sessions, s)
		}
		lat := make([][]time.Duration, len(sessions))
		for i := -5; i < runs; i++ {
			for j, s := range sessions {
				start := time.Now()
				if _, err := s.Run(ctx, eval[0]); err != nil {
					b.Fatal(err)
				}
				if i >= 0 {
					lat[j] = append(lat[j], time.Since(start))
				}
			}
		}
		fp32 := median(lat[0])
		for j, s := range sessions {
			m := median(lat[j])
			b.Logf("| %s | %v | %.2f |", names[j], m.Round(time.Microsecond), float64(m)/float64(fp32))
			s.Close()
		}
	}
}
