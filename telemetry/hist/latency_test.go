package hist

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestQuantileAccuracy checks p50/p95/p99 (and a few more) against exact order statistics on
// 100k log-normal latencies: the estimate must be within the bucket error.
func TestQuantileAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name       string
		median, sd float64 // of log(ns)
	}{
		{"fast 200us", 200e3, 0.5},
		{"typical 8ms", 8e6, 0.8},
		{"heavy tail 50ms", 50e6, 1.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewLatency()
			vals := make([]time.Duration, 100_000)
			for i := range vals {
				vals[i] = time.Duration(tc.median * math.Exp(tc.sd*rng.NormFloat64()))
				h.Observe(vals[i])
			}
			slices.Sort(vals)
			s := h.Snapshot()
			if s.Count != uint64(len(vals)) || s.Min != vals[0] || s.Max != vals[len(vals)-1] {
				t.Fatalf("count/min/max = %d/%v/%v, want %d/%v/%v", s.Count, s.Min, s.Max, len(vals), vals[0], vals[len(vals)-1])
			}
			for _, q := range []float64{0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1} {
				rank := max(int(math.Ceil(q*float64(len(vals)))), 1)
				exact := vals[rank-1]
				got := s.Quantile(q)
				rel := math.Abs(float64(got-exact)) / float64(exact)
				if rel > RelativeError+1e-9 {
					t.Errorf("q%.3f = %v, exact %v, relative error %.4f > %.2f", q, got, exact, rel, RelativeError)
				}
			}
		})
	}
}

func TestOutOfRangeAndEmpty(t *testing.T) {
	var empty Snapshot
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 {
		t.Fatal("empty snapshot must report zeros")
	}
	h := NewLatency()
	h.Observe(-5)                    // clock stepped back: counted as zero
	h.Observe(300 * time.Nanosecond) // below Lowest
	h.Observe(2 * time.Minute)       // above Highest
	s := h.Snapshot()
	if s.Count != 3 || s.Min != 0 || s.Max != 2*time.Minute {
		t.Fatalf("got count %d min %v max %v", s.Count, s.Min, s.Max)
	}
	if got := s.Quantile(1); got != 2*time.Minute {
		t.Errorf("p100 = %v, want the exact max", got)
	}
	if got := s.Quantile(0); got != 0 {
		t.Errorf("p0 = %v, want the exact min", got)
	}
}

func TestMergeAndJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	parts := []*Latency{NewLatency(), NewLatency(), NewLatency()}
	all := NewLatency()
	for i := range 30_000 {
		d := time.Duration(1e6 * math.Exp(rng.NormFloat64()))
		parts[i%3].Observe(d)
		all.Observe(d)
	}
	a, b, c := parts[0].Snapshot(), parts[1].Snapshot(), parts[2].Snapshot()
	ab, _ := a.Merge(b)
	left, _ := ab.Merge(c)
	bc, _ := b.Merge(c)
	right, err := a.Merge(bc)
	if err != nil {
		t.Fatal(err)
	}
	want := all.Snapshot()
	for name, got := range map[string]Snapshot{"(a+b)+c": left, "a+(b+c)": right} {
		if got.Count != want.Count || got.Sum != want.Sum || got.Min != want.Min || got.Max != want.Max || !slices.Equal(got.counts, want.counts) {
			t.Errorf("%s differs from the histogram of all observations", name)
		}
	}

	raw, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var back Snapshot
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if back.Count != want.Count || !slices.Equal(back.counts, want.counts) || back.Quantile(0.99) != want.Quantile(0.99) {
		t.Fatal("JSON round trip changed the snapshot")
	}
	t.Logf("30k observations: %d bytes of JSON", len(raw))
	if len(raw) > 2048 {
		t.Errorf("snapshot JSON is %d bytes; sparse buckets should keep it small", len(raw))
	}
	var zero Snapshot
	if _, err := zero.Merge(want); err != nil {
		t.Errorf("zero snapshot must merge: %v", err)
	}
}

func TestUnmarshalRejects(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"other layout", `{"layout":2,"count":0,"buckets":[]}`},
		{"bucket out of range", `{"layout":1,"count":1,"min_ns":1,"max_ns":1,"buckets":[[100000,1]]}`},
		{"count mismatch", `{"layout":1,"count":5,"min_ns":1,"max_ns":1,"buckets":[[3,1]]}`},
		{"min above max", `{"layout":1,"count":1,"min_ns":9,"max_ns":1,"buckets":[[3,1]]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Snapshot
			if err := json.Unmarshal([]byte(tc.in), &s); !errors.Is(err, ErrLayout) {
				t.Fatalf("err = %v, want ErrLayout", err)
			}
		})
	}
}

func TestConcurrentObserve(t *testing.T) {
	h := NewLatency()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10_000 {
				h.Observe(time.Duration(g*10_000+i+1) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	s := h.Snapshot()
	if s.Count != 80_000 || s.Min != time.Microsecond || s.Max != 80_000*time.Microsecond {
		t.Fatalf("count %d min %v max %v", s.Count, s.Min, s.Max)
	}
}

func BenchmarkObserve(b *testing.B) {
	h := NewLatency()
	d := make([]time.Duration, 1024)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range d {
		d[i] = time.Duration(1e6 * math.Exp(rng.NormFloat64()))
	}
	b.ResetTimer()
	for i := range b.N {
		h.Observe(d[i&1023])
	}
}

func BenchmarkObserveParallel(b *testing.B) {
	h := NewLatency()
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(1)
		for pb.Next() {
			d = d*7 + 13
			h.Observe(d % (100 * time.Millisecond))
		}
	})
}
