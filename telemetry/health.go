package telemetry

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/disk"
	"github.com/shirou/gopsutil/v3/host"
	"github.com/shirou/gopsutil/v3/mem"
)

// Telemetry kinds (the last topic level).
const (
	KindHealth    = "health"
	KindInference = "inference"
	KindDrift     = "drift"
	KindInstall   = "install"
	KindFeedback  = "feedback"
)

// Health is one health sample of a device. Fields the host cannot provide stay zero or nil.
type Health struct {
	CPUPercent    float64  `json:"cpu_percent"`
	MemUsedBytes  uint64   `json:"mem_used_bytes"`
	MemTotalBytes uint64   `json:"mem_total_bytes"`
	MemPercent    float64  `json:"mem_percent"`
	DiskFreeBytes uint64   `json:"disk_free_bytes"`
	TempCelsius   *float64 `json:"temp_celsius,omitempty"`
	UptimeSeconds uint64   `json:"uptime_seconds"`
	ProcessRSS    uint64   `json:"process_rss_bytes,omitempty"`
	// Budget is the device's telemetry byte budget, when it has one (agent --telemetry-budget).
	Budget *BudgetReport `json:"budget,omitempty"`
}

// finite maps NaN and infinities to 0: gopsutil divides by the ticks that passed in its window,
// which can be none on a starved machine, and JSON has no NaN (the whole message would be lost).
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// CollectHealth samples the host. dataDir is the folder whose file system's free space matters
// (the agent's bundles live there). CPU percent is measured over a short window so the first
// sample is meaningful.
func CollectHealth(ctx context.Context, dataDir string) Health {
	var h Health
	if p, err := cpu.PercentWithContext(ctx, 200*time.Millisecond, false); err == nil && len(p) > 0 {
		h.CPUPercent = finite(p[0])
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		h.MemUsedBytes, h.MemTotalBytes, h.MemPercent = vm.Used, vm.Total, finite(vm.UsedPercent)
	}
	if dataDir != "" {
		if du, err := disk.UsageWithContext(ctx, dataDir); err == nil {
			h.DiskFreeBytes = du.Free
		}
	}
	if up, err := host.UptimeWithContext(ctx); err == nil {
		h.UptimeSeconds = up
	}
	if temps, err := host.SensorsTemperaturesWithContext(ctx); err == nil {
		// The hottest sensor is what throttles inference; report that one.
		var hot float64
		found := false
		for _, s := range temps {
			if s.Temperature > 0 && s.Temperature < 200 && (!found || s.Temperature > hot) {
				hot, found = s.Temperature, true
			}
		}
		if found {
			h.TempCelsius = &hot
		}
	}
	h.ProcessRSS = processRSS()
	return h
}

// processRSS reads VmRSS from /proc/self/status (Linux); 0 elsewhere.
func processRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb uint64
			for _, c := range strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")) {
				if c < '0' || c > '9' {
					break
				}
				kb = kb*10 + uint64(c-'0')
			}
			return kb * 1024
		}
	}
	return 0
}

// CollectHostFacts describes the device once at start-up.
func CollectHostFacts(ctx context.Context, dataDir string) wire.HostFacts {
	f := wire.HostFacts{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()}
	if infos, err := cpu.InfoWithContext(ctx); err == nil && len(infos) > 0 {
		f.CPUModel = infos[0].ModelName
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		f.MemoryBytes = vm.Total
	}
	if dataDir != "" {
		if du, err := disk.UsageWithContext(ctx, dataDir); err == nil {
			f.DiskFree = du.Free
		}
	}
	f.Hostname, _ = os.Hostname()
	f.Accelerators = DetectAccelerators()
	return f
}

// DetectAccelerators looks for an NVIDIA GPU or a Jetson without loading any GPU library, so it
// is cheap and safe on every device.
func DetectAccelerators() []string {
	var out []string
	if b, err := os.ReadFile("/etc/nv_tegra_release"); err == nil {
		line := strings.SplitN(string(b), "\n", 2)[0]
		out = append(out, "jetson: "+strings.TrimSpace(strings.TrimPrefix(line, "#")))
	}
	if m, _ := filepath.Glob("/dev/nvidia[0-9]*"); len(m) > 0 {
		out = append(out, "nvidia-gpu")
	}
	return out
}
