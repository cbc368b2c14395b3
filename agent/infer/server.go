package infer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// Errors a caller maps to a status (see Status).
var (
	// ErrNoModel is returned for a model name that is not served.
	ErrNoModel = errors.New("model not served")
	// ErrLoading is returned for a model name the device is installing but does not serve yet.
	ErrLoading = errors.New("model is loading")
	// ErrVersion is returned when a request names a version other than the served one.
	ErrVersion = errors.New("model version not served")
	// ErrOutputName is returned when a request asks for an output the model does not have.
	ErrOutputName = errors.New("no such output")
)

// Policy is how a served model name treats its inputs.
type Policy struct {
	// AllowNonFinite lets NaN and Inf through to the model. Off by default: a NaN from a
	// broken sensor otherwise comes back as a confident-looking score, or as NaN outputs that
	// JSON cannot even carry.
	AllowNonFinite bool
}

// keepRetired is how many swapped-out versions keep their counters in Snapshot, so the last
// requests a version served before a switch are still reported.
const keepRetired = 8

// Server holds the models being served, by name.
type Server struct {
	mu      sync.RWMutex
	models  map[string]*Model
	policy  map[string]Policy
	loading map[string]bool
	shadows map[string]*shadow
	retired []*Model
	Agent   string // server version for GET /v2
	// MaxBody bounds a request body in bytes (0 = MaxRequestBytes); larger ones get 413.
	MaxBody int64
	bufs    sync.Pool               // request and response buffers of the HTTP front end
	preds   map[string]*predictions // model name -> recent predictions by request id (feedback.go)
	capture captureHook             // sample capture (capture.go)
}

// NewServer returns an empty server.
func NewServer(version string) *Server {
	return &Server{models: map[string]*Model{}, policy: map[string]Policy{}, loading: map[string]bool{},
		shadows: map[string]*shadow{}, Agent: version}
}

// Swap makes m the served version of its name and returns the previous one, which the caller
// closes (Close waits until the calls it was serving are done). m nil removes the model.
func (s *Server) Swap(name string, m *Model) (old *Model) {
	s.mu.Lock()
	old = s.models[name]
	if m == nil {
		delete(s.models, name)
	} else {
		s.models[name] = m
		delete(s.loading, name)
	}
	if old != nil && old != m {
		s.retired = append(s.retired, old)
		if len(s.retired) > keepRetired {
			s.retired = slices.Delete(s.retired, 0, len(s.retired)-keepRetired)
		}
	}
	s.mu.Unlock()
	return old
}

// SetLoading marks a model name as being installed: until a version is swapped in, requests for
// it get ErrLoading (HTTP 503, retry later) instead of ErrNoModel (404, wrong name).
func (s *Server) SetLoading(name string, loading bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if loading {
		s.loading[name] = true
	} else {
		delete(s.loading, name)
	}
}

// SetPolicy sets the input policy of a model name.
func (s *Server) SetPolicy(name string, p Policy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policy[name] = p
}

// Acquire returns the served model of a name and a release function. Acquisition happens under
// the read lock, so a swap (write lock) cannot close a model between lookup and use.
func (s *Server) Acquire(name string) (*Model, func(), bool) {
	m, _, ok := s.acquire(name)
	if !ok {
		return nil, nil, false
	}
	return m, m.release, true
}

func (s *Server) acquire(name string) (*Model, Policy, bool) {
	s.mu.RLock()
	m, ok := s.models[name]
	if ok {
		m.inflight.Add(1)
		m.nflight.Add(1)
	}
	p := s.policy[name]
	s.mu.RUnlock()
	return m, p, ok
}

func (m *Model) release() {
	m.nflight.Add(-1)
	m.inflight.Done()
}

func (s *Server) missing(name string) error {
	s.mu.RLock()
	loading := s.loading[name]
	s.mu.RUnlock()
	if loading {
		return fmt.Errorf("%w: %s is being installed on this device; retry shortly", ErrLoading, name)
	}
	return fmt.Errorf("%w: %s is not served on this device", ErrNoModel, name)
}

// Get returns the served model without holding it (for reports).
func (s *Server) Get(name string) (*Model, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.models[name]
	return m, ok
}

