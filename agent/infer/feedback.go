package infer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// KeepPredictions is how many recent predictions per model name are remembered for ground truth.
const KeepPredictions = 10000

// Errors of Feedback.
var (
	// ErrUnknownPrediction: no recent prediction of that model has the request id (never made,
	// made without an id, or older than the last KeepPredictions).
	ErrUnknownPrediction = errors.New("no recent prediction with that request id")
	// ErrBadLabel: the label is neither a class index nor one of the bundle's labels.
	ErrBadLabel = errors.New("bad label")
)

// Feedback is ground truth for an earlier prediction: the agent's POST /v1/feedback body and the
// payload of a control plane's feedback command.
type Feedback struct {
	Model string          `json:"model"`
	ID    string          `json:"id"`
	Label json.RawMessage `json:"label"` // a class index (number or numeric string) or a label of the bundle
}

// Outcome is what a label said about a prediction.
type Outcome struct {
	Model     string `json:"model"`
	Version   string `json:"version"`
	Bundle    string `json:"bundle"`
	Predicted int    `json:"predicted"`
	Label     int    `json:"label"`
	Correct   bool   `json:"correct"`
}

type prediction struct {
	id      string
	version string
	bundle  string
	class   int
	labels  []string
	observe func(correct bool)
}

// predictions is a bounded ring of one model name's recent predictions, indexed by request id.
type predictions struct {
	mu   sync.Mutex
	ring []prediction
	next int
	byID map[string]int
}

func (p *predictions) add(pr prediction) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ring == nil {
		p.ring = make([]prediction, 0, 64)
		p.byID = map[string]int{}
	}
	if len(p.ring) < KeepPredictions {
		p.ring = append(p.ring, pr)
		p.byID[pr.id] = len(p.ring) - 1
		return
	}
	if old := p.ring[p.next].id; p.byID[old] == p.next {
		delete(p.byID, old)
	}
	p.ring[p.next] = pr
	p.byID[pr.id] = p.next
	p.next = (p.next + 1) % KeepPredictions
}

func (p *predictions) get(id string) (prediction, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, ok := p.byID[id]
	if !ok {
		return prediction{}, false
	}
	return p.ring[i], true
}

// remember records the top-1 class of a call's first output under its request id.
func (s *Server) remember(m *Model, id string, out []onnxrt.Tensor) {
	if id == "" || len(out) == 0 {
		return
	}
	class, ok := top1(out[0])
	if !ok {
		return
	}
	s.mu.Lock()
	if s.preds == nil {
		s.preds = map[string]*predictions{}
	}
	p := s.preds[m.Name]
	if p == nil {
		p = &predictions{}
		s.preds[m.Name] = p
	}
	s.mu.Unlock()
	p.add(prediction{id: id, version: m.Version, bundle: m.Bundle, class: class, labels: m.Labels, observe: m.LabelObserver})
}

// top1 is the class of a tensor's first row: the argmax over the last axis, or for a single value
// (last axis of 1) class 1 when the value is over 0.5.
func top1(t onnxrt.Tensor) (int, bool) {
	n := t.Len()
	if n <= 0 {
		return 0, false
	}
	k := n
	if len(t.Shape) > 0 && t.Shape[len(t.Shape)-1] > 0 && int(t.Shape[len(t.Shape)-1]) <= n {
		k = int(t.Shape[len(t.Shape)-1])
	}
	var row []float64
	switch d := t.Data.(type) {
	case []float32:
		row = make([]float64, k)
		for i := range row {
			row[i] = float64(d[i])
		}
	case []float64:
		row = d[:k]
	default:
		v, err := t.Float64s()
		if err != nil || len(v) < k {
			return 0, false
		}
		row = v[:k]
	}
	if k == 1 {
		if row[0] > 0.5 {
			return 1, true
		}
		return 0, true
	}
	best := 0
	for i, v := range row {
		if v > row[best] {
			best = i
		}
	}
	return best, true
}

// parseLabel reads a label as a class index, or as one of the bundle's labels.
func parseLabel(raw json.RawMessage, labels []string) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, fmt.Errorf("%w: label is missing", ErrBadLabel)
	}
	var s string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("%w: %v", ErrBadLabel, err)
		}
		for i, l := range labels {
			if l == s {
				return i, nil
			}
		}
	} else {
		s = string(raw)
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		if raw[0] == '"' {
			return 0, fmt.Errorf("%w: %q is neither a class index nor one of the bundle's labels %q", ErrBadLabel, s, labels)
		}
		return 0, fmt.Errorf("%w: label %s must be a non-negative class index or a label string", ErrBadLabel, raw)
	}
	return n, nil
}

// Feedback attaches ground truth to an earlier prediction of a model, by its request id, and
// reports the outcome to the predicting version's LabelObserver.
func (s *Server) Feedback(f Feedback) (Outcome, error) {
	if f.Model == "" || f.ID == "" {
		return Outcome{}, fmt.Errorf("%w: model and id are required", ErrBadLabel)
	}
	s.mu.RLock()
	p := s.preds[f.Model]
	s.mu.RUnlock()
	var pr prediction
	ok := false
	if p != nil {
		pr, ok = p.get(f.ID)
	}
	if !ok {
		return Outcome{}, fmt.Errorf("%w: model %s, id %q (the last %d predictions with an id are kept)", ErrUnknownPrediction, f.Model, f.ID, KeepPredictions)
	}
	label, err := parseLabel(f.Label, pr.labels)
	if err != nil {
		return Outcome{}, err
	}
	o := Outcome{Model: f.Model, Version: pr.version, Bundle: pr.bundle, Predicted: pr.class, Label: label, Correct: label == pr.class}
	if pr.observe != nil {
		pr.observe(o.Correct)
	}
	return o, nil
}

// feedback serves POST /v1/feedback: 204, 404 for an unknown id, 400 for a bad body.
func (s *Server) feedback(w http.ResponseWriter, r *http.Request) {
	var f Feedback
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		writeErr(w, http.StatusBadRequest, `body must be JSON {"model": NAME, "id": REQUEST_ID, "label": CLASS_INDEX_OR_LABEL}: `+err.Error())
		return
	}
	_, err := s.Feedback(f)
	switch {
	case errors.Is(err, ErrUnknownPrediction):
		writeErr(w, http.StatusNotFound, err.Error())
	case err != nil:
		writeErr(w, http.StatusBadRequest, err.Error())
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// readLabels reads a labels file: one label a line, the line's number its class index.
func readLabels(b []byte) []string {
	text := strings.TrimRight(string(b), "\r\n")
	if text == "" {
		return nil
	}
	out := strings.Split(text, "\n")
	for i := range out {
		out[i] = strings.TrimSpace(out[i])
	}
	return out
}
