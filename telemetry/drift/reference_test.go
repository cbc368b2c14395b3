package drift

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func normals(rng *rand.Rand, n int, mean, sd float64) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = mean + sd*rng.NormFloat64()
	}
	return xs
}

func TestBuildFeatureNormal(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	values := append(normals(rng, 20_000, 0, 1), math.NaN(), math.Inf(1))
	f, err := BuildFeature(FeatureSpec{Name: "x", Source: SourceInput, Tensor: "in"}, values, 10)
	if err != nil {
		t.Fatal(err)
	}
	// Deciles of N(0,1).
	want := []float64{-1.2816, -0.8416, -0.5244, -0.2533, 0, 0.2533, 0.5244, 0.8416, 1.2816}
	if len(f.Edges) != len(want) {
		t.Fatalf("edges %v", f.Edges)
	}
	for i := range want {
		if !near(f.Edges[i], want[i], 0.05) {
			t.Errorf("edge %d = %v, want about %v", i, f.Edges[i], want[i])
		}
	}
	for i, c := range f.RefCounts {
		if c < 1990 || c > 2010 {
			t.Errorf("bin %d holds %d, want about 2000 (equal mass)", i, c)
		}
	}
	if f.Count != 20_000 || f.Missing != 2 || !near(f.Mean, 0, 0.03) || !near(f.Variance, 1, 0.03) {
		t.Errorf("count %d missing %d mean %v variance %v", f.Count, f.Missing, f.Mean, f.Variance)
	}
	if len(f.Quantiles) != len(QuantileLevels) || !near(f.Quantiles[len(f.Quantiles)-1].Value, 2.326, 0.1) {
		t.Errorf("quantiles %v", f.Quantiles)
	}
}

func TestBuildFeatureTiesAndConstant(t *testing.T) {
	spec := FeatureSpec{Name: "x", Source: SourceInput, Tensor: "in"}
	// Constant: three bins, below, at and above the constant.
	f, err := BuildFeature(spec, []float64{3, 3, 3, 3}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Edges) != 2 || f.Edges[0] != 3 || !slices.Equal(f.RefCounts, []uint64{0, 4, 0}) || f.Variance != 0 {
		t.Fatalf("constant: edges %v counts %v", f.Edges, f.RefCounts)
	}
	if err := (&Reference{SchemaVersion: 1, Features: []Feature{f}}).Validate(); err != nil {
		t.Fatalf("constant feature does not validate: %v", err)
	}
	// Discrete 0/1/2 with 70/20/10%: ten asked bins collapse; each value ends in its own bin.
	var vs []float64
	for i := range 1000 {
		switch {
		case i < 700:
			vs = append(vs, 0)
		case i < 900:
			vs = append(vs, 1)
		default:
			vs = append(vs, 2)
		}
	}
	f, err = BuildFeature(spec, vs, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Reference{SchemaVersion: 1, Features: []Feature{f}}).Validate(); err != nil {
		t.Fatal(err)
	}
	byValue := map[float64]int{}
	for _, v := range []float64{0, 1, 2} {
		byValue[v] = bin(f.Edges, v)
	}
	if byValue[0] == byValue[1] || byValue[1] == byValue[2] {
		t.Fatalf("values share a bin: edges %v", f.Edges)
	}
	if _, err := BuildFeature(spec, []float64{math.NaN(), 1}, 10); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("one finite value: err = %v", err)
	}
}

func bin(edges []float64, v float64) int {
	n := 0
	for _, e := range edges {
		if v >= e {
			n++
		}
	}
	return n
}

func TestClassMixFeature(t *testing.T) {
	f, err := ClassMix(FeatureSpec{Name: "cls", Tensor: "probs"}, 3, []int{0, 1, 1, 2, 2, 2, 7, -1})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.Edges, []float64{0.5, 1.5}) || !slices.Equal(f.RefCounts, []uint64{1, 2, 3}) || f.Missing != 2 || f.Source != SourceOutput {
		t.Fatalf("got %+v", f)
	}
	if _, err := ClassMix(FeatureSpec{Name: "cls", Tensor: "p"}, 1, []int{0}); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("one class: err = %v", err)
	}
}

