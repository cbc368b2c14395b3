package spool_test

import (
	"testing"

	"github.com/edgefleet/edgefleet/agent/spool"
)

// BenchmarkAppendAck measures the steady state of a connected agent: append a window, and ack
// what the control plane committed every 16 appends. entries/s is the figure to report.
//
//	go test -run '^$' -bench AppendAck ./agent/spool/
func BenchmarkAppendAck(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts spool.Options
	}{
		{"fsync", spool.Options{MaxBytes: 1 << 20, Merge: sumMerge}},
		{"nosync", spool.Options{MaxBytes: 1 << 20, Merge: sumMerge, NoSync: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := mustOpen(b, b.TempDir(), bc.opts)
			body := countBody(1, 512) // about one latency histogram
			n := 0
			for b.Loop() {
				seq, err := s.Append("hist", body, t0, t0)
				if err != nil {
					b.Fatal(err)
				}
				if n++; n%16 == 0 {
					if err := s.Ack(seq); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkAppendFull measures appends into a full spool, where each append merges.
func BenchmarkAppendFull(b *testing.B) {
	s := mustOpen(b, b.TempDir(), spool.Options{MaxBytes: 64 << 10, Merge: sumMerge, NoSync: true})
	body := countBody(1, 512)
	n := 0
	for b.Loop() {
		if _, err := s.Append("hist", body, t0, t0); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "entries/s")
}
