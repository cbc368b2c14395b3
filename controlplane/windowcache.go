package controlplane

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/ingest"
	"github.com/edgefleet/edgefleet/telemetry"
)

// Bounds of the window cache. A decoded window held about 760 bytes in BenchmarkCohortMetrics'
// fleet (a latency histogram, no drift summary; a drift summary adds its features' bins), so the
// total bound is about 1.1 GiB of such windows: 10,000 devices with two hours each.
const (
	// windowCacheIdle: a device no gate asked about for this long is forgotten, and a since no
	// one asked for in this long no longer keeps older windows.
	windowCacheIdle = 10 * time.Minute
	// windowCacheMaxPerDevice: a device with more windows than this in the span asked for (windows
	// far shorter than a minute) is read uncached rather than held.
	windowCacheMaxPerDevice = 20000
	// windowCacheMaxTotal: past this many windows held, devices not yet cached are read uncached
	// (admitting them by evicting others would make a fleet-wide reconcile loop miss every time).
	windowCacheMaxTotal = 1_500_000
	// windowCacheMaxAsks bounds the distinct sinces remembered per device.
	windowCacheMaxAsks = 16
	// retentionMargin keeps reads away from the retention edge, where another replica's
	// Prune may have deleted windows this cache still holds.
	retentionMargin = 10 * time.Minute
)

// windowCache keeps each device's decoded inference windows so that a gate's reconcile decodes
// only what was committed since the last one: ingest.QueryChanged tells, from the device's
// sequence accounting, the lowest sequence number that may have been written since, and the cache
// replaces what it held from there on (a spool's merged window rewrites a finer one's key, a late
// window fills a gap below the newest). Results equal the uncached read of the same store state.
// Safe for concurrent use: reads of different devices run in parallel, reads of one device one at
// a time.
type windowCache struct {
	ing *ingest.Ingest
	now func() time.Time

	mu     sync.Mutex
	devs   map[string]*deviceWindows
	swept  time.Time
	total  atomic.Int64 // windows held over all devices
	hits   atomic.Int64 // reads served from the cache (with or without an incremental read)
	misses atomic.Int64 // reads that went to the uncached path
}

// deviceWindows is one device's held windows.
type deviceWindows struct {
	used atomic.Int64 // unix nanoseconds of the last read; evicts idle devices

	mu      sync.Mutex
	gone    bool // evicted: a reader that still holds it reads uncached
	read    bool
	mark    ingest.Mark
	floor   time.Time       // every stored window received at or after floor is held
	ws      []heldWindow    // by sequence number
	asks    map[int64]int64 // since (unix ns) -> when last asked (unix ns)
	counted int             // len(ws) as added to the cache's total
}

type heldWindow struct {
	seq uint64
	at  time.Time // the envelope's time (Query's since compares it)
	w   telemetry.InferenceWindow
}

func newWindowCache(ing *ingest.Ingest) *windowCache {
	return &windowCache{ing: ing, now: time.Now, devs: map[string]*deviceWindows{}}
}

