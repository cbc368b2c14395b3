// Package infer serves a device's models: ONNX Runtime sessions per model version, swapped
// under load without failing a request (in-flight calls finish on the old session, new calls go to
// the new one, the old one closes after it drains), the Open Inference Protocol (v2) REST API for
// the applications next to the device (JSON and Triton's binary tensor extension), optional
// dynamic batching, shadow serving, and per-version metrics.
//
// It must not know about MQTT sessions with the control plane, bundles' transfer or trust: it is
// handed verified manifests and installed files. Only internal/onnxrt touches ONNX Runtime.
package infer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

// LoadOptions are the serving options of a model version beyond ONNX Runtime's session options.
type LoadOptions struct {
	// Sessions is how many ORT sessions serve the version (0 = 1). ORT runs concurrent calls on
	// one session, so more sessions only help where a model's kernels serialize; each costs a
	// copy of the weights, which on an edge device is usually the scarcer resource.
	Sessions int
	// Concurrency bounds the runs in progress at once (0 = the number of CPU cores); callers
	// beyond it queue, and the wait is measured (queue_wait). Without a bound, 16 callers on a
	// 2-core device would each start a run and all finish late.
	Concurrency int
	// MaxBatch > 1 turns on dynamic batching for models whose inputs and outputs all have a
	// dynamic first dimension: requests queued while every run slot is busy are stacked into one
	// run of up to MaxBatch rows and split back. An idle model runs a request at once.
	MaxBatch int
	// MaxWait bounds how long a queued request waits for others to join its batch (default 2ms).
	MaxWait time.Duration
	// Open, when set, opens the sessions of a version in place of onnxrt.NewSession and returns
	// how to give each back (Close calls that instead of closing it). A device simulator shares
	// one session per bundle among its simulated devices through it (agent/sim); nil on devices.
	Open SessionOpener
}

// SessionOpener opens session number index of bundle id's model and returns it with its release.
type SessionOpener func(id string, index int, model []byte, opts onnxrt.Options) (*onnxrt.Session, func(), error)

var defaultLoad atomic.Pointer[LoadOptions]

// SetDefaults sets the LoadOptions that Load uses (the agent's --infer-* flags). The install
// lifecycle calls Load without them, so they are process-wide, like ORT's own environment.
func SetDefaults(o LoadOptions) { defaultLoad.Store(&o) }

// Defaults returns the LoadOptions Load uses.
func Defaults() LoadOptions {
	if p := defaultLoad.Load(); p != nil {
		return *p
	}
	return LoadOptions{}
}

// Model is one loaded model version.
type Model struct {
	Name     string
	Version  string
	Bundle   string
	Manifest *bundle.Manifest
	sess     *onnxrt.Session // sessions[0]: schema and provider
	pipe     onnxrt.Pipeline // the bundle's pre- and post-processing graphs, if any

	sessions []*onnxrt.Session
	releases []func() // from LoadOptions.Open: give the sessions back instead of closing them
	slots    chan int // run slots; a slot's number picks its session
	batch    *batcher // nil without dynamic batching
	met      *metrics

	inflight sync.WaitGroup
	nflight  atomic.Int64
	closed   atomic.Bool
	// FaultErrorRate makes that fraction of calls fail (fault injection for tests and
	// simulations; zero in production).
	FaultErrorRate float64
	// Observer, when set before the model is served, sees every call (the agent's telemetry
	// windows: latency, errors, and the inputs and outputs its drift profile samples).
	Observer func(d time.Duration, err error, in, out []onnxrt.Tensor)
	// LabelObserver, when set before the model is served, sees the outcome of every ground-truth
	// label given for one of this version's predictions (POST /v1/feedback).
	LabelObserver func(correct bool)
	// Labels are the bundle's class labels (its labels file), index = class; feedback may name them.
	Labels []string

	requests, errors atomic.Int64
}

// Load opens the model file of an installed bundle in dir with the process defaults (SetDefaults).
func Load(dir, id string, m *bundle.Manifest, opts onnxrt.Options) (*Model, error) {
	return LoadWith(dir, id, m, opts, Defaults())
}

// LoadWith opens the model file of an installed bundle in dir.
func LoadWith(dir, id string, m *bundle.Manifest, opts onnxrt.Options, lo LoadOptions) (*Model, error) {
	f := m.FileByRole(bundle.RoleModel)
	if f == nil {
		return nil, fmt.Errorf("bundle %s has no model file", id)
	}
	b, err := os.ReadFile(filepath.Join(dir, f.Path))
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	var pipe onnxrt.Pipeline
	for _, st := range []struct {
		role bundle.Role
		sess **onnxrt.Session
	}{{bundle.RolePre, &pipe.Pre}, {bundle.RolePost, &pipe.Post}} {
		pf := m.FileByRole(st.role)
		if pf == nil {
			continue
		}
		pb, err := os.ReadFile(filepath.Join(dir, pf.Path))
		if err == nil {
			*st.sess, err = onnxrt.NewSession(pb, onnxrt.Options{IntraOpThreads: opts.IntraOpThreads})
		}
		if err != nil {
			pipe.Close()
			return nil, fmt.Errorf("load %s graph of %s@%s: %w", st.role, m.Name, m.Version, err)
		}
	}
	if pipe.Pre != nil || pipe.Post != nil {
		// Batching stacks rows for the model alone; with graphs around it every call runs whole.
		lo.MaxBatch = 0
	}
	mod, err := New(b, id, m, opts, lo)
	if err != nil {
		pipe.Close()
		return nil, err
	}
	if err := pipe.Check(mod.sess.Schema()); err != nil {
		pipe.Close()
		mod.Close()
		return nil, err
	}
	mod.pipe = pipe
	if lf := m.FileByRole(bundle.RoleLabels); lf != nil {
		if lb, err := os.ReadFile(filepath.Join(dir, lf.Path)); err == nil {
			mod.Labels = readLabels(lb)
		}
	}
	return mod, nil
}

