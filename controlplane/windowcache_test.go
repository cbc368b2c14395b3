package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/ingest"
	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/telemetry"
	"github.com/edgefleet/edgefleet/telemetry/hist"
)

// gateRig is a control plane's telemetry path without the network: a bbolt store, the ingest
// pipeline writing it, a fleet registry, and two cohorts readers over them, one with the window
// cache and one without.
type gateRig struct {
	tb            testing.TB
	ctx           context.Context
	topics        wire.Topics
	ing           *ingest.Ingest
	reg           *fleet.Registry
	cached, plain *cohorts
	seq           map[string]uint64
}

func newGateRig(tb testing.TB) *gateRig {
	tb.Helper()
	st, err := store.OpenBolt(filepath.Join(tb.TempDir(), "cp.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	topics := wire.NewTopics("")
	ctx := context.Background()
	ing := ingest.New(st, func(context.Context, string, []byte, byte, bool) error { return nil }, topics, 0, log)
	reg, err := fleet.Open(ctx, st, topics, log)
	if err != nil {
		tb.Fatal(err)
	}
	return &gateRig{tb: tb, ctx: ctx, topics: topics, ing: ing, reg: reg, seq: map[string]uint64{},
		cached: &cohorts{ing: ing, reg: reg, wins: newWindowCache(ing)},
		plain:  &cohorts{ing: ing, reg: reg}}
}

// serve reports that a device serves a bundle of model "m".
func (r *gateRig) serve(dev, bundle string) {
	b, _ := json.Marshal(wire.Reported{Device: dev, Models: map[string]wire.ModelReport{"m": {Active: bundle}}})
	if err := r.reg.HandleMessage(r.topics.Reported(dev), b); err != nil {
		r.tb.Fatal(err)
	}
}

// body is an inference window of a model and bundle ending at end, with requests served at a
// latency.
func body(model, bundle string, end time.Time, requests int, lat time.Duration) json.RawMessage {
	h := hist.NewLatency()
	for i := range requests {
		h.Observe(lat + time.Duration(i%7)*time.Millisecond/10)
	}
	b, _ := json.Marshal(telemetry.InferenceWindow{Model: model, Bundle: bundle, Start: end.Add(-time.Minute), End: end,
		Requests: uint64(requests), Errors: uint64(requests / 50), Latency: h.Snapshot(), Correct: uint64(requests / 3), Labeled: uint64(requests / 2)})
	return b
}

// send commits one message as the agent's drainer sends it (the next seq unless seq is given).
func (r *gateRig) send(m wire.Telemetry) {
	if m.Seq == 0 {
		r.seq[m.Device]++
		m.Seq = r.seq[m.Device]
	}
	r.seq[m.Device] = max(r.seq[m.Device], m.Seq)
	if m.Kind == "" {
		m.Kind = telemetry.KindInference
	}
	r.ing.Handle(m)
}

// windows sends n one-minute windows of a bundle ending from end on (a minute apart).
func (r *gateRig) windows(dev, bundle string, end time.Time, n, requests int) {
	for i := range n {
		at := end.Add(time.Duration(i) * time.Minute)
		r.send(wire.Telemetry{Device: dev, At: at, Body: body("m", bundle, at, requests, 5*time.Millisecond)})
	}
}

func (r *gateRig) flush() {
	if err := r.ing.Flush(r.ctx); err != nil {
		r.tb.Fatal(err)
	}
}

// The cached read equals the uncached one after every kind of change to a device's telemetry
// and as the window a gate looks at moves.
func TestWindowCacheEqualsUncached(t *testing.T) {
	r := newGateRig(t)
	t0 := time.Now().Add(-3 * time.Hour).Truncate(time.Minute)
	devices := []string{"c1", "c2", "b1", "b2", "silent"}
	canary, baseline := []string{"c1", "c2", "silent"}, []string{"b1", "b2", "silent"}
	steps := []struct {
		name  string
		do    func()
		since time.Time
	}{
		{"no telemetry at all", func() {}, t0},
		{"history on the old bundle, canaries switch", func() {
			for _, d := range devices[:4] {
				r.windows(d, "old", t0, 70, 100)
				r.serve(d, "old")
			}
			r.serve("c1", "new")
			r.serve("c2", "new")
			r.windows("c1", "new", t0.Add(70*time.Minute), 10, 80)
		}, t0.Add(70 * time.Minute)},
		{"appends on every device", func() {
			r.windows("c1", "new", t0.Add(80*time.Minute), 5, 90)
			r.windows("c2", "new", t0.Add(70*time.Minute), 15, 70)
			r.windows("b1", "old", t0.Add(70*time.Minute), 15, 100)
			r.windows("b2", "old", t0.Add(70*time.Minute), 15, 100)
		}, t0.Add(70 * time.Minute)},
		{"nothing new", func() {}, t0.Add(70 * time.Minute)},
		{"other kinds and another model only", func() {
			r.send(wire.Telemetry{Device: "c1", Kind: "health", At: t0.Add(86 * time.Minute), Body: json.RawMessage(`{}`)})
			at := t0.Add(86 * time.Minute)
			r.send(wire.Telemetry{Device: "b1", At: at, Body: body("other", "x", at, 500, time.Millisecond)})
		}, t0.Add(70 * time.Minute)},
		{"a gap, then the late windows fill it below the newest", func() {
			at := t0.Add(88 * time.Minute)
			r.send(wire.Telemetry{Device: "c2", Seq: r.seq["c2"] + 3, At: at, Body: body("m", "new", at, 60, 6*time.Millisecond)})
			r.flush()
			if got, want := r.cached.windows(r.ctx, "c2", "m", t0.Add(70*time.Minute)), r.plain.windows(r.ctx, "c2", "m", t0.Add(70*time.Minute)); !reflect.DeepEqual(got, want) {
				t.Fatalf("before the gap filled: %d cached windows, %d stored", len(got), len(want))
			}
			for i := uint64(2); i >= 1; i-- {
				at := t0.Add(time.Duration(88-i) * time.Minute)
				r.send(wire.Telemetry{Device: "c2", Seq: r.seq["c2"] - i, At: at, Body: body("m", "new", at, 65, 6*time.Millisecond)})
			}
		}, t0.Add(70 * time.Minute)},
		{"merged window rewrites a finer window's key", func() {
			// c1 sends seq s+1 and s+3; s+2 is lost; the spool merges s+2..s+3 and sends it as s+3.
			s := r.seq["c1"]
			at := t0.Add(90 * time.Minute)
			r.send(wire.Telemetry{Device: "c1", Seq: s + 1, At: at, Body: body("m", "new", at, 40, 5*time.Millisecond)})
			r.send(wire.Telemetry{Device: "c1", Seq: s + 3, At: at.Add(2 * time.Minute), Body: body("m", "new", at.Add(2*time.Minute), 40, 5*time.Millisecond)})
			r.flush()
			r.cached.windows(r.ctx, "c1", "m", t0.Add(70*time.Minute)) // the cache holds the finer window
			r.send(wire.Telemetry{Device: "c1", Seq: s + 3, FirstSeq: s + 2, At: at.Add(2 * time.Minute),
				Body: body("m", "new", at.Add(2*time.Minute), 95, 9*time.Millisecond)})
		}, t0.Add(70 * time.Minute)},
		{"merged window with holes (Covers) over windows of another kind", func() {
			s := r.seq["b2"]
			at := t0.Add(92 * time.Minute)
			r.send(wire.Telemetry{Device: "b2", Seq: s + 1, Kind: "health", At: at, Body: json.RawMessage(`{}`)})
			r.send(wire.Telemetry{Device: "b2", Seq: s + 3, Kind: "health", At: at, Body: json.RawMessage(`{}`)})
			r.send(wire.Telemetry{Device: "b2", Seq: s + 4, Covers: [][2]uint64{{s + 2, s + 2}, {s + 4, s + 4}}, At: at,
				Body: body("m", "old", at, 300, 4*time.Millisecond)})
		}, t0.Add(70 * time.Minute)},
		{"the stage moves on: since moves forward", func() {
			r.windows("c1", "new", t0.Add(95*time.Minute), 5, 90)
			r.windows("b1", "old", t0.Add(95*time.Minute), 5, 90)
		}, t0.Add(90 * time.Minute)},
		{"another rollout asks from further back", func() {}, t0.Add(30 * time.Minute)},
		{"and the first one again", func() {
			r.windows("c2", "new", t0.Add(100*time.Minute), 3, 90)
		}, t0.Add(90 * time.Minute)},
		{"since past every window", func() {}, t0.Add(4 * time.Hour)},
	}
	for _, s := range steps {
		s.do()
		r.flush()
		for _, since := range []time.Time{s.since, s.since.Add(-time.Hour)} {
			for _, d := range devices {
				got, want := r.cached.windows(r.ctx, d, "m", since), r.plain.windows(r.ctx, d, "m", since)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s: %s since %s: cached %s, uncached %s", s.name, d, since.Sub(t0), brief(got), brief(want))
				}
			}
		}
		got, err := r.cached.CohortMetrics(r.ctx, "m", canary, baseline, s.since)
		if err != nil {
			t.Fatal(err)
		}
		want, err := r.plain.CohortMetrics(r.ctx, "m", canary, baseline, s.since)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: cached metrics %+v\nuncached %+v", s.name, got, want)
		}
	}
	if r.cached.wins.hits.Load() == 0 {
		t.Error("no read was served from the cache")
	}
}

