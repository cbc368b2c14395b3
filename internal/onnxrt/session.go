package onnxrt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	ort "github.com/yalue/onnxruntime_go"
)

// Execution providers a session can ask for.
const (
	ProviderCPU      = "cpu"
	ProviderCUDA     = "cuda"
	ProviderTensorRT = "tensorrt"
)

// GraphOptLevel selects ONNX Runtime's graph optimizations. The zero value is ORT's default,
// which is OptAll.
type GraphOptLevel int

const (
	OptDefault GraphOptLevel = iota
	OptDisabled
	OptBasic
	OptExtended
	OptAll
)

// Options configure a Session. The zero value runs on CPU with ONNX Runtime's defaults.
type Options struct {
	// IntraOpThreads and InterOpThreads size ORT's thread pools; 0 leaves ORT's default (one intra-op
	// thread per physical core). On a shared edge device, set IntraOpThreads to what the model may use.
	IntraOpThreads int
	InterOpThreads int
	GraphOptLevel  GraphOptLevel
	// ExecutionProvider is "cpu" (or ""), "cuda" or "tensorrt". A GPU provider that cannot be set up
	// falls back to the next one (tensorrt -> cuda -> cpu) unless RequireProvider is set; see
	// Session.Provider and Session.FallbackReason.
	ExecutionProvider string
	// DeviceID selects the GPU for cuda and tensorrt.
	DeviceID int
	// RequireProvider turns a fallback into an error, for callers that must prove a variant runs
	// on its provider (e.g. a bundle built for tensorrt).
	RequireProvider bool
	// ProfilePath, when set, enables ORT's profiler. It is a path prefix: the profile is written to
	// <ProfilePath>_<pid>_<n>_<timestamp>.json, where n makes sessions of one process distinct,
	// and Session.EndProfiling returns its exact path.
	ProfilePath string
}

// ErrClosed is returned by Run on a session that was closed (or whose profiling was ended).
var ErrClosed = errors.New("onnxrt: session closed")

// Session is a loaded model. Run is safe for concurrent use: ONNX Runtime allows concurrent Run
// calls on one session (microsoft/onnxruntime#114), onnxruntime_go's DynamicAdvancedSession keeps
// no per-call state (yalue/onnxruntime_go#79; its AdvancedSession does, which is why we do not use
// it), each call here uses its own input and output values, and Close waits for calls in flight.
type Session struct {
	schema   Schema
	provider string
	fallback string
	// scalarOut marks rank-0 outputs, which Run pre-allocates (see emptyScalar).
	scalarOut []bool
	// halfOut says, for each FP16 output, how Run sizes it (see planHalfOutputs).
	halfOut [][]dimSource
	profile string // the prefix handed to ORT, "" when profiling is off

	mu     sync.RWMutex // Run holds it shared, Close exclusively
	ort    *ort.DynamicAdvancedSession
	closed bool
}

var profileSeq atomic.Int64

// NewSession loads a model. It reads the schema first (see Inspect) and refuses models whose
// inputs or outputs a session cannot exchange, so that such a model fails at install time, not
// on its first request. Init must have succeeded.
func NewSession(model []byte, opts Options) (*Session, error) {
	schema, err := Inspect(model)
	if err != nil {
		return nil, err
	}
	if err := schema.Runnable(); err != nil {
		return nil, err
	}
	chain, err := providerChain(opts.ExecutionProvider)
	if err != nil {
		return nil, err
	}
	s := &Session{schema: schema, scalarOut: make([]bool, len(schema.Outputs))}
	for i, o := range schema.Outputs {
		s.scalarOut[i] = o.Shape != nil && len(o.Shape) == 0
	}
	if s.halfOut, err = planHalfOutputs(schema); err != nil {
		return nil, err
	}
	if opts.ProfilePath != "" {
		if err := os.MkdirAll(filepath.Dir(opts.ProfilePath), 0o755); err != nil {
			return nil, fmt.Errorf("onnxrt: profile folder: %w", err)
		}
		s.profile = fmt.Sprintf("%s_%d_%d", opts.ProfilePath, os.Getpid(), profileSeq.Add(1))
	}
	var reasons []string
	for i, provider := range chain {
		sess, err := s.create(model, opts, provider)
		if err == nil {
			s.ort, s.provider = sess, provider
			s.fallback = strings.Join(reasons, "; ")
			return s, nil
		}
		last := i == len(chain)-1
		if last || opts.RequireProvider {
			return nil, fmt.Errorf("onnxrt: new session on %s: %w", provider, err)
		}
		reasons = append(reasons, fmt.Sprintf("%s unavailable: %v", provider, err))
	}
	panic("unreachable: the provider chain ends with cpu")
}

func providerChain(p string) ([]string, error) {
	switch strings.ToLower(p) {
	case "", ProviderCPU:
		return []string{ProviderCPU}, nil
	case ProviderCUDA:
		return []string{ProviderCUDA, ProviderCPU}, nil
	case ProviderTensorRT:
		return []string{ProviderTensorRT, ProviderCUDA, ProviderCPU}, nil
	}
	return nil, fmt.Errorf("onnxrt: unknown execution provider %q (want cpu, cuda or tensorrt)", p)
}

