package hist

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// Layout of the latency buckets. Bucket k (1..numBuckets) holds (lo*gamma^(k-1), lo*gamma^k];
// bucket 0 holds everything at or below lo, and the last slot everything above the top.
// gamma = (1+RelativeError)/(1-RelativeError) is the DDSketch construction: reporting
// 2*lower*upper/(lower+upper) for a bucket is then within RelativeError of any value in it.
const (
	// LayoutVersion names the bucket layout below; snapshots of another layout do not merge.
	LayoutVersion = 1
	// RelativeError bounds |estimate-true|/true for quantiles inside the bucketed range.
	RelativeError = 0.05
	// Lowest and Highest bound the bucketed range; values outside still count, in the two
	// open buckets, and quantiles falling there are reported as the exact Min or Max.
	Lowest  = time.Microsecond
	Highest = 60 * time.Second
)

var (
	gamma      = (1 + RelativeError) / (1 - RelativeError)
	logGamma   = math.Log(gamma)
	numBuckets = int(math.Ceil(math.Log(float64(Highest)/float64(Lowest)) / logGamma))
	// numSlots counts the underflow bucket, numBuckets log buckets and the overflow bucket.
	numSlots = numBuckets + 2
)

// ErrLayout is returned when snapshots of different layouts meet or a snapshot is malformed.
var ErrLayout = errors.New("hist: incompatible or malformed latency snapshot")

// bucketOf maps a duration in nanoseconds to its slot.
func bucketOf(ns int64) int {
	if ns <= int64(Lowest) {
		return 0
	}
	if ns > int64(Highest) {
		return numSlots - 1
	}
	k := int(math.Ceil(math.Log(float64(ns)/float64(Lowest)) / logGamma))
	// Floating point can put an exact bucket boundary one slot off; the slot is still within
	// the error bound of its neighbour, so only keep the index in range.
	return min(max(k, 1), numBuckets)
}

// representative is the value reported for a log bucket: the harmonic mean of its bounds, which
// is within RelativeError of every value in the bucket.
func representative(k int) float64 {
	lo := float64(Lowest) * math.Pow(gamma, float64(k-1))
	hi := lo * gamma
	return 2 * lo * hi / (lo + hi)
}

// Latency is a latency histogram safe for concurrent Observe. The zero value is not ready; use
// NewLatency. Observe is lock-free: one atomic add per bucket and count, plus compare-and-swap
// only when a new minimum or maximum is seen.
type Latency struct {
	buckets []atomic.Uint64
	sum     atomic.Int64
	min     atomic.Int64
	max     atomic.Int64
}

// NewLatency returns an empty latency histogram.
func NewLatency() *Latency {
	h := &Latency{buckets: make([]atomic.Uint64, numSlots)}
	h.min.Store(math.MaxInt64)
	h.max.Store(math.MinInt64)
	return h
}

// Observe records one latency. Negative durations (a clock stepping back) count as zero rather
// than being dropped, so counts still match the requests served.
func (h *Latency) Observe(d time.Duration) {
	ns := max(int64(d), 0)
	h.buckets[bucketOf(ns)].Add(1)
	h.sum.Add(ns)
	for cur := h.min.Load(); ns < cur && !h.min.CompareAndSwap(cur, ns); cur = h.min.Load() {
	}
	for cur := h.max.Load(); ns > cur && !h.max.CompareAndSwap(cur, ns); cur = h.max.Load() {
	}
}

// Snapshot copies the histogram. Observations running concurrently may be in the buckets but not
// yet in the sum (or the reverse); Count is taken from the buckets so quantiles stay consistent.
func (h *Latency) Snapshot() Snapshot {
	s := Snapshot{Layout: LayoutVersion, counts: make([]uint64, numSlots)}
	for i := range h.buckets {
		n := h.buckets[i].Load()
		s.counts[i] = n
		s.Count += n
	}
	if s.Count > 0 {
		s.Sum = time.Duration(h.sum.Load())
		s.Min = time.Duration(h.min.Load())
		s.Max = time.Duration(h.max.Load())
	}
	return s
}

// Snapshot is an immutable copy of a latency histogram: what goes on the wire (as compact JSON
// with sparse buckets), into the spool and into fleet aggregates. The zero value is an empty
// snapshot of the current layout.
type Snapshot struct {
	Layout int
	Count  uint64
	Sum    time.Duration
	Min    time.Duration
	Max    time.Duration
	counts []uint64 // numSlots long, or nil when empty
}

// Mean is Sum/Count, or zero for an empty snapshot.
func (s Snapshot) Mean() time.Duration {
	if s.Count == 0 {
		return 0
	}
	return time.Duration(int64(s.Sum) / int64(s.Count))
}

// Quantile returns the nearest-rank q-quantile (q in [0,1]), within RelativeError of the exact
// order statistic for values inside [Lowest, Highest] and clamped to [Min, Max]. It is 0 for an
// empty snapshot.
func (s Snapshot) Quantile(q float64) time.Duration {
	if s.Count == 0 || s.counts == nil || math.IsNaN(q) {
		return 0
	}
	rank := uint64(math.Ceil(min(max(q, 0), 1) * float64(s.Count)))
	rank = max(rank, 1)
	var cum uint64
	for k, n := range s.counts {
		cum += n
		if cum < rank {
			continue
		}
		switch k {
		case 0:
			return s.Min
		case numSlots - 1:
			return s.Max
		}
		v := time.Duration(math.Round(representative(k)))
		return min(max(v, s.Min), s.Max)
	}
	return s.Max
}

