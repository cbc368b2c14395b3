package drift

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

func normalReference(t testing.TB, rng *rand.Rand, features, n int) *Reference {
	var specs []FeatureSpec
	for i := range features {
		specs = append(specs, FeatureSpec{Name: "x" + string(rune('0'+i)), Source: SourceInput, Tensor: "in", Index: i})
	}
	b, err := NewReferenceBuilder(specs, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		_ = b.Add(map[string][]float64{s.Name: normals(rng, n, 0, 1)})
	}
	r, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestWindowMergeAssociative(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	ref := normalReference(t, rng, 2, 5000)
	all, _ := NewWindow(ref)
	parts := make([]*Window, 3)
	for i := range parts {
		parts[i], _ = NewWindow(ref)
	}
	for i := range 3000 {
		vals := []float64{rng.NormFloat64()*2 + 1, rng.NormFloat64()}
		if i%97 == 0 {
			vals[1] = math.NaN()
		}
		// Uneven split so the pairwise variance update is exercised with unequal counts.
		p := parts[(i*i)%3]
		if err := p.AddSample(vals); err != nil {
			t.Fatal(err)
		}
		_ = all.AddSample(vals)
	}
	a, b, c := parts[0].Summary(), parts[1].Summary(), parts[2].Summary()
	ab, _ := Merge(a, b)
	left, _ := Merge(ab, c)
	bc, _ := Merge(b, c)
	right, _ := Merge(a, bc)
	flat, err := Merge(c, a, b)
	if err != nil {
		t.Fatal(err)
	}
	want := all.Summary()
	for name, got := range map[string]Summary{"(a+b)+c": left, "a+(b+c)": right, "c+a+b": flat} {
		for i, w := range want.Features {
			g := got.Features[i]
			if !slices.Equal(g.Counts, w.Counts) || g.Count != w.Count || g.Missing != w.Missing || g.Min != w.Min || g.Max != w.Max ||
				!near(g.Mean, w.Mean, 1e-12) || !near(g.Variance, w.Variance, 1e-12*w.Variance) {
				t.Errorf("%s feature %s: %+v, want %+v", name, w.Name, g, w)
			}
		}
	}
	if want.Features[1].Missing != 31 {
		t.Errorf("missing %d, want 31", want.Features[1].Missing)
	}
	// The merged summary survives JSON, as it must on the wire and in the spool.
	raw, err := json.Marshal(left)
	if err != nil {
		t.Fatal(err)
	}
	var back Summary
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if _, err := Merge(back, want); err != nil {
		t.Fatal(err)
	}
	t.Logf("summary of 2 features, 10 bins: %d bytes of JSON", len(raw))
}

func TestWindowMismatchAndMissing(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	ref := normalReference(t, rng, 1, 1000)
	other := normalReference(t, rng, 1, 1000)
	w, _ := NewWindow(ref)
	if err := w.Add("nope", 1); !errors.Is(err, ErrMismatch) {
		t.Errorf("unknown feature: %v", err)
	}
	if err := w.AddSample([]float64{1, 2}); !errors.Is(err, ErrMismatch) {
		t.Errorf("wrong arity: %v", err)
	}
	for _, v := range []float64{math.NaN(), math.Inf(-1), 0.3} {
		_ = w.Add("x0", v)
	}
	s := w.Flush()
	if s.Features[0].Missing != 2 || s.Features[0].Count != 1 {
		t.Fatalf("got %+v", s.Features[0])
	}
	if got := w.Summary(); got.Features[0].Count != 0 || got.Features[0].Missing != 0 {
		t.Fatalf("Flush did not start a new window: %+v", got.Features[0])
	}
	o, _ := NewWindow(other)
	if _, err := Merge(s, o.Summary()); !errors.Is(err, ErrMismatch) {
		t.Errorf("merge across references: %v", err)
	}
	if _, err := Compare(ref, o.Summary(), Options{}); !errors.Is(err, ErrMismatch) {
		t.Errorf("compare against another reference: %v", err)
	}
	bad := s
	bad.Features = []FeatureSummary{s.Features[0]}
	bad.Features[0].Count = 7
	if _, err := Merge(bad); !errors.Is(err, ErrMismatch) {
		t.Errorf("counts that do not add up: %v", err)
	}
	if _, err := NewWindow(&Reference{SchemaVersion: 1}); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("window on an invalid reference: %v", err)
	}
	// Class mix: a class outside the reference's range is missing, not a new bin.
	cm, _ := ClassMix(FeatureSpec{Name: "c", Tensor: "p"}, 3, []int{0, 1, 2})
	cw, _ := NewWindow(&Reference{SchemaVersion: 1, Features: []Feature{cm}})
	for _, v := range []float64{0, 2, 3, 1.5, -1} {
		_ = cw.Add("c", v)
	}
	if f := cw.Summary().Features[0]; f.Missing != 3 || !slices.Equal(f.Counts, []uint64{1, 0, 1}) {
		t.Errorf("class window %+v", f)
	}
}

func TestWindowConcurrent(t *testing.T) {
	rng := rand.New(rand.NewPCG(45, 46))
	w, _ := NewWindow(normalReference(t, rng, 3, 1000))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				_ = w.AddSample([]float64{float64(g), float64(i), 0})
			}
		})
	}
	wg.Wait()
	if n := w.Summary().Features[1].Count; n != 8000 {
		t.Fatalf("count %d", n)
	}
}

func BenchmarkWindowAdd(b *testing.B) {
	rng := rand.New(rand.NewPCG(47, 48))
	w, _ := NewWindow(normalReference(b, rng, 1, 10_000))
	vals := normals(rng, 1024, 0, 1)
	b.ResetTimer()
	for i := range b.N {
		_ = w.Add("x0", vals[i&1023])
	}
}

// BenchmarkWindowAddSample reports the cost per feature value of the usual call: one sample of
// 16 features under one lock.
func BenchmarkWindowAddSample(b *testing.B) {
	rng := rand.New(rand.NewPCG(49, 50))
	w, _ := NewWindow(normalReference(b, rng, MaxFeatures, 10_000))
	sample := normals(rng, MaxFeatures*64, 0, 1)
	b.ResetTimer()
	for i := range b.N {
		j := (i & 63) * MaxFeatures
		_ = w.AddSample(sample[j : j+MaxFeatures])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*MaxFeatures), "ns/value")
}

func BenchmarkCompare(b *testing.B) {
	rng := rand.New(rand.NewPCG(51, 52))
	ref := normalReference(b, rng, MaxFeatures, 10_000)
	w, _ := NewWindow(ref)
	for range 500 {
		_ = w.AddSample(normals(rng, MaxFeatures, 0.1, 1))
	}
	s := w.Summary()
	b.ResetTimer()
	for range b.N {
		if _, err := Compare(ref, s, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMerge(b *testing.B) {
	rng := rand.New(rand.NewPCG(53, 54))
	ref := normalReference(b, rng, MaxFeatures, 10_000)
	w, _ := NewWindow(ref)
	for range 500 {
		_ = w.AddSample(normals(rng, MaxFeatures, 0, 1))
	}
	s := w.Summary()
	b.ResetTimer()
	for range b.N {
		if _, err := Merge(s, s); err != nil {
			b.Fatal(err)
		}
	}
}
