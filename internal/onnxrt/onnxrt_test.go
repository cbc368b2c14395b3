package onnxrt

import (
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
)

func TestInitIdempotentAndVersion(t *testing.T) {
	needORT(t)
	lib := LibraryPath()
	if err := Init(lib); err != nil {
		t.Fatalf("second Init with the same library: %v", err)
	}
	if err := Init(filepath.Join(t.TempDir(), "other.so")); err == nil || !strings.Contains(err.Error(), "already initialized") {
		t.Errorf("Init with another library after success: %v, want 'already initialized'", err)
	}
	if got := Version(); got != RuntimeVersion {
		t.Errorf("Version() = %q, want %q (the library scripts/fetch-ort.sh provisions)", got, RuntimeVersion)
	}
}

// TestInitMissingLibrary runs Init in a fresh process, since a process initializes only once.
func TestInitMissingLibrary(t *testing.T) {
	for _, mode := range []string{"missing", "default-missing"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+mode, EnvCache+"="+t.TempDir(), EnvLibrary+"=")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			for _, want := range []string{"ONNX Runtime library missing", "scripts/fetch-ort.sh", "make build", EnvLibrary} {
				if !strings.Contains(string(out), want) {
					t.Errorf("error %q does not mention %q", strings.TrimSpace(string(out)), want)
				}
			}
		})
	}
}

func TestDefaultLibraryPath(t *testing.T) {
	t.Setenv(EnvLibrary, "")
	t.Setenv(EnvCache, "/var/cache/ef")
	got := DefaultLibraryPath()
	if !strings.HasPrefix(got, "/var/cache/ef/ort/"+RuntimeVersion+"/linux-") || !strings.HasSuffix(got, "/libonnxruntime.so.1") {
		t.Errorf("DefaultLibraryPath() = %q", got)
	}
	t.Setenv(EnvLibrary, "/opt/ort/libonnxruntime.so")
	if got := DefaultLibraryPath(); got != "/opt/ort/libonnxruntime.so" {
		t.Errorf("with %s set: %q", EnvLibrary, got)
	}
}