// Merge returns the snapshot of both inputs' observations together. Merging is exact, so it is
// associative and commutative.
func (s Snapshot) Merge(o Snapshot) (Snapshot, error) {
	if s.layout() != LayoutVersion || o.layout() != LayoutVersion {
		return Snapshot{}, fmt.Errorf("merge layouts %d and %d: %w", s.layout(), o.layout(), ErrLayout)
	}
	switch {
	case o.Count == 0:
		return s.clone(), nil
	case s.Count == 0:
		return o.clone(), nil
	}
	out := Snapshot{
		Layout: LayoutVersion,
		Count:  s.Count + o.Count,
		Sum:    s.Sum + o.Sum,
		Min:    min(s.Min, o.Min),
		Max:    max(s.Max, o.Max),
		counts: make([]uint64, numSlots),
	}
	for i := range out.counts {
		out.counts[i] = s.counts[i] + o.counts[i]
	}
	return out, nil
}

func (s Snapshot) layout() int {
	if s.Layout == 0 {
		return LayoutVersion
	}
	return s.Layout
}

func (s Snapshot) clone() Snapshot {
	s.Layout = LayoutVersion
	if s.counts != nil {
		s.counts = append([]uint64(nil), s.counts...)
	}
	return s
}

// snapshotJSON is the wire form: durations in nanoseconds and only non-empty buckets, as
// [slot, count] pairs, so an idle model costs a few bytes and a busy one a few hundred.
type snapshotJSON struct {
	Layout  int         `json:"layout"`
	Count   uint64      `json:"count"`
	SumNS   int64       `json:"sum_ns"`
	MinNS   int64       `json:"min_ns"`
	MaxNS   int64       `json:"max_ns"`
	Buckets [][2]uint64 `json:"buckets"`
}

// MarshalJSON writes the compact sparse form.
func (s Snapshot) MarshalJSON() ([]byte, error) {
	w := snapshotJSON{Layout: s.layout(), Count: s.Count, SumNS: int64(s.Sum), MinNS: int64(s.Min), MaxNS: int64(s.Max), Buckets: [][2]uint64{}}
	for k, n := range s.counts {
		if n > 0 {
			w.Buckets = append(w.Buckets, [2]uint64{uint64(k), n})
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads the sparse form and checks it, since snapshots arrive from devices.
func (s *Snapshot) UnmarshalJSON(b []byte) error {
	var w snapshotJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("decode latency snapshot: %w", err)
	}
	if w.Layout != LayoutVersion {
		return fmt.Errorf("latency snapshot layout %d, want %d: %w", w.Layout, LayoutVersion, ErrLayout)
	}
	out := Snapshot{Layout: LayoutVersion, Count: w.Count}
	var total uint64
	if len(w.Buckets) > 0 {
		out.counts = make([]uint64, numSlots)
	}
	for _, p := range w.Buckets {
		if p[0] >= uint64(numSlots) {
			return fmt.Errorf("latency snapshot bucket %d out of range: %w", p[0], ErrLayout)
		}
		out.counts[p[0]] += p[1]
		total += p[1]
	}
	if total != w.Count {
		return fmt.Errorf("latency snapshot count %d but buckets hold %d: %w", w.Count, total, ErrLayout)
	}
	if w.Count > 0 {
		if w.MinNS > w.MaxNS || w.MinNS < 0 {
			return fmt.Errorf("latency snapshot min %d max %d: %w", w.MinNS, w.MaxNS, ErrLayout)
		}
		out.Sum, out.Min, out.Max = time.Duration(w.SumNS), time.Duration(w.MinNS), time.Duration(w.MaxNS)
	}
	*s = out
	return nil
}

// Sum adds snapshots up in place. Folding many snapshots with Merge allocates a new one per merge,
// which an aggregate over thousands of windows (a rollout gate's cohort, every reconcile) pays
// thousands of times; Sum allocates its buckets once. The zero value is an empty sum.
type Sum struct {
	s   Snapshot
	own bool // s.counts belongs to this Sum, not to an input or a returned Snapshot
}

// Set makes o the sum (o is not copied: the sum copies it before the first Add changes it).
func (a *Sum) Set(o Snapshot) { a.s, a.own = o, false }

// Count is the number of observations summed.
func (a *Sum) Count() uint64 { return a.s.Count }

// Add adds o's observations, as a.Set(a.Snapshot().Merge(o)) would; when the layouts do not merge
// it returns Merge's error and leaves the sum as it was.
func (a *Sum) Add(o Snapshot) error {
	if a.s.layout() != LayoutVersion || o.layout() != LayoutVersion {
		return fmt.Errorf("merge layouts %d and %d: %w", a.s.layout(), o.layout(), ErrLayout)
	}
	switch {
	case o.Count == 0:
		a.s.Layout = LayoutVersion
		return nil
	case a.s.Count == 0:
		a.Set(o)
		a.s.Layout = LayoutVersion
		return nil
	}
	if !a.own || a.s.counts == nil {
		c := make([]uint64, numSlots)
		copy(c, a.s.counts)
		a.s.counts, a.own = c, true
	}
	a.s.Layout = LayoutVersion
	a.s.Count += o.Count
	a.s.Sum += o.Sum
	a.s.Min = min(a.s.Min, o.Min)
	a.s.Max = max(a.s.Max, o.Max)
	for i, n := range o.counts {
		a.s.counts[i] += n
	}
	return nil
}

// Snapshot returns the sum so far; later Adds do not change it.
func (a *Sum) Snapshot() Snapshot {
	a.own = false // the caller now shares the buckets: the next Add copies them
	return a.s
}
