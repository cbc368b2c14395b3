// Package infer serves a device's models: one ONNX Runtime session per model version, swapped
// under load without failing a request (in-flight calls finish on the old session, new calls go to
// the new one, the old one closes after it drains), and the Open Inference Protocol (v2) REST API
// for the applications next to the device.
package infer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

// Model is one loaded model version.
type Model struct {
	Name     string
	Version  string
	Bundle   string
	Manifest *bundle.Manifest
	sess     *onnxrt.Session

	inflight sync.WaitGroup
	closed   atomic.Bool
	// FaultErrorRate makes that fraction of calls fail (fault injection for tests and
	// simulations; zero in production).
	FaultErrorRate float64

	requests, errors atomic.Int64
}

// Load opens the model file of an installed bundle in dir.
func Load(dir, id string, m *bundle.Manifest, opts onnxrt.Options) (*Model, error) {
	f := m.FileByRole(bundle.RoleModel)
	if f == nil {
		return nil, fmt.Errorf("bundle %s has no model file", id)
	}
	b, err := os.ReadFile(filepath.Join(dir, f.Path))
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	sess, err := onnxrt.NewSession(b, opts)
	if err != nil {
		return nil, fmt.Errorf("load %s@%s in ONNX Runtime: %w", m.Name, m.Version, err)
	}
	return &Model{Name: m.Name, Version: m.Version, Bundle: id, Manifest: m, sess: sess}, nil
}

// ErrInjected is the error a fault-injected call returns.
var ErrInjected = errors.New("injected inference fault")

// Run runs the model directly (the smoke test uses this before the model is served).
func (m *Model) Run(ctx context.Context, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	m.requests.Add(1)
	if m.FaultErrorRate > 0 && rand.Float64() < m.FaultErrorRate {
		m.errors.Add(1)
		return nil, ErrInjected
	}
	out, err := m.sess.Run(ctx, in)
	if err != nil {
		var ie *onnxrt.InputError
		if !errors.As(err, &ie) {
			m.errors.Add(1)
		}
	}
	return out, err
}

// RunUnfaulted runs the session without injected faults and without counting: the smoke test
// judges the model, not the simulated field conditions.
func (m *Model) RunUnfaulted(ctx context.Context, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	return m.sess.Run(ctx, in)
}

// Schema is the model's inputs and outputs as ONNX Runtime sees them.
func (m *Model) Schema() onnxrt.Schema { return m.sess.Schema() }

// Provider is the execution provider the session runs on.
func (m *Model) Provider() string { return m.sess.Provider() }

// Counts returns requests and runtime errors (input errors are the caller's, not the model's).
func (m *Model) Counts() (requests, errs int64) { return m.requests.Load(), m.errors.Load() }

// Close waits for in-flight calls and releases the session.
func (m *Model) Close() {
	if m.closed.Swap(true) {
		return
	}
	m.inflight.Wait()
	m.sess.Close()
}

// Server holds the models being served, by name.
type Server struct {
	mu     sync.RWMutex
	models map[string]*Model
	Agent  string // server name for GET /v2
}

// NewServer returns an empty server.
func NewServer(version string) *Server {
	return &Server{models: map[string]*Model{}, Agent: version}
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
	}
	s.mu.Unlock()
	return old
}

// Acquire returns the served model of a name and a release function. Acquisition happens under
// the read lock, so a swap (write lock) cannot close a model between lookup and use.
func (s *Server) Acquire(name string) (*Model, func(), bool) {
	s.mu.RLock()
	m, ok := s.models[name]
	if ok {
		m.inflight.Add(1)
	}
	s.mu.RUnlock()
	if !ok {
		return nil, nil, false
	}
	return m, m.inflight.Done, true
}

// Get returns the served model without holding it (for reports).
func (s *Server) Get(name string) (*Model, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.models[name]
	return m, ok
}

// Names lists served models.
func (s *Server) Names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.models))
	for n := range s.models {
		out = append(out, n)
	}
	return out
}

// Infer runs a request on the served model of name.
func (s *Server) Infer(ctx context.Context, name string, in []onnxrt.Tensor) ([]onnxrt.Tensor, *Model, error) {
	m, release, ok := s.Acquire(name)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s", ErrNoModel, name)
	}
	defer release()
	out, err := m.Run(ctx, in)
	return out, m, err
}

// ErrNoModel is returned for a model name that is not served.
var ErrNoModel = errors.New("model not served")