func brief(ws []telemetry.InferenceWindow) string {
	s := fmt.Sprintf("%d windows:", len(ws))
	for _, w := range ws {
		s += fmt.Sprintf(" %s/%s@%s:%d", w.Model, w.Bundle, w.End.Format("15:04"), w.Requests)
	}
	return s
}

// Rollouts reconciling at once, while telemetry keeps arriving, read what the store holds.
func TestWindowCacheConcurrentReconciles(t *testing.T) {
	r := newGateRig(t)
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Minute)
	var devs []string
	for i := range 20 {
		d := fmt.Sprintf("d%02d", i)
		devs = append(devs, d)
		r.windows(d, "old", t0, 30, 100)
		r.serve(d, "old")
	}
	r.flush()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := r.cached.CohortMetrics(r.ctx, "m", devs[:5], devs[5+g:], t0.Add(time.Duration(g)*time.Minute)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := range 10 {
		for _, d := range devs {
			r.windows(d, "old", t0.Add(time.Duration(30+i)*time.Minute), 1, 100)
		}
		r.flush()
	}
	close(stop)
	wg.Wait()
	for g := range 4 {
		since := t0.Add(time.Duration(g) * time.Minute)
		got, _ := r.cached.CohortMetrics(r.ctx, "m", devs[:5], devs[5+g:], since)
		want, _ := r.plain.CohortMetrics(r.ctx, "m", devs[:5], devs[5+g:], since)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("since +%dm: cached %+v\nuncached %+v", g, got, want)
		}
	}
}