// New loads a model from its bytes.
func New(model []byte, id string, m *bundle.Manifest, opts onnxrt.Options, lo LoadOptions) (*Model, error) {
	nsess := max(lo.Sessions, 1)
	conc := lo.Concurrency
	if conc <= 0 {
		conc = runtime.NumCPU()
	}
	mod := &Model{Name: m.Name, Version: m.Version, Bundle: id, Manifest: m, slots: make(chan int, conc)}
	for i := range nsess {
		var sess *onnxrt.Session
		var err error
		if lo.Open != nil {
			var release func()
			sess, release, err = lo.Open(id, i, model, opts)
			if err == nil {
				mod.releases = append(mod.releases, release)
			}
		} else {
			sess, err = onnxrt.NewSession(model, opts)
		}
		if err != nil {
			mod.closeSessions()
			return nil, fmt.Errorf("load %s@%s in ONNX Runtime (session %d of %d): %w", m.Name, m.Version, i+1, nsess, err)
		}
		mod.sessions = append(mod.sessions, sess)
	}
	mod.sess = mod.sessions[0]
	for i := range conc {
		mod.slots <- i
	}
	mod.met = newMetrics()
	if r := mod.sess.FallbackReason(); r != "" {
		// Loud on purpose: a device expected to run on its GPU is now several times slower.
		slog.Warn("execution provider fell back", "model", m.Name, "version", m.Version,
			"requested", opts.ExecutionProvider, "provider", mod.sess.Provider(), "reason", r)
	}
	if lo.MaxBatch > 1 && batchable(mod.sess.Schema()) {
		wait := lo.MaxWait
		if wait <= 0 {
			wait = 2 * time.Millisecond
		}
		mod.batch = newBatcher(mod, lo.MaxBatch, wait)
	}
	return mod, nil
}

// ErrInjected is the error a fault-injected call returns.
var ErrInjected = errors.New("injected inference fault")

// Run runs the model directly (the smoke test uses this before the model is served).
func (m *Model) Run(ctx context.Context, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	start := time.Now()
	m.requests.Add(1)
	m.met.requests.Add(1)
	if m.FaultErrorRate > 0 && rand.Float64() < m.FaultErrorRate {
		m.errors.Add(1)
		m.met.fail(reasonInjected)
		if m.Observer != nil {
			m.Observer(time.Since(start), ErrInjected, in, nil)
		}
		return nil, ErrInjected
	}
	var out []onnxrt.Tensor
	var err error
	if m.batch != nil {
		out, err = m.batch.run(ctx, in)
	} else {
		out, err = m.direct(ctx, in)
	}
	m.met.latency.Observe(time.Since(start))
	if err != nil {
		r := reasonOf(err)
		if r != reasonInput {
			m.errors.Add(1)
		}
		m.met.fail(r)
	}
	if m.Observer != nil {
		m.Observer(time.Since(start), err, in, out)
	}
	return out, err
}

// direct runs on a free session slot, waiting for one if all are busy.
func (m *Model) direct(ctx context.Context, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	slot, err := m.slot(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { m.slots <- slot }()
	return m.pipe.Run(ctx, m.sessions[slot%len(m.sessions)], in)
}

func (m *Model) slot(ctx context.Context) (int, error) {
	select {
	case s := <-m.slots:
		m.met.queueWait.Observe(0)
		return s, nil
	default:
	}
	t0 := time.Now()
	select {
	case s := <-m.slots:
		m.met.queueWait.Observe(time.Since(t0))
		return s, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// RunUnfaulted runs the session without injected faults and without counting: the smoke test
// judges the model, not the simulated field conditions.
func (m *Model) RunUnfaulted(ctx context.Context, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	return m.pipe.Run(ctx, m.sess, in)
}

// Schema is what callers send and get: the pre-processing graph's inputs (else the model's) and
// the post-processing graph's outputs (else the model's).
func (m *Model) Schema() onnxrt.Schema { return m.pipe.Schema(m.sess.Schema()) }

// Provider is the execution provider the session runs on.
func (m *Model) Provider() string { return m.sess.Provider() }

// FallbackReason says why the requested execution provider is not the one in use ("" if it is).
func (m *Model) FallbackReason() string { return m.sess.FallbackReason() }

// Batching reports whether dynamic batching is on for this version.
func (m *Model) Batching() bool { return m.batch != nil }

// Counts returns requests and runtime errors (input errors are the caller's, not the model's).
func (m *Model) Counts() (requests, errs int64) { return m.requests.Load(), m.errors.Load() }

// InFlight is the number of calls holding this version (acquired and not yet released).
func (m *Model) InFlight() int64 { return m.nflight.Load() }

// Close waits for in-flight calls and releases the sessions.
func (m *Model) Close() {
	if m.closed.Swap(true) {
		return
	}
	m.inflight.Wait()
	if m.batch != nil {
		m.batch.close()
	}
	m.closeSessions()
	m.pipe.Close()
}

func (m *Model) closeSessions() {
	if m.releases != nil {
		for _, release := range m.releases {
			release()
		}
		return
	}
	for _, s := range m.sessions {
		s.Close()
	}
}
