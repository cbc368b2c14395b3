package infer

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// TestHotSwapUnderLoad swaps two versions of a model 20 times while 8 callers load it, and
// counts every answer: none may fail, calls must be in flight on the old version at every
// swap (so the test cannot pass by swapping around the load), and both versions must answer.
func TestHotSwapUnderLoad(t *testing.T) {
	v1 := loadReal(t, "ocr_cls.onnx", "cls", "1.0.0", LoadOptions{})
	v2 := loadReal(t, "ocr_cls.onnx", "cls", "2.0.0", LoadOptions{})
	s := NewServer("test")
	s.Swap("cls", v1)
	in := []onnxrt.Tensor{ocrInput(t, v1, 1, 3)}

	var ok, failed atomic.Int64
	var mu sync.Mutex
	seen := map[string]int{}
	var firstErr atomic.Value
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				out, m, err := s.Infer(context.Background(), "cls", in)
				if err != nil || len(out) != 1 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprint(err))
					continue
				}
				ok.Add(1)
				mu.Lock()
				seen[m.Version]++
				mu.Unlock()
			}
		}()
	}
	// Let the load build up before the first swap.
	for ok.Load() < 16 {
		time.Sleep(time.Millisecond)
	}
	var inflight []int64
	cur, next := v1, v2
	for range 20 {
		old := s.Swap("cls", next)
		if old != cur {
			t.Fatalf("swap returned %v, want %v", old.Version, cur.Version)
		}
		// Calls still holding the old version were in flight when it was replaced; they must
		// finish on it. (Waiting here is what the updater's go old.Close() does.)
		inflight = append(inflight, old.InFlight())
		before := ok.Load()
		for ok.Load() < before+8 {
			time.Sleep(200 * time.Microsecond)
		}
		cur, next = next, cur
	}
	stop()
	wg.Wait()
	t.Logf("answers %d, failed %d, by version %v, in flight on the old version at each swap %v", ok.Load(), failed.Load(), seen, inflight)
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed during hot swaps (first: %v)", failed.Load(), firstErr.Load())
	}
	for i, n := range inflight {
		if n == 0 {
			t.Errorf("swap %d: no request was in flight on the old version", i)
		}
	}
	if seen["1.0.0"] == 0 || seen["2.0.0"] == 0 {
		t.Errorf("answers by version %v, want both", seen)
	}
}

