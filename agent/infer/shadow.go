package infer

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// Shadow tolerances: outputs agree when every element is within absTol + relTol*|primary|.
// Two runs of the same model on the same inputs are bit-identical on CPU; the tolerance is
// there for the same model on another provider or quantization, which should still count as
// agreeing.
const (
	shadowAbsTol = 1e-5
	shadowRelTol = 1e-4
	// shadowQueue bounds the copies waiting for the shadow: past it copies are dropped (and
	// counted), because a shadow must never slow or fail the primary.
	shadowQueue = 64
)

// ShadowStats compares a shadow model's outputs with the primary's on the same inputs.
type ShadowStats struct {
	Version, Bundle string
	// Compared calls, of which Agreed had every output within tolerance.
	Compared, Agreed uint64
	// Dropped copies (queue full) and shadow runs that failed.
	Dropped, Errors uint64
	// MeanAbsDiff over every compared element.
	MeanAbsDiff float64
	// MaxAbsDiff seen.
	MaxAbsDiff float64
	// Top1Compared rows of outputs with a class dimension (last dimension > 1), of which
	// Top1Agreed had the same arg-max.
	Top1Compared, Top1Agreed uint64
}

// AgreementRate is Agreed/Compared (1 when nothing was compared yet, so an idle shadow does not
// read as a disagreeing one).
func (s ShadowStats) AgreementRate() float64 {
	if s.Compared == 0 {
		return 1
	}
	return float64(s.Agreed) / float64(s.Compared)
}

// Top1Rate is Top1Agreed/Top1Compared (1 when nothing was compared).
func (s ShadowStats) Top1Rate() float64 {
	if s.Top1Compared == 0 {
		return 1
	}
	return float64(s.Top1Agreed) / float64(s.Top1Compared)
}

type shadowJob struct {
	in, primary []onnxrt.Tensor
}

type shadow struct {
	m    *Model
	q    chan shadowJob
	done chan struct{}

	mu      sync.Mutex
	st      ShadowStats
	sumDiff float64
	nDiff   uint64
}

// SetShadow makes m the shadow of name: every successful call of name also queues a copy of its
// inputs for m, whose outputs are compared with the primary's and never returned. m nil stops
// shadowing. It returns the previous shadow model, which the caller closes.
func (s *Server) SetShadow(name string, m *Model) (old *Model) {
	var sh *shadow
	if m != nil {
		sh = &shadow{m: m, q: make(chan shadowJob, shadowQueue), done: make(chan struct{}),
			st: ShadowStats{Version: m.Version, Bundle: m.Bundle}}
		go sh.loop()
	}
	s.mu.Lock()
	prev := s.shadows[name]
	if sh == nil {
		delete(s.shadows, name)
	} else {
		s.shadows[name] = sh
	}
	s.mu.Unlock()
	if prev == nil {
		return nil
	}
	// Calls that read prev under the lock may still be sending; they never block (select with
	// default), so closing after they are gone is what the write lock above guaranteed.
	close(prev.q)
	<-prev.done
	return prev.m
}

// ShadowStats returns the comparison of name's shadow, and whether it has one.
func (s *Server) ShadowStats(name string) (ShadowStats, bool) {
	s.mu.RLock()
	sh := s.shadows[name]
	s.mu.RUnlock()
	if sh == nil {
		return ShadowStats{}, false
	}
	return sh.stats(), true
}

func (sh *shadow) stats() ShadowStats {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.st
	if sh.nDiff > 0 {
		st.MeanAbsDiff = sh.sumDiff / float64(sh.nDiff)
	}
	return st
}

// shadowCopy queues a copy of a call for name's shadow, if any, without ever blocking.
func (s *Server) shadowCopy(name string, in, out []onnxrt.Tensor) {
	s.mu.RLock()
	defer s.mu.RUnlock() // held while sending so SetShadow cannot close the queue under us
	sh := s.shadows[name]
	if sh == nil {
		return
	}
	if len(sh.q) == cap(sh.q) {
		sh.drop()
		return
	}
	// The caller may reuse its input buffers once Infer returns; outputs are ours.
	j := shadowJob{in: make([]onnxrt.Tensor, len(in)), primary: out}
	for i, t := range in {
		j.in[i] = cloneTensor(t)
	}
	select {
	case sh.q <- j:
	default:
		sh.drop()
	}
}

func (sh *shadow) drop() {
	sh.mu.Lock()
	sh.st.Dropped++
	sh.mu.Unlock()
}

func (sh *shadow) loop() {
	defer close(sh.done)
	for j := range sh.q {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := sh.m.Run(ctx, j.in)
		cancel()
		sh.mu.Lock()
		if err != nil {
			sh.st.Errors++
			sh.mu.Unlock()
			slog.Debug("shadow run failed", "model", sh.m.Name, "version", sh.m.Version, "err", err)
			continue
		}
		sh.compare(j.primary, out)
		sh.mu.Unlock()
	}
}

// compare updates the stats with one call's outputs; sh.mu is held.
func (sh *shadow) compare(primary, shadow []onnxrt.Tensor) {
	sh.st.Compared++
	agree := len(primary) == len(shadow)
	for i := 0; i < len(primary) && i < len(shadow); i++ {
		p, _ := primary[i].Float64s()
		q, _ := shadow[i].Float64s()
		if len(p) != len(q) || p == nil {
			agree = false
			continue
		}
		for k := range p {
			d := math.Abs(p[k] - q[k])
			if math.IsNaN(d) {
				if !(math.IsNaN(p[k]) && math.IsNaN(q[k])) {
					agree = false
				}
				continue
			}
			sh.sumDiff += d
			sh.nDiff++
			sh.st.MaxAbsDiff = max(sh.st.MaxAbsDiff, d)
			if d > shadowAbsTol+shadowRelTol*math.Abs(p[k]) {
				agree = false
			}
		}
		shape := primary[i].Shape
		if len(shape) > 0 && shape[len(shape)-1] > 1 && slices.Equal(shape, shadow[i].Shape) {
			c := int(shape[len(shape)-1])
			for r := 0; r+c <= len(p); r += c {
				sh.st.Top1Compared++
				if argmax(p[r:r+c]) == argmax(q[r:r+c]) {
					sh.st.Top1Agreed++
				}
			}
		}
	}
	if agree {
		sh.st.Agreed++
	}
}

func argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

func cloneTensor(t onnxrt.Tensor) onnxrt.Tensor {
	t.Shape = slices.Clone(t.Shape)
	switch d := t.Data.(type) {
	case []float32:
		t.Data = slices.Clone(d)
	case []float64:
		t.Data = slices.Clone(d)
	case []uint16:
		t.Data = slices.Clone(d)
	case []int8:
		t.Data = slices.Clone(d)
	case []uint8:
		t.Data = slices.Clone(d)
	case []int16:
		t.Data = slices.Clone(d)
	case []int32:
		t.Data = slices.Clone(d)
	case []uint32:
		t.Data = slices.Clone(d)
	case []int64:
		t.Data = slices.Clone(d)
	case []uint64:
		t.Data = slices.Clone(d)
	case []bool:
		t.Data = slices.Clone(d)
	}
	return t
}
