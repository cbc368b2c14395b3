package infer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/telemetry"
)

// TestFeedback: predictions made with a request id take ground truth on POST /v1/feedback, and
// each label's outcome reaches the predicting version's LabelObserver.
func TestFeedback(t *testing.T) {
	p := identityModel(t, map[string]idInput{"x": {onnxpb.TensorProto_FLOAT, []int64{1, 3}}})
	os.WriteFile(filepath.Join(filepath.Dir(p), "labels.txt"), []byte("cat\ndog\nbird\n"), 0o644)
	man := &bundle.Manifest{Name: "cls", Version: "1.0.0", Files: []bundle.FileEntry{
		{Path: filepath.Base(p), Role: bundle.RoleModel}, {Path: "labels.txt", Role: bundle.RoleLabels}}}
	m, err := LoadWith(filepath.Dir(p), "cls-1.0.0", man, onnxrt.Options{}, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	// As the agent wires it: labels count into the version's telemetry window.
	col, err := telemetry.NewCollector("cls", "1.0.0", "cls-1.0.0", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m.LabelObserver = col.ObserveLabel
	s := NewServer("test")
	s.Swap("cls", m)
	h := s.Handler()
	// The identity model's output is its input: the top-1 class is the argmax of x.
	for id, x := range map[string][]float32{"r-dog": {0.1, 0.8, 0.1}, "r-bird": {0.1, 0.2, 0.7}} {
		body := fmt.Sprintf(`{"id": %q, "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": %s}]}`, id, mustJSON(t, x))
		if st, _, got := do(t, h, "POST", "/v2/models/cls/infer", []byte(body), nil); st != 200 {
			t.Fatalf("infer %s: %d %s", id, st, got)
		}
	}
	cases := []struct {
		name, body string
		status     int
		contains   string
		correct    bool // counted as correct (when status is 204)
	}{
		{"index correct", `{"model": "cls", "id": "r-dog", "label": 1}`, 204, "", true},
		{"label name correct", `{"model": "cls", "id": "r-bird", "label": "bird"}`, 204, "", true},
		{"numeric string", `{"model": "cls", "id": "r-bird", "label": "2"}`, 204, "", true},
		{"index wrong", `{"model": "cls", "id": "r-dog", "label": 0}`, 204, "", false},
		{"label name wrong", `{"model": "cls", "id": "r-bird", "label": "cat"}`, 204, "", false},
		{"unknown id", `{"model": "cls", "id": "r-none", "label": 1}`, 404, "no recent prediction", false},
		{"unknown model", `{"model": "other", "id": "r-dog", "label": 1}`, 404, "no recent prediction", false},
		{"not JSON", `{"model": `, 400, "body must be JSON", false},
		{"unknown field", `{"model": "cls", "id": "r-dog", "label": 1, "x": 2}`, 400, "unknown field", false},
		{"no label", `{"model": "cls", "id": "r-dog"}`, 400, "label is missing", false},
		{"unknown label name", `{"model": "cls", "id": "r-dog", "label": "fish"}`, 400, "neither a class index", false},
		{"negative index", `{"model": "cls", "id": "r-dog", "label": -1}`, 400, "non-negative", false},
		{"no id", `{"model": "cls", "label": 1}`, 400, "required", false},
	}
	wantC, wantL := 0, 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, _, got := do(t, h, "POST", "/v1/feedback", []byte(c.body), nil)
			if st != c.status {
				t.Fatalf("status %d, want %d: %s", st, c.status, got)
			}
			if !strings.Contains(string(got), c.contains) {
				t.Fatalf("body %s does not say %q", got, c.contains)
			}
			if st >= 400 && !json.Valid(got) {
				t.Fatalf("error body is not JSON: %s", got)
			}
		})
		if c.status == 204 {
			wantL++
			if c.correct {
				wantC++
			}
		}
	}
	w := col.Flush(time.Now())
	if w.Correct != uint64(wantC) || w.Labeled != uint64(wantL) || w.Requests != 0 {
		t.Fatalf("window counts %d correct of %d labeled (%d requests), want %d of %d", w.Correct, w.Labeled, w.Requests, wantC, wantL)
	}
	if w = col.Flush(time.Now()); w.Correct != 0 || w.Labeled != 0 {
		t.Fatalf("the next window starts with %d of %d", w.Correct, w.Labeled)
	}
}

func TestPredictionsRing(t *testing.T) {
	var p predictions
	for i := range KeepPredictions + 10 {
		p.add(prediction{id: fmt.Sprint(i), class: i})
	}
	if _, ok := p.get("9"); ok {
		t.Fatal("prediction 9 is still remembered past the ring's size")
	}
	for _, id := range []string{"10", "5000", fmt.Sprint(KeepPredictions + 9)} {
		if pr, ok := p.get(id); !ok || fmt.Sprint(pr.class) != id {
			t.Fatalf("prediction %s: %+v %v", id, pr, ok)
		}
	}
	if len(p.byID) != KeepPredictions {
		t.Fatalf("%d ids indexed, want %d", len(p.byID), KeepPredictions)
	}
}

func TestTop1(t *testing.T) {
	for _, c := range []struct {
		t    onnxrt.Tensor
		want int
	}{
		{onnxrt.Tensor{DType: onnxrt.FP32, Shape: []int64{1, 3}, Data: []float32{0.1, 0.7, 0.2}}, 1},
		{onnxrt.Tensor{DType: onnxrt.FP32, Shape: []int64{2, 2}, Data: []float32{0.9, 0.1, 0.1, 0.9}}, 0},
		{onnxrt.Tensor{DType: onnxrt.FP32, Shape: []int64{1, 1}, Data: []float32{0.6}}, 1},
		{onnxrt.Tensor{DType: onnxrt.FP32, Shape: []int64{1}, Data: []float32{0.4}}, 0},
		{onnxrt.Tensor{DType: onnxrt.FP64, Shape: []int64{3}, Data: []float64{0, 0, 1}}, 2},
	} {
		if got, ok := top1(c.t); !ok || got != c.want {
			t.Errorf("top1(%v) = %d %v, want %d", c.t.Data, got, ok, c.want)
		}
	}
}
