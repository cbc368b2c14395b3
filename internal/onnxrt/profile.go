package onnxrt

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// KernelStat sums the kernel executions of one operator type on one execution provider in an
// ORT profile.
type KernelStat struct {
	Op       string        `json:"op"`       // operator type, e.g. "Conv", "QLinearConv"
	Provider string        `json:"provider"` // e.g. "CPUExecutionProvider"
	Count    int           `json:"count"`    // kernel executions
	Total    time.Duration `json:"total"`    // summed kernel time
}

// profileEvent is one entry of ORT's Chrome-trace profile. Node events come in three per
// execution (_fence_before, _kernel_time, _fence_after); only _kernel_time measures the kernel.
type profileEvent struct {
	Cat  string `json:"cat"`
	Name string `json:"name"`
	Dur  int64  `json:"dur"` // microseconds
	Args struct {
		OpName   string `json:"op_name"`
		Provider string `json:"provider"`
	} `json:"args"`
}

// ReadProfile summarizes the kernels an ORT profile (from Session.EndProfiling) shows ran, sorted
// by total time, longest first. This is the evidence for claims such as "the quantized model ran
// QLinearConv" or "the GPU variant ran on CUDAExecutionProvider".
func ReadProfile(path string) ([]KernelStat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	var events []profileEvent
	if err := json.Unmarshal(b, &events); err != nil {
		return nil, fmt.Errorf("read profile %s: %w", path, err)
	}
	type key struct{ op, provider string }
	stats := make(map[key]*KernelStat)
	for _, e := range events {
		if e.Cat != "Node" || !strings.HasSuffix(e.Name, "_kernel_time") || e.Args.OpName == "" {
			continue
		}
		k := key{e.Args.OpName, e.Args.Provider}
		st := stats[k]
		if st == nil {
			st = &KernelStat{Op: k.op, Provider: k.provider}
			stats[k] = st
		}
		st.Count++
		st.Total += time.Duration(e.Dur) * time.Microsecond
	}
	out := make([]KernelStat, 0, len(stats))
	for _, st := range stats {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Total != out[j].Total {
			return out[i].Total > out[j].Total
		}
		return out[i].Op+out[i].Provider < out[j].Op+out[j].Provider
	})
	return out, nil
}