// BenchmarkCohortMetrics is one rollout reconcile over 1,000 devices (50 canaries, 950 baseline)
// with an hour of one-minute inference windows each, cached and uncached in the same run. Between
// reconciles (untimed) a tenth of the devices commit one new window, as a live fleet does. -count
// runs reuse one store, which grows by 2,000 windows a run.
//
//	go test -run '^$' -bench CohortMetrics -benchtime 20x -benchmem ./controlplane/
func BenchmarkCohortMetrics(b *testing.B) {
	r := newGateRig(b)
	t0 := time.Now().Add(-70 * time.Minute).Truncate(time.Minute)
	var canary, baseline []string
	for i := range 1000 {
		d := fmt.Sprintf("dev-%04d", i)
		bundle := "old"
		if i < 50 {
			canary = append(canary, d)
			bundle = "new"
			r.windows(d, "old", t0, 40, 100)
			r.windows(d, "new", t0.Add(40*time.Minute), 20, 100)
		} else {
			baseline = append(baseline, d)
			r.windows(d, "old", t0, 60, 100)
		}
		r.serve(d, bundle)
	}
	r.flush()
	since := t0.Add(40 * time.Minute) // the stage began when the canaries switched
	for _, bc := range []struct {
		name string
		c    *cohorts
	}{{"uncached", r.plain}, {"cached", r.cached}} {
		b.Run(bc.name, func(b *testing.B) {
			// The first reconcile fills the cache (every window decoded once); the loop measures
			// the reconciles after it.
			if _, err := bc.c.CohortMetrics(r.ctx, "m", canary, baseline, since); err != nil {
				b.Fatal(err)
			}
			next := 0
			for b.Loop() {
				b.StopTimer()
				for range 100 {
					d := fmt.Sprintf("dev-%04d", next%1000)
					next++
					at := t0.Add(60*time.Minute + time.Duration(next)*time.Second)
					bundle := "old"
					if next%1000 < 50 {
						bundle = "new"
					}
					r.send(wire.Telemetry{Device: d, At: at, Body: body("m", bundle, at, 100, 5*time.Millisecond)})
				}
				r.flush()
				b.StartTimer()
				m, err := bc.c.CohortMetrics(r.ctx, "m", canary, baseline, since)
				if err != nil || m.Canary.Requests == 0 || m.Baseline.Requests == 0 {
					b.Fatalf("metrics %+v, %v", m.Canary.Window.Requests, err)
				}
			}
		})
	}
}