// exampleReference is the reference of an image classifier: per-channel mean and std of an
// NCHW input, the class mix and confidence of its softmax output. It is the example in
// SCHEMA.md and the golden file.
func exampleReference(t testing.TB) *Reference {
	rng := rand.New(rand.NewPCG(21, 22))
	var specs []FeatureSpec
	for c, name := range []string{"r", "g", "b"} {
		specs = append(specs,
			FeatureSpec{Name: "pixel_mean_" + name, Source: SourceReduction, Tensor: "input", Reduction: ReduceMean, Axes: []int{2, 3}, Index: c},
		)
	}
	specs = append(specs,
		FeatureSpec{Name: "pixel_std_all", Source: SourceReduction, Tensor: "input", Reduction: ReduceStd, Axes: []int{1, 2, 3}},
		FeatureSpec{Name: "class", Source: SourceOutput, Tensor: "probs", Kind: KindClassMix, Classes: 4},
		FeatureSpec{Name: "confidence", Source: SourceOutput, Tensor: "probs", Kind: KindConfidence},
	)
	b, err := NewReferenceBuilder(specs, 8)
	if err != nil {
		t.Fatal(err)
	}
	for range 2000 {
		// A synthetic 1x3x4x4 image and a 1x4 softmax output.
		img := make([]float32, 3*4*4)
		for i := range img {
			img[i] = float32(0.45 + 0.1*float64(i/16) + 0.2*rng.NormFloat64())
		}
		logits := make([]float64, 4)
		probs := make([]float32, 4)
		var z float64
		for k := range logits {
			logits[k] = float64(k%2) + rng.NormFloat64()
			z += math.Exp(logits[k])
		}
		for k := range probs {
			probs[k] = float32(math.Exp(logits[k]) / z)
		}
		vals := map[string][]float64{}
		for _, s := range specs {
			shape, data := []int64{1, 3, 4, 4}, img
			if s.Tensor == "probs" {
				shape, data = []int64{1, 4}, probs
			}
			v, err := s.Extract(data, shape)
			if err != nil {
				t.Fatal(err)
			}
			vals[s.Name] = v
		}
		if err := b.Add(vals); err != nil {
			t.Fatal(err)
		}
	}
	r, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestGoldenReference(t *testing.T) {
	r := exampleReference(t)
	got, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "reference_example.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseReference(want)
	if err != nil {
		t.Fatal(err)
	}
	// Byte equality where the golden file was made; elsewhere (an FMA-fusing arm64 build may
	// round the synthetic data differently) equal structure and counts, values to 1e-9.
	if bytes.Equal(got, want) {
		return
	}
	if len(back.Features) != len(r.Features) {
		t.Fatalf("reference differs from %s (run with -update if the change is meant)", path)
	}
	for i, f := range r.Features {
		g := back.Features[i]
		same := g.Name == f.Name && g.Count == f.Count && slices.Equal(g.RefCounts, f.RefCounts) && len(g.Edges) == len(f.Edges) && near(g.Mean, f.Mean, 1e-9)
		for j := range f.Edges {
			same = same && j < len(g.Edges) && near(g.Edges[j], f.Edges[j], 1e-9)
		}
		if !same {
			t.Fatalf("feature %q differs from %s (run with -update if the change is meant)", f.Name, path)
		}
	}
}

// TestValidateRejects mutates a valid reference in one way per case.
func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(r *Reference)
		want   error
		msg    string
	}{
		{"unsorted edges", func(r *Reference) { e := r.Features[0].Edges; e[1], e[2] = e[2], e[1] }, ErrInvalidReference, "not above"},
		{"equal edges", func(r *Reference) { e := r.Features[0].Edges; e[2] = e[1] }, ErrInvalidReference, "not above"},
		{"NaN edge", func(r *Reference) { r.Features[0].Edges[0] = math.NaN() }, ErrInvalidReference, "NaN"},
		{"NaN mean", func(r *Reference) { r.Features[0].Mean = math.NaN() }, ErrInvalidReference, "mean"},
		{"negative variance", func(r *Reference) { r.Features[0].Variance = -1 }, ErrInvalidReference, "variance"},
		{"count mismatch", func(r *Reference) { r.Features[0].Count++ }, ErrInvalidReference, "sum to"},
		{"ref_counts length", func(r *Reference) { r.Features[0].RefCounts = r.Features[0].RefCounts[1:] }, ErrInvalidReference, "ref_counts"},
		{"unknown source", func(r *Reference) { r.Features[0].Source = "pixels" }, ErrInvalidReference, "unknown source"},
		{"unknown reduction", func(r *Reference) { r.Features[0].Reduction = "median" }, ErrInvalidReference, "unknown reduction"},
		{"batch axis", func(r *Reference) { r.Features[0].Axes = []int{0, 2} }, ErrInvalidReference, "batch"},
		{"unknown kind", func(r *Reference) { r.Features[5].Kind = "entropy" }, ErrInvalidReference, "unknown output kind"},
		{"class edges", func(r *Reference) { r.Features[4].Edges[0] = 0.4 }, ErrInvalidReference, "class_mix edges"},
		{"duplicate name", func(r *Reference) { r.Features[1].Name = r.Features[0].Name }, ErrInvalidReference, "twice"},
		{"no features", func(r *Reference) { r.Features = nil }, ErrInvalidReference, "no features"},
		{"too many features", func(r *Reference) {
			for i := len(r.Features); i <= MaxFeatures; i++ {
				f := r.Features[0]
				f.Name = f.Name + strings.Repeat("x", i)
				r.Features = append(r.Features, f)
			}
		}, ErrInvalidReference, "at most 16"},
		{"quantiles descending", func(r *Reference) { q := r.Features[0].Quantiles; q[0].Value = q[1].Value + 1 }, ErrInvalidReference, "quantile"},
		{"schema version", func(r *Reference) { r.SchemaVersion = 2 }, ErrSchemaVersion, "schema_version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := exampleReference(t)
			tc.mutate(r)
			err := r.Validate()
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.want, tc.msg)
			}
			if _, err := r.Encode(); err == nil {
				t.Fatal("Encode accepted an invalid reference")
			}
		})
	}
}