func (s *Session) create(model []byte, opts Options, provider string) (*ort.DynamicAdvancedSession, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	defer so.Destroy()
	if err := so.SetIntraOpNumThreads(opts.IntraOpThreads); err != nil {
		return nil, fmt.Errorf("intra-op threads: %w", err)
	}
	if err := so.SetInterOpNumThreads(opts.InterOpThreads); err != nil {
		return nil, fmt.Errorf("inter-op threads: %w", err)
	}
	if opts.GraphOptLevel != OptDefault {
		lvl, ok := map[GraphOptLevel]ort.GraphOptimizationLevel{
			OptDisabled: ort.GraphOptimizationLevelDisableAll, OptBasic: ort.GraphOptimizationLevelEnableBasic,
			OptExtended: ort.GraphOptimizationLevelEnableExtended, OptAll: ort.GraphOptimizationLevelEnableAll,
		}[opts.GraphOptLevel]
		if !ok {
			return nil, fmt.Errorf("unknown graph optimization level %d", opts.GraphOptLevel)
		}
		if err := so.SetGraphOptimizationLevel(lvl); err != nil {
			return nil, fmt.Errorf("graph optimization level: %w", err)
		}
	}
	if s.profile != "" {
		if err := so.EnableProfiling(s.profile); err != nil {
			return nil, fmt.Errorf("enable profiling: %w", err)
		}
	}
	if err := appendProvider(so, provider, opts.DeviceID); err != nil {
		return nil, err
	}
	in := make([]string, len(s.schema.Inputs))
	for i, ti := range s.schema.Inputs {
		in[i] = ti.Name
	}
	out := make([]string, len(s.schema.Outputs))
	for i, ti := range s.schema.Outputs {
		out[i] = ti.Name
	}
	return ort.NewDynamicAdvancedSessionWithONNXData(model, in, out, so)
}

// appendProvider adds provider and, for tensorrt, cuda behind it, so that nodes TensorRT cannot
// take still run on the GPU. CPU needs nothing: ORT always places what is left on CPU.
func appendProvider(so *ort.SessionOptions, provider string, device int) error {
	dev := map[string]string{"device_id": strconv.Itoa(device)}
	if provider == ProviderTensorRT {
		o, err := ort.NewTensorRTProviderOptions()
		if err != nil {
			return fmt.Errorf("tensorrt options: %w", err)
		}
		defer o.Destroy()
		if err := o.Update(dev); err != nil {
			return fmt.Errorf("tensorrt options: %w", err)
		}
		if err := so.AppendExecutionProviderTensorRT(o); err != nil {
			return fmt.Errorf("append tensorrt: %w", err)
		}
	}
	if provider == ProviderTensorRT || provider == ProviderCUDA {
		o, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return fmt.Errorf("cuda options: %w", err)
		}
		defer o.Destroy()
		if err := o.Update(dev); err != nil {
			return fmt.Errorf("cuda options: %w", err)
		}
		if err := so.AppendExecutionProviderCUDA(o); err != nil {
			return fmt.Errorf("append cuda: %w", err)
		}
	}
	return nil
}

// Schema returns the model's inputs and outputs.
func (s *Session) Schema() Schema { return s.schema }

// Provider returns the execution provider the session actually uses: "cpu", "cuda" or "tensorrt".
// Nodes a GPU provider cannot run still run on CPU inside ORT; the profile shows where.
func (s *Session) Provider() string { return s.provider }

// FallbackReason says why the requested provider is not the one in use, or "".
func (s *Session) FallbackReason() string { return s.fallback }

// Run validates inputs against the schema, then runs the model and returns its outputs in the
// schema's order. An input problem is an *InputError and never reaches ONNX Runtime. Inputs may
// be given in any order; their data is read, not copied, and must not change during the call.
// Cancelling ctx stops a run in progress at ORT's next check.
func (s *Session) Run(ctx context.Context, inputs []Tensor) ([]Tensor, error) {
	ordered, err := orderInputs(s.schema, inputs)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}

	in := make([]ort.Value, len(ordered))
	defer destroyAll(in)
	for i, t := range ordered {
		if in[i], err = toValue(t); err != nil {
			return nil, &InputError{Input: t.Name, Reason: err.Error()}
		}
	}
	out := make([]ort.Value, len(s.schema.Outputs))
	defer destroyAll(out)
	for i, scalar := range s.scalarOut {
		if scalar {
			if out[i], err = emptyScalar(s.schema.Outputs[i].DType); err != nil {
				return nil, fmt.Errorf("onnxrt: output %q: %w", s.schema.Outputs[i].Name, err)
			}
		}
	}
	for i, plan := range s.halfOut {
		if plan != nil && out[i] == nil {
			shape := make(ort.Shape, len(plan))
			for j, src := range plan {
				shape[j] = src.size(ordered)
			}
			if out[i], err = ort.NewCustomDataTensor(shape, make([]byte, 2*shape.FlattenedSize()), ort.TensorElementDataTypeFloat16); err != nil {
				return nil, fmt.Errorf("onnxrt: output %q: %w", s.schema.Outputs[i].Name, err)
			}
		}
	}

	if ctx.Done() == nil {
		err = s.ort.Run(in, out)
	} else {
		err = s.runCancellable(ctx, in, out)
	}
	// ORT reads the Go-owned input buffers through C pointers the GC cannot see.
	runtime.KeepAlive(ordered)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("onnxrt: run: %w (%v)", ctxErr, err)
		}
		return nil, fmt.Errorf("onnxrt: run: %w", err)
	}
	res := make([]Tensor, len(out))
	for i, v := range out {
		if v == nil {
			return nil, fmt.Errorf("onnxrt: run: output %q missing", s.schema.Outputs[i].Name)
		}
		if res[i], err = fromValue(s.schema.Outputs[i].Name, v); err != nil {
			return nil, fmt.Errorf("onnxrt: run: %w", err)
		}
	}
	return res, nil
}