// The cache keeps only what recent askers reach back to and forgets idle devices, and reads stay
// equal to the uncached path through both.
func TestWindowCacheBounds(t *testing.T) {
	r := newGateRig(t)
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Minute)
	r.windows("a", "old", t0, 60, 100)
	r.windows("b", "old", t0, 10, 100)
	r.flush()
	clock := time.Now()
	wc := r.cached.wins
	wc.now = func() time.Time { return clock }
	steps := []struct {
		name      string
		advance   time.Duration
		device    string
		since     time.Duration // after t0
		wantHeld  int64
		wantAlive []string
	}{
		{"first read holds the device's windows since", 0, "a", 0, 60, []string{"a"}},
		{"a later since keeps what the earlier asker reaches", time.Minute, "a", 30 * time.Minute, 60, []string{"a"}},
		{"the earlier asker gone quiet: older windows dropped", 10 * time.Minute, "a", 30 * time.Minute, 30, []string{"a"}},
		{"an older since again reads them back", time.Minute, "a", 10 * time.Minute, 50, []string{"a"}},
		{"another device", 0, "b", 0, 60, []string{"a", "b"}},
		{"a idle past the limit is evicted", 11 * time.Minute, "b", 0, 10, []string{"b"}},
	}
	for _, s := range steps {
		clock = clock.Add(s.advance)
		since := t0.Add(s.since)
		got, want := r.cached.windows(r.ctx, s.device, "m", since), r.plain.windows(r.ctx, s.device, "m", since)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: cached %s, uncached %s", s.name, brief(got), brief(want))
		}
		wc.mu.Lock()
		var alive []string
		for id := range wc.devs {
			alive = append(alive, id)
		}
		wc.mu.Unlock()
		slices.Sort(alive)
		if held := wc.total.Load(); held != s.wantHeld || !slices.Equal(alive, s.wantAlive) {
			t.Errorf("%s: %d windows held of %v, want %d of %v", s.name, held, alive, s.wantHeld, s.wantAlive)
		}
	}
}