func TestParseReferenceRejects(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     error
	}{
		{"not JSON", `{`, nil},
		{"no version", `{"features":[]}`, ErrInvalidReference},
		{"future version", `{"schema_version":2,"features":[]}`, ErrSchemaVersion},
		{"NaN smuggled as string", `{"schema_version":1,"features":[{"name":"x","source":"input","tensor":"t","edges":["NaN"],"ref_counts":[1,1],"count":2}]}`, nil},
		{"no features", `{"schema_version":1,"features":[]}`, ErrInvalidReference},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseReference([]byte(tc.in))
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// Unknown fields are tolerated within a schema version.
	raw, _ := os.ReadFile(filepath.Join("testdata", "reference_example.json"))
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["generated_by"] = "a newer builder"
	raw, _ = json.Marshal(m)
	if _, err := ParseReference(raw); err != nil {
		t.Fatalf("unknown top-level field refused: %v", err)
	}
}

func TestReferenceBuilder(t *testing.T) {
	spec := FeatureSpec{Name: "x", Source: SourceInput, Tensor: "in"}
	if _, err := NewReferenceBuilder([]FeatureSpec{spec, spec}, 0); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("duplicate spec: %v", err)
	}
	if _, err := NewReferenceBuilder([]FeatureSpec{{Name: "x", Source: "pixels", Tensor: "in"}}, 0); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("unknown source: %v", err)
	}
	b, err := NewReferenceBuilder([]FeatureSpec{spec}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Add(map[string][]float64{"y": {1}}); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("unknown feature: %v", err)
	}
	rng := rand.New(rand.NewPCG(31, 32))
	_ = b.Add(map[string][]float64{"x": normals(rng, 5000, 0, 1)})
	parent, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	if len(parent.Features[0].Edges) != DefaultBins-1 {
		t.Errorf("default bins: %d edges", len(parent.Features[0].Edges))
	}
	// A child built with KeepEdges bins on the parent's edges even though its data moved.
	child, _ := NewReferenceBuilder([]FeatureSpec{spec}, 0)
	child.KeepEdges(parent)
	_ = child.Add(map[string][]float64{"x": normals(rng, 5000, 3, 1)})
	r, err := child.Build()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Features[0].Edges, parent.Features[0].Edges) || r.Features[0].RefCounts[len(r.Features[0].RefCounts)-1] < 4000 {
		t.Errorf("KeepEdges: edges %v counts %v", r.Features[0].Edges, r.Features[0].RefCounts)
	}
}