// windows is cohorts.windows served from the cache where it can be.
func (wc *windowCache) windows(ctx context.Context, device, model string, since time.Time) []telemetry.InferenceWindow {
	now := wc.now()
	if since.Before(now.Add(-wc.ing.Retention() + retentionMargin)) {
		wc.misses.Add(1)
		return uncachedWindows(ctx, wc.ing, device, model, since)
	}
	d := wc.device(device, now)
	if d == nil {
		wc.misses.Add(1)
		return uncachedWindows(ctx, wc.ing, device, model, since)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gone {
		wc.misses.Add(1)
		return uncachedWindows(ctx, wc.ing, device, model, since)
	}
	if err := wc.refresh(ctx, device, d, since, now); err != nil {
		wc.forget(device, d)
		return nil // as the uncached path does when the store cannot be read
	}
	if len(d.ws) > windowCacheMaxPerDevice {
		out := d.match(model, since)
		wc.forget(device, d)
		wc.misses.Add(1)
		return out
	}
	wc.hits.Add(1)
	return d.match(model, since)
}

// device returns the device's entry, created when the cache has room (nil otherwise), and
// evicts idle devices now and then.
func (wc *windowCache) device(device string, now time.Time) *deviceWindows {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if now.Sub(wc.swept) > windowCacheIdle/4 {
		wc.swept = now
		cut := now.Add(-windowCacheIdle).UnixNano()
		for id, d := range wc.devs {
			// A device being read is not idle; TryLock keeps the sweep from waiting on its store read.
			if d.used.Load() < cut && d.mu.TryLock() {
				wc.drop(id, d)
				d.mu.Unlock()
			}
		}
	}
	d := wc.devs[device]
	if d == nil {
		if wc.total.Load() >= windowCacheMaxTotal {
			return nil
		}
		d = &deviceWindows{asks: map[int64]int64{}}
		wc.devs[device] = d
	}
	d.used.Store(now.UnixNano())
	return d
}

// drop removes d (locked by the caller, as is wc.mu).
func (wc *windowCache) drop(id string, d *deviceWindows) {
	d.gone = true
	wc.total.Add(-int64(d.counted))
	d.counted, d.ws = 0, nil
	if wc.devs[id] == d {
		delete(wc.devs, id)
	}
}

// forget evicts d (locked by the caller).
func (wc *windowCache) forget(id string, d *deviceWindows) {
	wc.mu.Lock()
	wc.drop(id, d)
	wc.mu.Unlock()
}

// refresh brings d up to date with the store for a read since a time.
func (wc *windowCache) refresh(ctx context.Context, device string, d *deviceWindows, since, now time.Time) error {
	// Remember who asks for what: the oldest since asked for recently is how far back windows are kept.
	key := since.UnixNano()
	if _, ok := d.asks[key]; !ok && len(d.asks) >= windowCacheMaxAsks {
		oldest, at := int64(0), int64(0)
		for k, t := range d.asks {
			if at == 0 || t < at {
				oldest, at = k, t
			}
		}
		delete(d.asks, oldest)
	}
	d.asks[key] = now.UnixNano()
	floor := since
	cut := now.Add(-windowCacheIdle).UnixNano()
	for k, t := range d.asks {
		if t < cut {
			delete(d.asks, k)
		} else if k < floor.UnixNano() {
			floor = time.Unix(0, k)
		}
	}
	old, full := d.mark, !d.read || since.Before(d.floor)
	if full {
		// First read, or an older since than what is held: read everything again.
		old = ingest.Mark{}
		d.ws = nil
	}
	ch, err := wc.ing.QueryChanged(ctx, device, telemetry.KindInference, old)
	if err != nil {
		return err
	}
	d.read, d.mark = true, ch.Mark
	if ch.Changed {
		k := sort.Search(len(d.ws), func(i int) bool { return d.ws[i].seq >= ch.From })
		clear(d.ws[k:]) // the tail is replaced (readers got copies)
		d.ws = d.ws[:k]
		for _, m := range ch.Msgs {
			if m.At.Before(floor) {
				continue
			}
			var w telemetry.InferenceWindow
			if json.Unmarshal(m.Body, &w) == nil {
				d.ws = append(d.ws, heldWindow{seq: m.Seq, at: m.At, w: w})
			}
		}
	}
	if !full && floor.After(d.floor) {
		// Drop what no recent asker reaches back to (in place, keeping the order by seq).
		kept := d.ws[:0]
		for _, h := range d.ws {
			if !h.at.Before(floor) {
				kept = append(kept, h)
			}
		}
		clear(d.ws[len(kept):])
		d.ws = kept
	}
	d.floor = floor
	wc.total.Add(int64(len(d.ws) - d.counted))
	d.counted = len(d.ws)
	return nil
}

// match returns the held windows of a model since a time as the uncached read orders them
// (by time received).
func (d *deviceWindows) match(model string, since time.Time) []telemetry.InferenceWindow {
	var idx []int
	sorted := true
	for i := range d.ws {
		h := &d.ws[i]
		if h.w.Model == model && !h.at.Before(since) && !h.w.End.Before(since) {
			if len(idx) > 0 && h.at.Before(d.ws[idx[len(idx)-1]].at) {
				sorted = false // a late or merged window: received out of seq order
			}
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	if !sorted {
		sort.SliceStable(idx, func(i, j int) bool { return d.ws[idx[i]].at.Before(d.ws[idx[j]].at) })
	}
	out := make([]telemetry.InferenceWindow, len(idx))
	for i, k := range idx {
		out[i] = d.ws[k].w
	}
	return out
}

// uncachedWindows returns a device's inference windows of a model since a time, read and decoded
// from the store.
func uncachedWindows(ctx context.Context, ing *ingest.Ingest, device, model string, since time.Time) []telemetry.InferenceWindow {
	msgs, err := ing.Query(ctx, device, telemetry.KindInference, since, 0)
	if err != nil {
		return nil
	}
	var out []telemetry.InferenceWindow
	for _, m := range msgs {
		var w telemetry.InferenceWindow
		if json.Unmarshal(m.Body, &w) == nil && w.Model == model && !w.End.Before(since) {
			out = append(out, w)
		}
	}
	return out
}
