package infer

import (
	"math"
	"testing"
)

func TestNonFinite32(t *testing.T) {
	bad := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}
	edge := []float32{math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, 0, float32(math.Copysign(0, -1))}
	for n := range 21 {
		for off := range 2 { // both alignments of the first element
			clean := make([]float32, n+off)[off:]
			for i := range clean {
				clean[i] = edge[i%len(edge)]
			}
			if nonFinite32(clean) {
				t.Fatalf("n=%d off=%d: finite values reported as non-finite", n, off)
			}
			for at := range n {
				for _, b := range bad {
					x := append([]float32(nil), clean...)
					if off == 1 {
						x = append(make([]float32, 1, n+1), clean...)[1:]
					}
					x[at] = b
					if !nonFinite32(x) {
						t.Fatalf("n=%d off=%d: %v at %d not found", n, off, b, at)
					}
				}
			}
		}
	}
}
