package onnxrt

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Run reuses ORT values between calls (runState): these tests check that a call's outputs stay
// the caller's, that inputs of one call never leak into another, and that a change of input
// shapes or an output that does not keep its declared shape still runs.

func TestRunReuseConcurrentSmallInputs(t *testing.T) {
	// hello_deepa's input is small enough to be copied into reused buffers.
	s := newSession(t, "hello_deepa.onnx", Options{IntraOpThreads: 1})
	const workers, perWorker = 6, 30
	sets, err := GenerateInputs(s.Schema(), workers, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, workers)
	first := make([][]Tensor, workers)
	for i, in := range sets {
		out, err := s.Run(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		first[i], want[i] = out, out[0].Data.([]float32)[0]
	}
	if want[0] == want[1] {
		t.Fatalf("inputs 0 and 1 give the same score %v; the test could not tell them apart", want[0])
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range perWorker {
				out, err := s.Run(context.Background(), sets[w])
				if err != nil {
					t.Error(err)
					return
				}
				if got := out[0].Data.([]float32)[0]; got != want[w] {
					t.Errorf("worker %d: %v, want %v (inputs mixed up between calls?)", w, got, want[w])
					return
				}
			}
		})
	}
	wg.Wait()
	for i, out := range first {
		if got := out[0].Data.([]float32)[0]; got != want[i] {
			t.Errorf("output of call %d changed after later calls: %v, want %v", i, got, want[i])
		}
	}
}

func TestRunReuseShapesChange(t *testing.T) {
	s, err := NewSession(identityModel(t, map[string]idInput{"x": {onnxpb.TensorProto_FLOAT, []int64{-1}}}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var kept []Tensor
	for i, n := range []int{3, 5, 3, 100000, 5, 3} { // 100000 floats: over copyLimit, wrapped per call
		in := make([]float32, n)
		for j := range in {
			in[j] = float32(i*1000 + j)
		}
		out, err := s.Run(context.Background(), []Tensor{{Name: "x", DType: FP32, Shape: []int64{int64(n)}, Data: in}})
		if err != nil {
			t.Fatalf("call %d (n=%d): %v", i, n, err)
		}
		if got := out[0].Data.([]float32); !slices.Equal(got, in) || !slices.Equal(out[0].Shape, []int64{int64(n)}) {
			t.Fatalf("call %d (n=%d): output %v %v, want the input back", i, n, out[0].Shape, got[:min(len(got), 5)])
		}
		in[0] = -1 // the caller may reuse its buffer once Run returned
		kept = append(kept, out[0])
	}
	for i, k := range kept {
		if d := k.Data.([]float32); d[0] != float32(i*1000) {
			t.Errorf("output of call %d changed after later calls: %v", i, d[:1])
		}
	}
}

// TestRunOutputShapeNotAsDeclared runs a model whose output claims a fixed shape it does not
// keep: the pre-allocated output fails the run, and Run retries with ORT allocating it.
func TestRunOutputShapeNotAsDeclared(t *testing.T) {
	b := identityModel(t, map[string]idInput{"x": {onnxpb.TensorProto_FLOAT, []int64{-1}}})
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	out := m.Graph.Output[0].Type.GetTensorType().Shape.Dim[0]
	out.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: 2}
	b, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSession(b, Options{})
	if err != nil {
		t.Skipf("ORT refuses the inconsistent model at load, which is also fine: %v", err)
	}
	defer s.Close()
	for i := range 3 {
		in := []float32{1, 2, 3}
		res, err := s.Run(context.Background(), []Tensor{{Name: "x", DType: FP32, Shape: []int64{3}, Data: in}})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if got := res[0].Data.([]float32); !slices.Equal(got, in) {
			t.Fatalf("call %d: %v, want %v", i, got, in)
		}
	}
	if !s.noPreOut.Load() {
		t.Error("the session still pre-allocates an output whose declared shape failed a run")
	}
}

func TestTensorRTProviderOptions(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want map[string]string
	}{
		{Options{ExecutionProvider: ProviderTensorRT}, map[string]string{"device_id": "0"}},
		{Options{ExecutionProvider: ProviderTensorRT, DeviceID: 1, TensorRTCacheDir: "/data/models/wake/slot-b/trt-cache"}, map[string]string{
			"device_id":               "1",
			"trt_engine_cache_enable": "1",
			"trt_engine_cache_path":   "/data/models/wake/slot-b/trt-cache",
			"trt_timing_cache_enable": "1",
			"trt_timing_cache_path":   "/data/models/wake/slot-b/trt-cache",
		}},
	} {
		if got := TensorRTProviderOptions(tc.opts); !maps.Equal(got, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.opts, got, tc.want)
		}
	}
	// Where ORT has no TensorRT, a session asked for it with a cache still runs, on CPU.
	s := newSession(t, "hello_deepa.onnx", Options{ExecutionProvider: ProviderTensorRT, TensorRTCacheDir: t.TempDir()})
	if !slices.Contains(AvailableProviders(), ProviderTensorRT) && s.Provider() != ProviderCPU {
		t.Errorf("provider %s without TensorRT in this ORT", s.Provider())
	}
}
