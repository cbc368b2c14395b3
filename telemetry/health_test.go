package telemetry

import (
	"context"
	"math"
	"runtime"
	"testing"
)

func TestCollectHealthReadsTheHost(t *testing.T) {
	h := CollectHealth(context.Background(), t.TempDir())
	if h.MemTotalBytes == 0 || h.MemUsedBytes == 0 || h.MemUsedBytes > h.MemTotalBytes {
		t.Fatalf("memory figures implausible: %+v", h)
	}
	if h.DiskFreeBytes == 0 {
		t.Fatalf("disk free not read: %+v", h)
	}
	if h.UptimeSeconds == 0 {
		t.Fatalf("uptime not read: %+v", h)
	}
	if runtime.GOOS == "linux" && h.ProcessRSS == 0 {
		t.Fatalf("process RSS not read on linux")
	}
	if h.CPUPercent < 0 || h.CPUPercent > 100 {
		t.Fatalf("cpu percent %v out of range", h.CPUPercent)
	}
}

func TestCollectHostFacts(t *testing.T) {
	f := CollectHostFacts(context.Background(), t.TempDir())
	if f.OS != runtime.GOOS || f.Arch != runtime.GOARCH || f.CPUs < 1 || f.MemoryBytes == 0 {
		t.Fatalf("host facts: %+v", f)
	}
}

func TestFiniteKeepsHealthEncodable(t *testing.T) {
	for _, c := range []struct{ in, want float64 }{{math.NaN(), 0}, {math.Inf(1), 0}, {math.Inf(-1), 0}, {42.5, 42.5}} {
		if got := finite(c.in); got != c.want {
			t.Errorf("finite(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