// Names lists served models, sorted.
func (s *Server) Names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.models))
	for n := range s.models {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Infer runs a request on the served model of name: the in-process call path. Inputs are checked
// against the model's input policy, then run; a shadow, when set, gets a copy afterwards.
func (s *Server) Infer(ctx context.Context, name string, in []onnxrt.Tensor) ([]onnxrt.Tensor, *Model, error) {
	m, p, ok := s.acquire(name)
	if !ok {
		return nil, nil, s.missing(name)
	}
	defer m.release()
	out, err := s.run(ctx, m, p, in)
	if err == nil {
		s.captureCall(m, "", in, out)
	}
	return out, m, err
}

func (s *Server) run(ctx context.Context, m *Model, p Policy, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	if !p.AllowNonFinite {
		if err := checkFinite(in); err != nil {
			m.met.requests.Add(1)
			m.met.fail(reasonInput)
			return nil, err
		}
	}
	out, err := m.Run(ctx, in)
	if err == nil {
		s.shadowCopy(m.Name, in, out)
	}
	return out, err
}

// Call runs a parsed OIP call on name (and version, when given) and returns the outputs the
// caller asked for, in the model's order: what the HTTP and local MQTT front ends share.
func (s *Server) Call(ctx context.Context, name, version string, c *oip.Call) ([]onnxrt.Tensor, *Model, error) {
	return s.call(ctx, name, version, c)
}

func (s *Server) call(ctx context.Context, name, version string, c *oip.Call) ([]onnxrt.Tensor, *Model, error) {
	m, p, ok := s.acquire(name)
	if !ok {
		return nil, nil, s.missing(name)
	}
	defer m.release()
	if version != "" && version != m.Version {
		return nil, m, fmt.Errorf("%w: %s version %s (serving %s)", ErrVersion, name, version, m.Version)
	}
	sc := m.Schema()
	for _, o := range c.Outputs {
		found := false
		for _, ti := range sc.Outputs {
			found = found || ti.Name == o.Name
		}
		if !found {
			names := make([]string, len(sc.Outputs))
			for i, ti := range sc.Outputs {
				names[i] = ti.Name
			}
			return nil, m, fmt.Errorf("%w: output %q; the model returns %q", ErrOutputName, o.Name, names)
		}
		if _, ok := o.Parameters["classification"]; ok {
			return nil, m, fmt.Errorf("%w: output %q: the classification extension is not supported", oip.ErrBadRequest, o.Name)
		}
	}
	out, err := s.run(ctx, m, p, c.Inputs)
	if err == nil {
		s.remember(m, c.ID, out)
		s.captureCall(m, c.ID, c.Inputs, out)
	}
	if err != nil || len(c.Outputs) == 0 {
		return out, m, err
	}
	sel := out[:0:0]
	for _, t := range out {
		for _, o := range c.Outputs {
			if o.Name == t.Name {
				sel = append(sel, t)
				break
			}
		}
	}
	return sel, m, nil
}

// checkFinite returns an input error naming the first input holding NaN or Inf.
func checkFinite(in []onnxrt.Tensor) error {
	for _, t := range in {
		bad := -1
		switch d := t.Data.(type) {
		case []float32:
			if !nonFinite32(d) {
				continue
			}
			for i, v := range d {
				// v-v is NaN for both NaN and ±Inf: one comparison per element.
				if v-v != 0 {
					bad = i
					break
				}
			}
		case []float64:
			for i, v := range d {
				if v-v != 0 {
					bad = i
					break
				}
			}
		case []uint16:
			if t.DType == onnxrt.FP16 {
				for i, v := range d {
					if v&0x7c00 == 0x7c00 {
						bad = i
						break
					}
				}
			}
		}
		if bad >= 0 {
			v, _ := onnxrt.Tensor{DType: t.DType, Data: sliceAt(t.Data, bad)}.Float64s()
			what := "NaN"
			if len(v) == 1 && math.IsInf(v[0], 0) {
				what = "Inf"
			}
			return &onnxrt.InputError{Input: t.Name, Reason: fmt.Sprintf("element %d is %s; this model accepts finite values only (its input policy can allow NaN/Inf)", bad, what)}
		}
	}
	return nil
}

func sliceAt(d any, i int) any {
	switch x := d.(type) {
	case []float32:
		return x[i : i+1]
	case []float64:
		return x[i : i+1]
	case []uint16:
		return x[i : i+1]
	}
	return nil
}
