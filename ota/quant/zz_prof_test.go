package quant

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

func zzProfile(t *testing.T, name string, m []byte, sample []onnxrt.Tensor, threads int, nodes bool) {
	dir := t.TempDir()
	s, err := onnxrt.NewSession(m, onnxrt.Options{IntraOpThreads: threads, ProfilePath: filepath.Join(dir, "p")})
	if err != nil {
		t.Fatal(err)
	}
	const N = 30
	for i := 0; i < N; i++ {
		if _, err := s.Run(context.Background(), sample); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.EndProfiling()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	var ev []struct {
		Cat, Name string
		Dur       int64
		Args      struct {
			OpName string `json:"op_name"`
		}
	}
	json.Unmarshal(b, &ev)
	byOp := map[string]int64{}
	cnt := map[string]int{}
	byNode := map[string]int64{}
	var runs []int64
	for _, e := range ev {
		if e.Cat == "Session" && e.Name == "model_run" {
			runs = append(runs, e.Dur)
		}
		if e.Cat != "Node" || !strings.HasSuffix(e.Name, "_kernel_time") {
			continue
		}
		byOp[e.Args.OpName] += e.Dur
		cnt[e.Args.OpName]++
		byNode[e.Args.OpName+" "+strings.TrimSuffix(e.Name, "_kernel_time")] += e.Dur
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i] < runs[j] })
	var ops []string
	var tot int64
	for k, v := range byOp {
		ops = append(ops, k)
		tot += v
	}
	sort.Slice(ops, func(i, j int) bool { return byOp[ops[i]] > byOp[ops[j]] })
	t.Logf("%s: median model_run %dus (of %d), kernel sum/run %dus", name, runs[len(runs)/2], len(runs), tot/int64(len(runs)))
	for _, k := range ops {
		t.Logf("  %-28s n=%3d %8dus", k, cnt[k]/len(runs), byOp[k]/int64(len(runs)))
	}
	if nodes {
		var ns []string
		for k := range byNode {
			ns = append(ns, k)
		}
		sort.Slice(ns, func(i, j int) bool { return byNode[ns[i]] > byNode[ns[j]] })
		for _, k := range ns[:min(25, len(ns))] {
			t.Logf("    %-60s %6dus", k, byNode[k]/int64(len(runs)))
		}
	}
}

func TestZZProfile(t *testing.T) {
	nodes := os.Getenv("ZZNODES") != ""
	float := realModel(t, "ocr_cls.onnx")
	schema, _ := onnxrt.Inspect(float)
	in := schema.Inputs[0].Name
	res, err := Quantize(context.Background(), float, Options{Samples: clsSamples(in, clsCalibSamples, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := clsSamples(in, 1, 2)[0]
	zzProfile(t, "cls fp32", float, s, 1, nodes)
	zzProfile(t, "cls int8", res.Model, s, 1, nodes)
	if os.Getenv("ZZDET") == "" {
		return
	}
	det := realModel(t, "ocr_det.onnx")
	schema, _ = onnxrt.Inspect(det)
	in = schema.Inputs[0].Name
	res, err = Quantize(context.Background(), det, Options{Calibration: Percentile, Samples: detSamples(in, detCalibSamples, detSize, 1), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	s = detSamples(in, 1, detSize, 2)[0]
	zzProfile(t, "det fp32", det, s, 1, nodes)
	zzProfile(t, "det int8", res.Model, s, 1, nodes)
}