func TestInspectRealModels(t *testing.T) {
	p := "p2o.DynamicDimension."
	tests := []struct {
		file      string
		ir, opset int64
		inputs    []TensorInfo
		outputs   []TensorInfo
	}{
		{"hello_deepa.onnx", 7, 13,
			[]TensorInfo{{Name: "onnx::Flatten_0", DType: FP32, Shape: []int64{1, 25, 96}, Kind: "tensor"}},
			[]TensorInfo{{Name: "39", DType: FP32, Shape: []int64{1, 1}, Kind: "tensor"}}},
		{"ocr_cls.onnx", 8, 9,
			[]TensorInfo{{Name: "x", DType: FP32, Shape: []int64{-1, 3, -1, -1}, DimNames: []string{p + "0", "", p + "1", p + "2"}, Kind: "tensor"}},
			[]TensorInfo{{Name: "softmax_0.tmp_0", DType: FP32, Shape: []int64{-1, 2}, DimNames: []string{p + "3", ""}, Kind: "tensor"}}},
		{"ocr_det.onnx", 8, 11,
			[]TensorInfo{{Name: "x", DType: FP32, Shape: []int64{-1, 3, -1, -1}, DimNames: []string{p + "0", "", p + "1", p + "2"}, Kind: "tensor"}},
			[]TensorInfo{{Name: "sigmoid_0.tmp_0", DType: FP32, Shape: []int64{-1, 1, -1, -1}, DimNames: []string{p + "3", "", p + "4", p + "5"}, Kind: "tensor"}}},
		{"silero_vad_v5.onnx", 8, 16,
			[]TensorInfo{
				{Name: "input", DType: FP32, Shape: []int64{-1, -1}, Kind: "tensor"},
				{Name: "state", DType: FP32, Shape: []int64{2, -1, 128}, Kind: "tensor"},
				{Name: "sr", DType: INT64, Shape: []int64{}, Kind: "tensor"},
			},
			[]TensorInfo{
				{Name: "output", DType: FP32, Shape: []int64{-1, 1}, Kind: "tensor"},
				{Name: "stateN", DType: FP32, Shape: []int64{-1, -1, -1}, Kind: "tensor"},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			s, err := Inspect(model(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if s.IRVersion != tc.ir || s.Opset != tc.opset {
				t.Errorf("ir %d opset %d, want %d %d", s.IRVersion, s.Opset, tc.ir, tc.opset)
			}
			if !reflect.DeepEqual(s.Inputs, tc.inputs) {
				t.Errorf("inputs\n got %#v\nwant %#v", s.Inputs, tc.inputs)
			}
			if !reflect.DeepEqual(s.Outputs, tc.outputs) {
				t.Errorf("outputs\n got %#v\nwant %#v", s.Outputs, tc.outputs)
			}
			if err := s.Runnable(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestInspectRejects(t *testing.T) {
	needORT(t)
	if _, err := Inspect([]byte("not a model")); !errors.Is(err, onnxpb.ErrNotModel) {
		t.Errorf("garbage: %v, want onnxpb.ErrNotModel", err)
	}
}

func newSession(t testing.TB, file string, opts Options) *Session {
	t.Helper()
	s, err := NewSession(model(t, file), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRunHelloDeepa(t *testing.T) {
	s := newSession(t, "hello_deepa.onnx", Options{})
	in, err := GenerateInputs(s.Schema(), 2, 7, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Run(context.Background(), in[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Name != "39" || out[0].DType != FP32 || !slices.Equal(out[0].Shape, []int64{1, 1}) {
		t.Fatalf("output %+v, want 39 FP32[1,1]", out)
	}
	score := out[0].Data.([]float32)[0]
	if math.IsNaN(float64(score)) || score < 0 || score > 1 {
		t.Errorf("wake-word score %v outside [0,1]", score)
	}
	again, err := s.Run(context.Background(), in[0])
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, again) {
		t.Errorf("same input, different outputs: %v vs %v", out, again)
	}
}

func TestRunOCRCls(t *testing.T) {
	s := newSession(t, "ocr_cls.onnx", Options{IntraOpThreads: 1})
	in, err := GenerateInputs(s.Schema(), 1, 1, map[string][]int64{"x": {1, 3, 48, 192}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Run(context.Background(), in[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out[0].Shape, []int64{1, 2}) {
		t.Fatalf("output shape %v, want [1,2]", out[0].Shape)
	}
	p := out[0].Data.([]float32)
	if sum := p[0] + p[1]; math.Abs(float64(sum)-1) > 1e-4 {
		t.Errorf("softmax sums to %v", sum)
	}
}

func TestRunOCRDetDynamic(t *testing.T) {
	s := newSession(t, "ocr_det.onnx", Options{})
	for _, hw := range [][2]int64{{64, 96}, {32, 32}} {
		in, err := GenerateInputs(s.Schema(), 1, 3, map[string][]int64{"x": {1, 3, hw[0], hw[1]}})
		if err != nil {
			t.Fatal(err)
		}
		out, err := s.Run(context.Background(), in[0])
		if err != nil {
			t.Fatal(err)
		}
		if want := []int64{1, 1, hw[0], hw[1]}; !slices.Equal(out[0].Shape, want) {
			t.Errorf("output shape %v, want %v", out[0].Shape, want)
		}
	}
}

// TestRunSilero feeds the recurrent state back for a few 32 ms frames at 16 kHz: three inputs,
// one an int64 scalar.
func TestRunSilero(t *testing.T) {
	s := newSession(t, "silero_vad_v5.onnx", Options{})
	frames, err := GenerateInputs(s.Schema(), 3, 11, map[string][]int64{"input": {1, 512}, "state": {2, 1, 128}})
	if err != nil {
		t.Fatal(err)
	}
	state := Tensor{Name: "state", DType: FP32, Shape: []int64{2, 1, 128}, Data: make([]float32, 256)}
	for i, f := range frames {
		if sr := f[2]; sr.Name != "sr" || sr.Data.([]int64)[0] != 16000 || len(sr.Shape) != 0 {
			t.Fatalf("generated sr %+v, want scalar 16000", sr)
		}
		out, err := s.Run(context.Background(), []Tensor{f[0], state, f[2]})
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if out[0].Name != "output" || !slices.Equal(out[0].Shape, []int64{1, 1}) {
			t.Fatalf("frame %d: output %s %v, want output [1,1]", i, out[0].Name, out[0].Shape)
		}
		if p := out[0].Data.([]float32)[0]; p < 0 || p > 1 {
			t.Errorf("frame %d: speech probability %v", i, p)
		}
		if !slices.Equal(out[1].Shape, []int64{2, 1, 128}) {
			t.Fatalf("frame %d: stateN shape %v", i, out[1].Shape)
		}
		state = out[1]
		state.Name = "state"
	}
}

func TestInputErrors(t *testing.T) {
	s := newSession(t, "silero_vad_v5.onnx", Options{})
	good := func() []Tensor {
		return []Tensor{
			{Name: "input", DType: FP32, Shape: []int64{1, 512}, Data: make([]float32, 512)},
			{Name: "state", DType: FP32, Shape: []int64{2, 1, 128}, Data: make([]float32, 256)},
			{Name: "sr", DType: INT64, Shape: []int64{}, Data: []int64{16000}},
		}
	}
	if _, err := s.Run(context.Background(), good()); err != nil {
		t.Fatalf("valid inputs: %v", err)
	}
	tests := []struct {
		name   string
		edit   func([]Tensor) []Tensor
		input  string
		reason string
	}{
		{"wrong name", func(in []Tensor) []Tensor { in[0].Name = "audio"; return in },
			"audio", "the model has no such input; it takes input FP32[-1,-1], state FP32[2,-1,128], sr INT64[]"},
		{"extra input", func(in []Tensor) []Tensor {
			return append(in, Tensor{Name: "h", DType: FP32, Shape: []int64{1}, Data: []float32{0}})
		}, "h", "the model has no such input"},
		{"missing input", func(in []Tensor) []Tensor { return in[:2] },
			"sr", "missing; the model expects INT64[]"},
		{"duplicate input", func(in []Tensor) []Tensor { return append(in, in[0]) },
			"input", "given more than once"},
		{"wrong dtype", func(in []Tensor) []Tensor {
			in[2] = Tensor{Name: "sr", DType: INT32, Shape: []int64{}, Data: []int32{16000}}
			return in
		}, "sr", "datatype is INT32, the model expects INT64[]"},
		{"data type disagrees with dtype", func(in []Tensor) []Tensor { in[2].Data = []int32{16000}; return in },
			"sr", "data is []int32, datatype INT64 needs []int64"},
		{"wrong rank", func(in []Tensor) []Tensor { in[0].Shape = []int64{512}; return in },
			"input", "shape [512] has rank 1, the model expects rank 2: FP32[-1,-1] (-1: any size)"},
		{"wrong fixed dim", func(in []Tensor) []Tensor {
			in[1].Shape, in[1].Data = []int64{3, 1, 128}, make([]float32, 384)
			return in
		}, "state", "dimension 0 is 3, the model expects 2: FP32[2,-1,128] (-1: any size)"},
		{"zero dim", func(in []Tensor) []Tensor { in[0].Shape, in[0].Data = []int64{1, 0}, []float32{}; return in },
			"input", "shape [1,0]: dimension 1 is 0; dimensions must be positive"},
		{"wrong element count", func(in []Tensor) []Tensor { in[0].Data = make([]float32, 511); return in },
			"input", "data has 511 elements, shape [1,512] needs 512"},
		{"nil data", func(in []Tensor) []Tensor { in[1].Data = nil; return in },
			"state", "data is <nil>, datatype FP32 needs []float32"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Run(context.Background(), tc.edit(good()))
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("err = %v, want *InputError", err)
			}
			if ie.Input != tc.input || !strings.HasPrefix(ie.Reason, tc.reason) {
				t.Errorf("got  Input %q Reason %q\nwant Input %q Reason %q...", ie.Input, ie.Reason, tc.input, tc.reason)
			}
			if !strings.Contains(err.Error(), `"`+tc.input+`"`) {
				t.Errorf("message %q does not name the input", err)
			}
		})
	}
}

// TestAllDTypes round-trips every supported element type, a scalar and an input of unknown rank
// through a generated Identity model.
func TestAllDTypes(t *testing.T) {
	needORT(t)
	elems := map[DType]onnxpb.TensorProto_DataType{
		FP32: onnxpb.TensorProto_FLOAT, FP16: onnxpb.TensorProto_FLOAT16, FP64: onnxpb.TensorProto_DOUBLE,
		INT8: onnxpb.TensorProto_INT8, UINT8: onnxpb.TensorProto_UINT8, INT16: onnxpb.TensorProto_INT16,
		UINT16: onnxpb.TensorProto_UINT16, INT32: onnxpb.TensorProto_INT32, UINT32: onnxpb.TensorProto_UINT32,
		INT64: onnxpb.TensorProto_INT64, UINT64: onnxpb.TensorProto_UINT64, BOOL: onnxpb.TensorProto_BOOL,
	}
	inputs := map[string]idInput{
		"scalar_f32": {onnxpb.TensorProto_FLOAT, []int64{}},
		"scalar_i64": {onnxpb.TensorProto_INT64, []int64{}},
		"anyrank":    {onnxpb.TensorProto_FLOAT, nil},
	}
	for d, e := range elems {
		inputs["t_"+strings.ToLower(string(d))] = idInput{e, []int64{2, -1}}
	}
	s, err := NewSession(identityModel(t, inputs), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sc := s.Schema()
	if ti, _ := sc.Input("anyrank"); ti.Shape != nil {
		t.Errorf("unknown rank reported as shape %v, want nil", ti.Shape)
	}
	if ti, _ := sc.Input("t_fp16"); ti.DType != FP16 || !slices.Equal(ti.DimNames, []string{"", "n"}) {
		t.Errorf("t_fp16 info %#v", ti)
	}
	in, err := GenerateInputs(sc, 1, 5, map[string][]int64{"anyrank": {2, 2, 2}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Run(context.Background(), in[0])
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		want := in[0][i]
		if o.Name != want.Name+"_out" || o.DType != want.DType || !slices.Equal(o.Shape, want.Shape) || !reflect.DeepEqual(o.Data, want.Data) {
			t.Errorf("output %d: got %s %s %v %v, want %s_out %s %v %v", i, o.Name, o.DType, o.Shape, o.Data,
				want.Name, want.DType, want.Shape, want.Data)
		}
	}
}

func TestConcurrentRun(t *testing.T) {
	s := newSession(t, "ocr_cls.onnx", Options{IntraOpThreads: 1})
	const workers, perWorker = 8, 20
	sets, err := GenerateInputs(s.Schema(), workers, 42, map[string][]int64{"x": {1, 3, 48, 192}})
	if err != nil {
		t.Fatal(err)
	}
	want := make([][]float32, workers)
	for i, in := range sets {
		out, err := s.Run(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = out[0].Data.([]float32)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Go(func() {
			for range perWorker {
				out, err := s.Run(context.Background(), sets[w])
				if err != nil {
					errs <- err
					return
				}
				if got := out[0].Data.([]float32); !slices.Equal(got, want[w]) {
					t.Errorf("worker %d: %v, want %v (outputs mixed up between calls?)", w, got, want[w])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCloseWaitsAndRejects(t *testing.T) {
	s := newSession(t, "hello_deepa.onnx", Options{})
	in, _ := GenerateInputs(s.Schema(), 1, 1, nil)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if _, err := s.Run(context.Background(), in[0]); err != nil && !errors.Is(err, ErrClosed) {
					t.Error(err)
					return
				}
			}
		})
	}
	time.Sleep(time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Run(context.Background(), in[0]); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
}

func TestRunContext(t *testing.T) {
	s := newSession(t, "ocr_det.onnx", Options{IntraOpThreads: 1})
	in, err := GenerateInputs(s.Schema(), 1, 1, map[string][]int64{"x": {1, 3, 640, 640}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Run(ctx, in[0]); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v, want context.Canceled", err)
	}
	// A 640x640 detection takes far longer than 5 ms on one thread; the terminate flag must stop it.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Run(ctx, in[0])
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timed-out run: %v, want context.DeadlineExceeded", err)
	}
	t.Logf("run stopped %v after start", time.Since(start))
	// The session must still work after a terminated run.
	if _, err := s.Run(context.Background(), in[0]); err != nil {
		t.Errorf("run after a terminated run: %v", err)
	}
}

func TestCUDAFallsBackToCPU(t *testing.T) {
	for _, p := range []string{ProviderCUDA, ProviderTensorRT} {
		t.Run(p, func(t *testing.T) {
			s := newSession(t, "hello_deepa.onnx", Options{ExecutionProvider: p})
			if slices.Contains(AvailableProviders(), p) {
				t.Logf("this machine's ORT accepts %s; provider %s, fallback %q", p, s.Provider(), s.FallbackReason())
			} else {
				if s.Provider() != ProviderCPU || !strings.Contains(s.FallbackReason(), p+" unavailable") {
					t.Errorf("Provider %q FallbackReason %q, want cpu and a reason naming %s", s.Provider(), s.FallbackReason(), p)
				}
				if _, err := NewSession(model(t, "hello_deepa.onnx"), Options{ExecutionProvider: p, RequireProvider: true}); err == nil {
					t.Error("RequireProvider: a session without the provider was created")
				}
			}
			in, _ := GenerateInputs(s.Schema(), 1, 1, nil)
			if _, err := s.Run(context.Background(), in[0]); err != nil {
				t.Errorf("run after fallback: %v", err)
			}
		})
	}
	if _, err := NewSession(model(t, "hello_deepa.onnx"), Options{ExecutionProvider: "tpu"}); err == nil {
		t.Error("unknown provider accepted")
	}
	s := newSession(t, "hello_deepa.onnx", Options{})
	if s.Provider() != ProviderCPU || s.FallbackReason() != "" {
		t.Errorf("cpu session: Provider %q FallbackReason %q", s.Provider(), s.FallbackReason())
	}
}

func TestProfiling(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "prof", "ocr_cls")
	s := newSession(t, "ocr_cls.onnx", Options{ProfilePath: prefix, GraphOptLevel: OptDisabled})
	in, _ := GenerateInputs(s.Schema(), 1, 1, map[string][]int64{"x": {1, 3, 48, 192}})
	const runs = 3
	for range runs {
		if _, err := s.Run(context.Background(), in[0]); err != nil {
			t.Fatal(err)
		}
	}
	path, err := s.EndProfiling()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(path, prefix+"_") || !strings.HasSuffix(path, ".json") {
		t.Errorf("profile path %q does not start with the prefix %q", path, prefix)
	}
	stats, err := ReadProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	var conv *KernelStat
	for i := range stats {
		if stats[i].Op == "Conv" {
			conv = &stats[i]
		}
	}
	if conv == nil || conv.Provider != "CPUExecutionProvider" || conv.Count < runs || conv.Total <= 0 {
		t.Errorf("no Conv kernels on CPUExecutionProvider in the profile: %+v", stats)
	}
	t.Logf("top kernels: %+v", stats[:min(3, len(stats))])
	if _, err := s.Run(context.Background(), in[0]); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after EndProfiling: %v, want ErrClosed", err)
	}
	if _, err := newSession(t, "hello_deepa.onnx", Options{}).EndProfiling(); !errors.Is(err, ErrNotProfiling) {
		t.Errorf("EndProfiling without profiling: %v", err)
	}
}

func TestGenerateInputsDeterministic(t *testing.T) {
	s := Schema{Inputs: []TensorInfo{
		{Name: "x", DType: FP32, Shape: []int64{-1, 4}, Kind: "tensor"},
		{Name: "ids", DType: INT64, Shape: []int64{3}, Kind: "tensor"},
		{Name: "sr", DType: INT64, Shape: []int64{}, Kind: "tensor"},
		{Name: "mask", DType: BOOL, Shape: []int64{2}, Kind: "tensor"},
	}}
	a, err := GenerateInputs(s, 3, 99, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateInputs(s, 3, 99, nil)
	c, _ := GenerateInputs(s, 3, 100, nil)
	if !reflect.DeepEqual(a, b) {
		t.Error("same seed, different inputs")
	}
	if reflect.DeepEqual(a, c) {
		t.Error("different seeds, same inputs")
	}
	if reflect.DeepEqual(a[0], a[1]) {
		t.Error("sets within one call repeat")
	}
	// Pin the generator: golden files depend on these exact values.
	if got := a[0][0].Data.([]float32)[0]; got != -0.87573206 {
		t.Errorf("first value %v changed; golden inputs would no longer reproduce", got)
	}
	for _, set := range a {
		if !slices.Equal(set[0].Shape, []int64{1, 4}) {
			t.Errorf("dynamic dim not 1: %v", set[0].Shape)
		}
		for _, v := range set[0].Data.([]float32) {
			if v < -1 || v >= 1 {
				t.Errorf("float %v outside [-1,1)", v)
			}
		}
		for _, v := range set[1].Data.([]int64) {
			if v < 0 || v >= 10 {
				t.Errorf("int %v outside [0,10)", v)
			}
		}
		if sr := set[2].Data.([]int64); len(sr) != 1 || sr[0] != 16000 {
			t.Errorf("sr = %v, want [16000]", sr)
		}
	}
	if _, err := GenerateInputs(s, 1, 1, map[string][]int64{"x": {2, 5}}); err == nil {
		t.Error("a shape override that contradicts a fixed dimension was accepted")
	}
	if _, err := GenerateInputs(s, 1, 1, map[string][]int64{"nope": {1}}); err == nil {
		t.Error("a shape override for an unknown input was accepted")
	}
}

func TestFloat16(t *testing.T) {
	tests := []struct {
		f float32
		h uint16
	}{
		{0, 0x0000}, {1, 0x3c00}, {-2, 0xc000}, {0.5, 0x3800}, {65504, 0x7bff}, {65520, 0x7c00},
		{float32(math.Inf(-1)), 0xfc00}, {5.9604645e-08, 0x0001}, {6.1035156e-05, 0x0400},
		{0.33325195, 0x3555}, {1e-9, 0x0000},
	}
	for _, tc := range tests {
		if got := Float16Bits(tc.f); got != tc.h {
			t.Errorf("Float16Bits(%v) = %#04x, want %#04x", tc.f, got, tc.h)
		}
		if tc.f != 1e-9 && tc.f != 65520 {
			if got := Float16Value(tc.h); got != tc.f {
				t.Errorf("Float16Value(%#04x) = %v, want %v", tc.h, got, tc.f)
			}
		}
	}
	if !math.IsNaN(float64(Float16Value(Float16Bits(float32(math.NaN()))))) {
		t.Error("NaN did not survive")
	}
	// Rounding to nearest even at the halfway point between 1 and the next half (1+2^-10).
	if got := Float16Bits(1 + 1.0/2048); got != 0x3c00 {
		t.Errorf("halfway rounds to %#04x, want 0x3c00 (even)", got)
	}
}

func TestDetectAccelerators(t *testing.T) {
	acc := DetectAccelerators()
	_, nvidiaDev := os.Stat("/dev/nvidia0")
	if nvidiaDev != nil && !onPath("nvidia-smi") && !fileExists("/etc/nv_tegra_release") && len(acc) != 0 {
		t.Errorf("no NVIDIA evidence on this machine, but DetectAccelerators() = %v", acc)
	}
	t.Logf("accelerators %v", acc)
}

func TestPlanOutputs(t *testing.T) {
	in := []TensorInfo{{Name: "x", DType: FP16, Shape: []int64{-1, 8}, DimNames: []string{"batch", ""}, Kind: "tensor"}}
	ok := Schema{Inputs: in, Outputs: []TensorInfo{{Name: "y", DType: FP16, Shape: []int64{-1, 4}, DimNames: []string{"batch", ""}, Kind: "tensor"}}}
	plans, err := planOutputs(ok)
	if err != nil {
		t.Fatal(err)
	}
	x := Tensor{Name: "x", DType: FP16, Shape: []int64{5, 8}}
	if got := []int64{plans[0][0].size([]Tensor{x}), plans[0][1].size([]Tensor{x})}; !slices.Equal(got, []int64{5, 4}) {
		t.Errorf("planned shape %v, want [5,4]", got)
	}
	bad := Schema{Inputs: in, Outputs: []TensorInfo{{Name: "y", DType: FP16, Shape: []int64{-1, -1}, DimNames: []string{"batch", "len"}, Kind: "tensor"}}}
	if _, err := planOutputs(bad); err == nil || !strings.Contains(err.Error(), "dimension 1 is dynamic") {
		t.Errorf("unresolvable FP16 output: %v", err)
	}
	if plans, err := planOutputs(Schema{Inputs: in, Outputs: []TensorInfo{{Name: "y", DType: FP32, Shape: []int64{-1}, Kind: "tensor"}}}); err != nil || plans[0] != nil {
		t.Errorf("FP32 output of unnamed dynamic size: plans %v err %v, want none (ORT allocates it)", plans, err)
	}
}
