package infer

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// batchable reports whether every input and output has a dynamic first dimension, the only case
// where stacking requests along it and splitting the outputs back is meaningful.
func batchable(s onnxrt.Schema) bool {
	for _, group := range [][]onnxrt.TensorInfo{s.Inputs, s.Outputs} {
		for _, ti := range group {
			if len(ti.Shape) == 0 || ti.Shape[0] >= 0 {
				return false
			}
		}
	}
	return len(s.Inputs) > 0
}

// batcher stacks concurrent requests of one model version into one run. It is eager when the
// model is idle (a lone request never waits) and batches only what queues up while every run
// slot is busy, up to maxBatch rows or maxWait: at low load latency is that of a direct call,
// at high load throughput is that of larger runs.
type batcher struct {
	m        *Model
	maxBatch int64
	maxWait  time.Duration
	in       chan *job
	stop     chan struct{}
	done     chan struct{}
	running  atomic.Int64 // batches dispatched and not finished
	wg       sync.WaitGroup
}

type job struct {
	in   []onnxrt.Tensor // in schema order, validated
	rows int64
	out  []onnxrt.Tensor
	err  error
	done chan struct{}
}

func newBatcher(m *Model, maxBatch int, maxWait time.Duration) *batcher {
	b := &batcher{m: m, maxBatch: int64(maxBatch), maxWait: maxWait,
		in: make(chan *job, 4*maxBatch), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

// run validates one request on its own (so one caller's bad input fails only that caller),
// queues it and waits for its rows.
func (b *batcher) run(ctx context.Context, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	ordered, err := onnxrt.CheckInputs(b.m.sess.Schema(), in)
	if err != nil {
		return nil, err
	}
	rows := ordered[0].Shape[0]
	for _, t := range ordered[1:] {
		if t.Shape[0] != rows {
			return b.m.direct(ctx, in) // inputs disagree on the batch size: the model decides
		}
	}
	if rows > b.maxBatch {
		return b.m.direct(ctx, in)
	}
	j := &job{in: ordered, rows: rows, done: make(chan struct{})}
	select {
	case b.in <- j:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-j.done:
		return j.out, j.err
	case <-ctx.Done():
		return nil, ctx.Err() // the batch finishes without us
	}
}

func (b *batcher) close() {
	close(b.stop)
	<-b.done
	b.wg.Wait()
}

func (b *batcher) busy() bool { return b.running.Load() >= int64(cap(b.m.slots)) }

func (b *batcher) loop() {
	defer close(b.done)
	var pending []*job
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if len(pending) == 0 {
			select {
			case j := <-b.in:
				pending = append(pending, j)
			case <-b.stop:
				return
			}
		}
		rows := compatibleRows(pending)
		// Take what is already queued without waiting.
	drain:
		for rows < b.maxBatch {
			select {
			case j := <-b.in:
				pending = append(pending, j)
				if compatible(pending[0], j) {
					rows += j.rows
				}
			default:
				break drain
			}
		}
		if rows < b.maxBatch && b.busy() {
			timer.Reset(b.maxWait)
		wait:
			for rows < b.maxBatch && b.busy() {
				select {
				case j := <-b.in:
					pending = append(pending, j)
					if compatible(pending[0], j) {
						rows += j.rows
					}
				case <-timer.C:
					break wait
				case <-b.stop:
					break wait
				}
			}
			timer.Stop()
		}
		var group []*job
		var n int64
		rest := pending[:0:0]
		for _, j := range pending {
			if compatible(pending[0], j) && n+j.rows <= b.maxBatch {
				group = append(group, j)
				n += j.rows
			} else {
				rest = append(rest, j)
			}
		}
		pending = rest
		b.running.Add(1)
		b.wg.Add(1)
		go b.exec(group, n)
	}
}

func compatibleRows(pending []*job) int64 {
	var n int64
	for _, j := range pending {
		if compatible(pending[0], j) {
			n += j.rows
		}
	}
	return n
}

// compatible: same datatypes and the same dimensions after the first, for every input.
func compatible(a, b *job) bool {
	for i := range a.in {
		if a.in[i].DType != b.in[i].DType || !slices.Equal(a.in[i].Shape[1:], b.in[i].Shape[1:]) {
			return false
		}
	}
	return true
}

// exec runs a group as one call and hands each job its rows.
func (b *batcher) exec(group []*job, rows int64) {
	defer b.wg.Done()
	defer b.running.Add(-1)
	defer func() {
		for _, j := range group {
			close(j.done)
		}
	}()
	b.m.met.observeBatch(rows)
	ctx := context.Background() // the run serves several callers; each stops waiting on its own
	if len(group) == 1 {
		group[0].out, group[0].err = b.m.direct(ctx, group[0].in)
		return
	}
	in := make([]onnxrt.Tensor, len(group[0].in))
	parts := make([]onnxrt.Tensor, len(group))
	for i := range in {
		for k, j := range group {
			parts[k] = j.in[i]
		}
		in[i] = concat(parts, rows)
	}
	out, err := b.m.direct(ctx, in)
	if err == nil {
		for _, o := range out {
			if len(o.Shape) == 0 || o.Shape[0] != rows {
				err = errSplit
			}
		}
	}
	if err == errSplit {
		// The model's outputs do not follow its inputs' first dimension after all: serve each
		// request on its own rather than guess.
		for _, j := range group {
			j.out, j.err = b.m.direct(ctx, j.in)
		}
		return
	}
	if err != nil {
		for _, j := range group {
			j.err = err
		}
		return
	}
	var at int64
	for _, j := range group {
		j.out = make([]onnxrt.Tensor, len(out))
		for i, o := range out {
			j.out[i] = rowsOf(o, at, j.rows, rows)
		}
		at += j.rows
	}
}

var errSplit = &splitError{}

type splitError struct{}

func (*splitError) Error() string { return "batched outputs do not split by rows" }

// concat stacks tensors of equal trailing dimensions along the first.
func concat(ts []onnxrt.Tensor, rows int64) onnxrt.Tensor {
	shape := slices.Clone(ts[0].Shape)
	shape[0] = rows
	t := onnxrt.Tensor{Name: ts[0].Name, DType: ts[0].DType, Shape: shape}
	switch ts[0].Data.(type) {
	case []float32:
		t.Data = cat[float32](ts)
	case []float64:
		t.Data = cat[float64](ts)
	case []uint16:
		t.Data = cat[uint16](ts)
	case []int8:
		t.Data = cat[int8](ts)
	case []uint8:
		t.Data = cat[uint8](ts)
	case []int16:
		t.Data = cat[int16](ts)
	case []int32:
		t.Data = cat[int32](ts)
	case []uint32:
		t.Data = cat[uint32](ts)
	case []int64:
		t.Data = cat[int64](ts)
	case []uint64:
		t.Data = cat[uint64](ts)
	case []bool:
		t.Data = cat[bool](ts)
	}
	return t
}

func cat[T any](ts []onnxrt.Tensor) []T {
	n := 0
	for _, t := range ts {
		n += len(t.Data.([]T))
	}
	out := make([]T, 0, n)
	for _, t := range ts {
		out = append(out, t.Data.([]T)...)
	}
	return out
}

// rowsOf returns rows [at, at+n) of t, whose first dimension is total. The data is a sub-slice:
// outputs are read-only.
func rowsOf(t onnxrt.Tensor, at, n, total int64) onnxrt.Tensor {
	shape := slices.Clone(t.Shape)
	shape[0] = n
	r := onnxrt.Tensor{Name: t.Name, DType: t.DType, Shape: shape}
	stride := int64(t.Len()) / total
	lo, hi := at*stride, (at+n)*stride
	switch d := t.Data.(type) {
	case []float32:
		r.Data = d[lo:hi:hi]
	case []float64:
		r.Data = d[lo:hi:hi]
	case []uint16:
		r.Data = d[lo:hi:hi]
	case []int8:
		r.Data = d[lo:hi:hi]
	case []uint8:
		r.Data = d[lo:hi:hi]
	case []int16:
		r.Data = d[lo:hi:hi]
	case []int32:
		r.Data = d[lo:hi:hi]
	case []uint32:
		r.Data = d[lo:hi:hi]
	case []int64:
		r.Data = d[lo:hi:hi]
	case []uint64:
		r.Data = d[lo:hi:hi]
	case []bool:
		r.Data = d[lo:hi:hi]
	}
	return r
}