func TestExtract(t *testing.T) {
	// Batch of 2 NCHW 2x2x2 images: sample b channel c pixel p = 100b + 10c + p.
	img := make([]float32, 2*2*2*2)
	for b := range 2 {
		for c := range 2 {
			for p := range 4 {
				img[b*8+c*4+p] = float32(100*b + 10*c + p)
			}
		}
	}
	shape := []int64{2, 2, 2, 2}
	for _, tc := range []struct {
		name string
		spec FeatureSpec
		want []float64
	}{
		{"channel 1 mean", FeatureSpec{Source: SourceReduction, Reduction: ReduceMean, Axes: []int{2, 3}, Index: 1}, []float64{11.5, 111.5}},
		{"channel 0 max", FeatureSpec{Source: SourceReduction, Reduction: ReduceMax, Axes: []int{2, 3}}, []float64{3, 103}},
		{"row 1 min over C and W", FeatureSpec{Source: SourceReduction, Reduction: ReduceMin, Axes: []int{1, 3}, Index: 1}, []float64{2, 102}},
		{"std of all", FeatureSpec{Source: SourceReduction, Reduction: ReduceStd, Axes: []int{1, 2, 3}}, []float64{math.Sqrt(26.25), math.Sqrt(26.25)}},
		{"one element", FeatureSpec{Source: SourceInput, Index: 5}, []float64{11, 111}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Name, tc.spec.Tensor = tc.name, "input"
			got, err := tc.spec.Extract(img, shape)
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if !near(got[i], tc.want[i], 1e-9) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
	probs := []float32{0.1, 0.7, 0.2, 0.5, 0.2, 0.3}
	for kind, want := range map[Kind][]float64{KindClassMix: {1, 0}, KindConfidence: {0.7, 0.5}} {
		s := FeatureSpec{Name: string(kind), Source: SourceOutput, Tensor: "p", Kind: kind}
		got, err := s.Extract(probs, []int64{2, 3})
		if err != nil || !near(got[0], want[0], 1e-6) || !near(got[1], want[1], 1e-6) {
			t.Errorf("%s: got %v %v, want %v", kind, got, err, want)
		}
	}
	emb := FeatureSpec{Name: "e", Source: SourceEmbedding, Tensor: "emb", Kind: KindEmbeddingNorm}
	if got, err := emb.Extract([]float32{3, 4}, []int64{2}); err != nil || len(got) != 1 || got[0] != 5 {
		t.Errorf("rank-1 embedding: %v %v", got, err)
	}
	for _, bad := range []struct {
		spec  FeatureSpec
		shape []int64
	}{
		{FeatureSpec{Source: SourceInput, Index: 8}, shape},
		{FeatureSpec{Source: SourceInput}, []int64{2, 2}},
		{FeatureSpec{Source: SourceInput}, []int64{-1, 8}},
		{FeatureSpec{Source: SourceReduction, Reduction: ReduceMean, Axes: []int{4}}, shape},
		{FeatureSpec{Source: SourceReduction, Reduction: ReduceMean, Axes: []int{2, 3}, Index: 2}, shape},
	} {
		bad.spec.Name = "bad"
		if _, err := bad.spec.Extract(img, bad.shape); !errors.Is(err, ErrShape) {
			t.Errorf("%+v on %v: err = %v, want ErrShape", bad.spec, bad.shape, err)
		}
	}
}