// destroyAll releases values, skipping nil ones, including the typed nil pointers the binding
// leaves in an output slot when it fails to convert that output.
func destroyAll(vs []ort.Value) {
	for _, v := range vs {
		if v != nil && !reflect.ValueOf(v).IsNil() {
			v.Destroy()
		}
	}
}

// runCancellable runs with ORT run options whose terminate flag is raised when ctx ends.
func (s *Session) runCancellable(ctx context.Context, in, out []ort.Value) error {
	ro, err := ort.NewRunOptions()
	if err != nil {
		return fmt.Errorf("run options: %w", err)
	}
	terminated := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(terminated)
		ro.Terminate()
	})
	err = s.ort.RunWithOptions(in, out, ro)
	if !stop() {
		<-terminated // Terminate may still be using ro
	}
	ro.Destroy()
	return err
}

// Close releases the session after runs in flight finish. It is idempotent. With profiling on,
// it also writes the profile (see EndProfiling).
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeLocked()
}

func (s *Session) closeLocked() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.ort.Destroy(); err != nil {
		return fmt.Errorf("onnxrt: close session: %w", err)
	}
	return nil
}

// ErrNotProfiling is returned by EndProfiling on a session created without Options.ProfilePath.
var ErrNotProfiling = errors.New("onnxrt: profiling is not enabled for this session")

// EndProfiling writes ORT's profile and returns its path. onnxruntime_go exposes no
// SessionEndProfiling, and ORT writes the profile when the session is released, so this closes the
// session: profile a dedicated session (as the bundle builder does to prove which kernels ran),
// not one that serves traffic.
func (s *Session) EndProfiling() (string, error) {
	if s.profile == "" {
		return "", ErrNotProfiling
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.closeLocked(); err != nil {
		return "", err
	}
	matches, err := filepath.Glob(s.profile + "_*.json")
	if err != nil {
		return "", fmt.Errorf("onnxrt: find profile: %w", err)
	}
	if len(matches) == 0 {
		return "", fmt.Errorf("onnxrt: ORT wrote no profile at %s_*.json", s.profile)
	}
	// One session writes one file; the name sorts by its timestamp if ever there were more.
	slices.Sort(matches)
	return matches[len(matches)-1], nil
}

// dimSource is where an output dimension's size comes from: a fixed size, or the size of
// dimension dim of input in, when both carry the same symbolic name.
type dimSource struct {
	fixed   int64
	in, dim int
}

func (d dimSource) size(inputs []Tensor) int64 {
	if d.fixed > 0 {
		return d.fixed
	}
	return inputs[d.in].Shape[d.dim]
}

// planHalfOutputs works out how to size each FP16 output before the run. onnxruntime_go
// v1.27.0 cannot return an FP16 output that ORT allocates (it copies one byte per element and
// then fails), but it can fill one we allocate. That needs the shape up front: fixed dimensions,
// or symbolic ones that an input shares by name ("batch" in and out). A model with any other
// FP16 output is refused here rather than failing on every request.
func planHalfOutputs(s Schema) ([][]dimSource, error) {
	var plans [][]dimSource
	for i, o := range s.Outputs {
		if o.DType != FP16 {
			continue
		}
		if plans == nil {
			plans = make([][]dimSource, len(s.Outputs))
		}
		if len(o.Shape) == 0 {
			return nil, fmt.Errorf("onnxrt: FP16 output %s: onnxruntime_go cannot return FP16 outputs of unknown rank or rank 0", o)
		}
		plan := make([]dimSource, len(o.Shape))
		for j, d := range o.Shape {
			if d > 0 {
				plan[j] = dimSource{fixed: d}
				continue
			}
			found := false
			if j < len(o.DimNames) && o.DimNames[j] != "" {
			search:
				for k, in := range s.Inputs {
					for l, name := range in.DimNames {
						if name == o.DimNames[j] {
							plan[j], found = dimSource{in: k, dim: l}, true
							break search
						}
					}
				}
			}
			if !found {
				return nil, fmt.Errorf("onnxrt: FP16 output %s: dimension %d is dynamic and shares no name with an input dimension; "+
					"onnxruntime_go cannot return such an output (export it as FP32, or give it a fixed or input-named size)", o, j)
			}
		}
		plans[i] = plan
	}
	return plans, nil
}
