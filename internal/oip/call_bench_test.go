package oip

import (
	"fmt"
	"testing"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// BenchmarkParseCall parses a hello_deepa-sized request (2400 FP32 values, as clients format
// them) and encodes a small response.
//
//	go test ./internal/oip -run '^$' -bench . -benchmem
func BenchmarkParseCall(b *testing.B) {
	d := make([]float32, 2400)
	for i := range d {
		d[i] = float32(i%97)/97 - 0.5
	}
	t := onnxrt.Tensor{Name: "x", DType: onnxrt.FP32, Shape: []int64{1, 25, 96}, Data: d}
	body := fmt.Appendf(nil, `{"inputs":[{"name":"x","shape":[1,25,96],"datatype":"FP32","data":`)
	body = append(AppendData(body, t), "}]}"...)
	b.SetBytes(int64(len(body)))
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			if _, err := ParseCall(body, nil, ParseOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode", func(b *testing.B) {
		var w ResponseWriter
		out := onnxrt.Tensor{Name: "39", DType: onnxrt.FP32, Shape: []int64{1, 1}, Data: []float32{0.12345678}}
		for b.Loop() {
			w.Reset()
			w.Begin("hello", "1.0.0", "id-1")
			w.Output(out, false)
			w.End()
		}
	})
}
