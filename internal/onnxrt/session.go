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
	// TensorRTCacheDir, with the tensorrt provider, is where TensorRT keeps the engines it builds
	// and its timing cache (see TensorRTProviderOptions). Building an engine takes seconds to
	// minutes; with a cache, a session of the same model on the same device loads the engine
	// instead. The agent points it into the bundle's slot folder, so that an A/B revert finds its
	// engine. Empty: no cache, engines are built for every session.
	TensorRTCacheDir string
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
	// outPlan says, for each output whose shape the schema fixes, how Run sizes it (see
	// planOutputs); nil where ORT allocates the output.
	outPlan [][]dimSource
	// noPreOut is set once a run failed with optional pre-allocated outputs and worked without:
	// the model's outputs do not keep their schema shapes.
	noPreOut atomic.Bool
	profile  string // the prefix handed to ORT, "" when profiling is off

	mu     sync.RWMutex // Run holds it shared, Close exclusively
	ort    *ort.DynamicAdvancedSession
	closed bool

	freeMu sync.Mutex
	free   []*runState // idle run states, for reuse by calls with the same input shapes
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
	s := &Session{schema: schema}
	if s.outPlan, err = planOutputs(schema); err != nil {
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
	if err := appendProvider(so, provider, opts); err != nil {
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
func appendProvider(so *ort.SessionOptions, provider string, opts Options) error {
	dev := map[string]string{"device_id": strconv.Itoa(opts.DeviceID)}
	if provider == ProviderTensorRT {
		o, err := ort.NewTensorRTProviderOptions()
		if err != nil {
			return fmt.Errorf("tensorrt options: %w", err)
		}
		defer o.Destroy()
		if err := o.Update(TensorRTProviderOptions(opts)); err != nil {
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

// TensorRTProviderOptions returns the options NewSession gives ONNX Runtime's TensorRT provider
// (OrtTensorRTProviderOptionsV2 keys): the device, and with TensorRTCacheDir the engine and
// timing caches in that folder. TensorRT builds an engine on the first run of each input shape
// profile, not when the session is created; the caller runs a warm-up inference before serving
// (the agent's install step "loading" does, before the smoke test's deadline starts).
func TensorRTProviderOptions(opts Options) map[string]string {
	m := map[string]string{"device_id": strconv.Itoa(opts.DeviceID)}
	if opts.TensorRTCacheDir != "" {
		m["trt_engine_cache_enable"] = "1"
		m["trt_engine_cache_path"] = opts.TensorRTCacheDir
		m["trt_timing_cache_enable"] = "1"
		m["trt_timing_cache_path"] = opts.TensorRTCacheDir
	}
	return m
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
// be given in any order; their data is read during the call and must not change during it; the
// outputs belong to the caller. Cancelling ctx stops a run in progress at ORT's next check.
//
// The per-call cost over the bare binding is kept to a few small allocations: a call takes a
// runState (ORT values made for its input shapes, see runState) from the session's free list, so
// a stream of same-shaped calls creates and releases no ORT values.
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
	st, err := s.getState(ordered)
	if err != nil {
		return nil, err
	}
	defer s.putState(st)

	wrapped := false
	for i, t := range ordered {
		if st.in[i] != nil {
			copyData(st.inBuf[i], t.Data)
			st.args[i] = st.in[i]
			continue
		}
		// A large or scalar input: wrap the caller's memory (no copy) for this call only.
		v, err := toValue(t)
		if err != nil {
			st.releaseWrapped(i)
			return nil, &InputError{Input: t.Name, Reason: err.Error()}
		}
		st.args[i], wrapped = v, true
	}
	copy(st.outArgs, st.out)
	err = s.runWith(ctx, st, st.args, st.outArgs)
	if err != nil && st.optOut && ctx.Err() == nil {
		// A pre-allocated output whose schema shape the model does not keep fails the run. Try
		// again with ORT allocating those outputs; if that works, stop pre-allocating them.
		destroyAll(allocated(st.outArgs, st.out))
		st.dropOptional()
		copy(st.outArgs, st.out)
		if err = s.runWith(ctx, st, st.args, st.outArgs); err == nil {
			s.noPreOut.Store(true)
		}
	}
	// ORT reads the Go-owned input buffers through C pointers the GC cannot see.
	runtime.KeepAlive(ordered)
	if wrapped {
		st.releaseWrapped(len(ordered))
	}
	if err != nil {
		destroyAll(allocated(st.outArgs, st.out))
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("onnxrt: run: %w (%v)", ctxErr, err)
		}
		return nil, fmt.Errorf("onnxrt: run: %w", err)
	}
	res := make([]Tensor, len(st.outArgs))
	for i, v := range st.outArgs {
		if v == nil {
			err = fmt.Errorf("onnxrt: run: output %q missing", s.schema.Outputs[i].Name)
			continue
		}
		if err == nil {
			if res[i], err = fromValue(s.schema.Outputs[i].Name, v); err != nil {
				err = fmt.Errorf("onnxrt: run: %w", err)
			}
		}
		if st.out[i] == nil {
			v.Destroy() // allocated by ORT for this call
		} else if isGoTensor(v) {
			res[i].Data = cloneData(res[i].Data) // the state's buffer: the caller gets its own
		}
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// copyLimit is the largest input, in bytes, that Run copies into a reused buffer rather than
// wrapping the caller's memory in a new ORT value. Below it, creating and releasing the value
// (two cgo calls and some allocations, ~1 µs) costs more than the copy; above it, the copy does.
const copyLimit = 64 << 10

// preallocLimit is the largest output, in bytes, that a run state pre-allocates when it does not
// have to (FP16 and scalar outputs must be); ORT allocates larger ones per call.
const preallocLimit = 256 << 10

// maxFreeStates bounds the run states a session keeps between calls (the least recently used
// goes first), so that a model fed many input shapes does not keep a state for each.
const maxFreeStates = 16

// runState holds the ORT values one Run call uses: inputs over reused Go buffers of one set of
// input shapes, outputs allocated up front where the schema fixes their shape, and run options
// for cancellable calls. One call uses a state at a time; calls take them from Session.free.
type runState struct {
	shapes  [][]int64       // the input shapes the state was made for
	in      []ort.Value     // nil where an input is wrapped per call (large or scalar)
	inBuf   []any           // the Go buffers behind in
	out     []ort.Value     // pre-allocated outputs; nil where ORT allocates
	req     []bool          // out[i] must be pre-allocated (FP16, scalar), not merely may be
	optOut  bool            // some out[i] is pre-allocated without being required
	args    []ort.Value     // this call's inputs
	outArgs []ort.Value     // this call's outputs (ORT fills the nil ones)
	ro      *ort.RunOptions // made on the first cancellable call
}

func (st *runState) fits(in []Tensor) bool {
	if len(in) != len(st.shapes) {
		return false
	}
	for i, t := range in {
		if !slices.Equal(t.Shape, st.shapes[i]) {
			return false
		}
	}
	return true
}

// releaseWrapped destroys the per-call values among the first n inputs.
func (st *runState) releaseWrapped(n int) {
	for i := range n {
		if st.in[i] == nil && st.args[i] != nil {
			st.args[i].Destroy()
		}
		st.args[i] = nil
	}
}

// dropOptional releases the outputs that were pre-allocated without being required.
func (st *runState) dropOptional() {
	for i, v := range st.out {
		if v != nil && !st.req[i] {
			v.Destroy()
			st.out[i] = nil
		}
	}
	st.optOut = false
}

func (st *runState) destroy() {
	destroyAll(st.in)
	destroyAll(st.out)
	if st.ro != nil {
		st.ro.Destroy()
	}
}

// allocated returns the outputs ORT allocated in a call (those not pre-allocated).
func allocated(outArgs, pre []ort.Value) []ort.Value {
	var vs []ort.Value
	for i, v := range outArgs {
		if pre[i] == nil && v != nil {
			vs = append(vs, v)
		}
		outArgs[i] = nil
	}
	return vs
}

func (s *Session) getState(in []Tensor) (*runState, error) {
	s.freeMu.Lock()
	for i := len(s.free) - 1; i >= 0; i-- {
		if st := s.free[i]; st.fits(in) && !(st.optOut && s.noPreOut.Load()) {
			s.free = slices.Delete(s.free, i, i+1)
			s.freeMu.Unlock()
			return st, nil
		}
	}
	s.freeMu.Unlock()
	return s.newState(in)
}

func (s *Session) putState(st *runState) {
	clear(st.args)
	clear(st.outArgs)
	var evict *runState
	s.freeMu.Lock()
	if len(s.free) >= maxFreeStates {
		// Keep the most recently used: with many input shapes, the current ones.
		evict = s.free[0]
		s.free = slices.Delete(s.free, 0, 1)
	}
	s.free = append(s.free, st)
	s.freeMu.Unlock()
	if evict != nil {
		evict.destroy()
	}
}

func (s *Session) newState(in []Tensor) (*runState, error) {
	nout := len(s.schema.Outputs)
	st := &runState{shapes: make([][]int64, len(in)), in: make([]ort.Value, len(in)), inBuf: make([]any, len(in)),
		args: make([]ort.Value, len(in)), out: make([]ort.Value, nout), req: make([]bool, nout), outArgs: make([]ort.Value, nout)}
	for i, t := range in {
		st.shapes[i] = slices.Clone(t.Shape)
		if len(t.Shape) == 0 || t.Len()*t.DType.size() > copyLimit {
			continue
		}
		buf := cloneData(t.Data)
		v, err := toValue(Tensor{Name: t.Name, DType: t.DType, Shape: st.shapes[i], Data: buf})
		if err != nil {
			st.destroy()
			return nil, &InputError{Input: t.Name, Reason: err.Error()}
		}
		st.in[i], st.inBuf[i] = v, buf
	}
	for i, plan := range s.outPlan {
		if plan == nil {
			continue
		}
		o := s.schema.Outputs[i]
		req := o.DType == FP16 || len(plan) == 0
		if !req && s.noPreOut.Load() {
			continue
		}
		shape := make(ort.Shape, len(plan))
		for j, src := range plan {
			shape[j] = src.size(in)
		}
		if !req && shape.FlattenedSize()*int64(o.DType.size()) > preallocLimit {
			continue // kept per state and shape, a large output would cost more memory than its allocation costs time
		}
		v, err := emptyValue(o.DType, shape)
		if err != nil {
			st.destroy()
			return nil, fmt.Errorf("onnxrt: output %q: %w", o.Name, err)
		}
		st.out[i], st.req[i] = v, req
		st.optOut = st.optOut || !req
	}
	return st, nil
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

// runWith runs, with the state's ORT run options when ctx can end: their terminate flag is
// raised when it does, and lowered again before the state is reused.
func (s *Session) runWith(ctx context.Context, st *runState, in, out []ort.Value) error {
	if ctx.Done() == nil {
		return s.ort.Run(in, out)
	}
	if st.ro == nil {
		ro, err := ort.NewRunOptions()
		if err != nil {
			return fmt.Errorf("run options: %w", err)
		}
		st.ro = ro
	}
	ro := st.ro
	terminated := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(terminated)
		ro.Terminate()
	})
	err := s.ort.RunWithOptions(in, out, ro)
	if !stop() {
		<-terminated // Terminate may still be using ro
		ro.UnsetTerminate()
	}
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
	for _, st := range s.free {
		st.destroy()
	}
	s.free = nil
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

// planOutputs works out how to size each output before the run, where the schema allows:
// fixed dimensions, or symbolic ones that an input shares by name ("batch" in and out). Run
// pre-allocates those outputs, which saves ORT's allocation and the binding's conversion of each
// output per call. A rank-0 output gets an empty plan: the binding cannot return an ORT-allocated
// scalar. FP16 outputs must be planned: onnxruntime_go v1.27.0 cannot return one that ORT
// allocates (it copies one byte per element and then fails), but it can fill one we allocate; a
// model with any other FP16 output is refused here rather than failing on every request.
func planOutputs(s Schema) ([][]dimSource, error) {
	plans := make([][]dimSource, len(s.Outputs))
	for i, o := range s.Outputs {
		half := o.DType == FP16
		if o.Shape == nil || (half && len(o.Shape) == 0) {
			if half {
				return nil, fmt.Errorf("onnxrt: FP16 output %s: onnxruntime_go cannot return FP16 outputs of unknown rank or rank 0", o)
			}
			continue
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
				if half {
					return nil, fmt.Errorf("onnxrt: FP16 output %s: dimension %d is dynamic and shares no name with an input dimension; "+
						"onnxruntime_go cannot return such an output (export it as FP32, or give it a fixed or input-named size)", o, j)
				}
				plan = nil
				break
			}
		}
		plans[i] = plan
	}
	return plans, nil
}
