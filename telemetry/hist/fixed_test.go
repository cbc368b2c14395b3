package hist

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func TestBin(t *testing.T) {
	edges := []float64{-1, 0, 2.5}
	for _, tc := range []struct {
		v    float64
		want int
	}{
		{math.Inf(-1), 0}, {-7, 0}, {-1, 1}, {-0.5, 1}, {0, 2}, {2.4999, 2}, {2.5, 3}, {1e300, 3},
	} {
		if got := Bin(edges, tc.v); got != tc.want {
			t.Errorf("Bin(%v) = %d, want %d", tc.v, got, tc.want)
		}
	}
	// The binary-search path must agree with the linear one.
	many := make([]float64, 40)
	for i := range many {
		many[i] = float64(i) - 0.5
	}
	for v := -2.0; v < 42; v += 0.25 {
		lin := 0
		for _, e := range many {
			if v >= e {
				lin++
			}
		}
		if got := Bin(many, v); got != lin {
			t.Fatalf("Bin(%v) = %d, want %d", v, got, lin)
		}
	}
}

func TestFixed(t *testing.T) {
	for _, bad := range [][]float64{{1, 1}, {2, 1}, {0, math.NaN()}, {math.Inf(1)}} {
		if _, err := NewFixed(bad); !errors.Is(err, ErrEdges) {
			t.Errorf("NewFixed(%v) err = %v, want ErrEdges", bad, err)
		}
	}
	a, _ := NewFixed([]float64{0, 1})
	b, _ := NewFixed([]float64{0, 1})
	for _, v := range []float64{-1, 0.5, 0.5, 3} {
		a.Add(v)
	}
	b.Add(0)
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Counts, []uint64{1, 3, 1}) || a.Total() != 5 {
		t.Fatalf("counts %v", a.Counts)
	}
	if got := CDF(a.Counts); !slices.Equal(got, []float64{0.2, 0.8}) {
		t.Fatalf("CDF = %v", got)
	}
	c, _ := NewFixed([]float64{0, 2})
	if err := a.Merge(c); !errors.Is(err, ErrEdges) {
		t.Fatalf("merge on other edges: err = %v", err)
	}
}