// TestSwapClosesAfterDrain: Close on a swapped-out version waits for its calls, and the calls
// succeed.
func TestSwapClosesAfterDrain(t *testing.T) {
	v1 := loadReal(t, "ocr_cls.onnx", "cls", "1.0.0", LoadOptions{})
	v2 := loadReal(t, "ocr_cls.onnx", "cls", "2.0.0", LoadOptions{})
	s := NewServer("test")
	s.Swap("cls", v1)
	m, release, ok := s.Acquire("cls")
	if !ok {
		t.Fatal("no model")
	}
	old := s.Swap("cls", v2)
	closed := make(chan struct{})
	go func() { old.Close(); close(closed) }()
	if _, err := m.Run(context.Background(), []onnxrt.Tensor{ocrInput(t, m, 1, 1)}); err != nil {
		t.Fatalf("call on the old version after the swap: %v", err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a call held the model")
	case <-time.After(20 * time.Millisecond):
	}
	release()
	<-closed
}

// TestDynamicBatching: concurrent single-row requests are stacked into larger runs and every
// caller gets its own rows (compared with an unbatched run of the same input).
func TestDynamicBatching(t *testing.T) {
	plain := loadReal(t, "ocr_cls.onnx", "cls", "1.0.0", LoadOptions{})
	batched := loadReal(t, "ocr_cls.onnx", "cls", "1.0.0", LoadOptions{Concurrency: 1, MaxBatch: 8, MaxWait: 5 * time.Millisecond})
	if !batched.Batching() {
		t.Fatal("ocr_cls has a dynamic batch dimension; batching should be on")
	}
	if m := loadReal(t, "hello_deepa.onnx", "h", "1", LoadOptions{MaxBatch: 8}); m.Batching() {
		t.Fatal("hello_deepa has a fixed batch dimension; batching must stay off")
	}
	const callers = 16
	inputs := make([]onnxrt.Tensor, callers)
	want := make([][]float32, callers)
	for i := range inputs {
		inputs[i] = ocrInput(t, plain, 1, uint64(100+i))
		out, err := plain.Run(context.Background(), inputs[i:i+1])
		if err != nil {
			t.Fatal(err)
		}
		want[i] = out[0].Data.([]float32)
	}
	// A two-row request joins batches too.
	two := ocrInput(t, plain, 2, 999)
	wantTwo, err := plain.Run(context.Background(), []onnxrt.Tensor{two})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, callers*10)
	for round := range 10 {
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				in, exp := inputs[i:i+1], want[i]
				if i == 0 && round%2 == 1 {
					in, exp = []onnxrt.Tensor{two}, wantTwo[0].Data.([]float32)
				}
				out, err := batched.Run(context.Background(), in)
				if err != nil {
					errs <- err
					return
				}
				if got := out[0].Data.([]float32); !close32(got, exp) || out[0].Shape[0] != in[0].Shape[0] {
					errs <- fmt.Errorf("caller %d round %d got %v (shape %v), want %v", i, round, got, out[0].Shape, exp)
				}
			}()
		}
		wg.Wait()
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := batched.stats(true)
	var runs, multi uint64
	for ub, n := range st.Batches {
		runs += n
		if ub != 1 {
			multi += n
		}
	}
	t.Logf("%d requests in %d runs (%d of more than one row), batch histogram %v", st.Requests, runs, multi, st.Batches)
	if multi == 0 {
		t.Error("no request was batched with another")
	}
	// A bad request in the queue fails alone.
	bad := onnxrt.Tensor{Name: "x", DType: onnxrt.FP32, Shape: []int64{1, 3, 48, 192}, Data: make([]float32, 5)}
	if _, err := batched.Run(context.Background(), []onnxrt.Tensor{bad}); Status(err) != http.StatusBadRequest {
		t.Errorf("bad input: %v", err)
	}
}

func close32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		d := a[i] - b[i]
		if d > 1e-5 || d < -1e-5 {
			return false
		}
	}
	return true
}

// TestShadow: a shadow of the same model agrees 100%; one with different weights does not.
func TestShadow(t *testing.T) {
	dir := fleettest.Models(t)
	src := filepath.Join(dir, "hello_deepa.onnx")
	for _, c := range []struct {
		name  string
		path  string
		agree bool
	}{
		{"same model, another bundle", src, true},
		{"perturbed weights", perturbed(t, src, 1.3), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewServer("test")
			s.Swap("kws", loadReal(t, "hello_deepa.onnx", "kws", "1.0.0", LoadOptions{}))
			if old := s.SetShadow("kws", loadFile(t, c.path, "kws", "2.0.0-rc", onnxrt.Options{IntraOpThreads: 1}, LoadOptions{})); old != nil {
				t.Fatal("unexpected previous shadow")
			}
			m, _ := s.Get("kws")
			sets, err := onnxrt.GenerateInputs(m.Schema(), 40, 5, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range sets {
				if _, _, err := s.Infer(context.Background(), "kws", in); err != nil {
					t.Fatal(err)
				}
				time.Sleep(200 * time.Microsecond) // stay under the shadow's queue bound
			}
			var st ShadowStats
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				st, _ = s.ShadowStats("kws")
				if st.Compared+st.Dropped+st.Errors >= uint64(len(sets)) {
					break
				}
			}
			t.Logf("%+v agreement %.3f", st, st.AgreementRate())
			if st.Compared == 0 || st.Errors != 0 {
				t.Fatalf("shadow stats %+v", st)
			}
			if c.agree && (st.AgreementRate() != 1 || st.MeanAbsDiff != 0) {
				t.Errorf("same model: agreement %.3f, mean abs diff %g; want 1 and 0", st.AgreementRate(), st.MeanAbsDiff)
			}
			if !c.agree && (st.AgreementRate() >= 1 || st.MeanAbsDiff == 0) {
				t.Errorf("perturbed model: agreement %.3f, mean abs diff %g; want < 1 and > 0", st.AgreementRate(), st.MeanAbsDiff)
			}
			snap := s.Snapshot()
			if len(snap) != 1 || snap[0].Shadow == nil || snap[0].Shadow.Compared != st.Compared {
				t.Errorf("snapshot does not carry the shadow: %+v", snap)
			}
			if old := s.SetShadow("kws", nil); old == nil {
				t.Error("SetShadow(nil) returned no previous shadow")
			}
		})
	}
}

// TestCUDAFallback: asking for CUDA where it cannot run serves on CPU and says so, in the
// model and in its metadata.
func TestCUDAFallback(t *testing.T) {
	dir := fleettest.Models(t)
	if slices.Contains(onnxrt.AvailableProviders(), onnxrt.ProviderCUDA) && len(onnxrt.DetectAccelerators()) > 0 {
		t.Skip("this machine can run CUDA; the fallback is tested where it cannot")
	}
	m := loadFile(t, filepath.Join(dir, "hello_deepa.onnx"), "kws", "1.0.0", onnxrt.Options{ExecutionProvider: "cuda"}, LoadOptions{})
	if m.Provider() != onnxrt.ProviderCPU || m.FallbackReason() == "" {
		t.Fatalf("provider %q, fallback %q; want cpu with a reason", m.Provider(), m.FallbackReason())
	}
	s := NewServer("test")
	s.Swap("kws", m)
	status, _, body := do(t, s.Handler(), "GET", "/v2/models/kws", nil, nil)
	if status != 200 || !strings.Contains(string(body), `"execution_provider":"cpu"`) || !strings.Contains(string(body), `"execution_provider_fallback":"cuda unavailable`) {
		t.Fatalf("metadata %d %s", status, body)
	}
	t.Logf("fallback: %s", m.FallbackReason())
}

// TestMetrics: counts per version, errors by reason, and the Prometheus text.
func TestMetrics(t *testing.T) {
	s := identServer(t)
	h := s.Handler()
	good := `{"inputs":[{"name":"b","shape":[2],"datatype":"BOOL","data":[0,1]},{"name":"f16","shape":[1,2],"datatype":"FP16","data":[1,2]},{"name":"f32","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"i64","shape":[2],"datatype":"INT64","data":[1,2]},{"name":"i8","shape":[2],"datatype":"INT8","data":[3,4]}]}`
	for range 3 {
		if st, _, b := do(t, h, "POST", "/v2/models/ident/infer", []byte(good), nil); st != 200 {
			t.Fatalf("%d %s", st, b)
		}
	}
	if st, _, _ := do(t, h, "POST", "/v2/models/ident/infer", []byte(strings.Replace(good, `"data":[1,2]}`, `"data":[1,"NaN"]}`, 1)), nil); st != 400 {
		t.Fatal("NaN accepted")
	}
	m, _ := s.Get("ident")
	m.FaultErrorRate = 1
	if st, _, _ := do(t, h, "POST", "/v2/models/ident/infer", []byte(good), nil); st != 500 {
		t.Fatalf("injected fault: status %d", st)
	}
	var ident *ModelStats
	for _, st := range s.Snapshot() {
		if st.Name == "ident" {
			ident = &st
		}
	}
	if ident == nil || ident.Requests != 5 || ident.Errors["input"] != 1 || ident.Errors["injected"] != 1 || ident.Latency.Count != 3 {
		t.Fatalf("snapshot %+v", ident)
	}
	_, _, body := do(t, h, "GET", "/metrics", nil, nil)
	for _, want := range []string{
		`edgefleet_inference_requests_total{model="ident",provider="cpu",serving="true",version="1.2.0"} 5`,
		`edgefleet_inference_errors_total{model="ident",provider="cpu",reason="input",serving="true",version="1.2.0"} 1`,
		`edgefleet_inference_latency_seconds{model="ident",provider="cpu",serving="true",version="1.2.0",quantile="0.99"}`,
		`edgefleet_inference_queue_wait_seconds_count{model="ident",provider="cpu",serving="true",version="1.2.0"} 3`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}
