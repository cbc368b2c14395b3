package budget

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/telemetry"
	"github.com/edgefleet/edgefleet/telemetry/drift"
)

// Traffic: a model with the example drift reference (four input reductions, class mix and
// confidence), 20 requests a minute of which 1 in 20 fails, 60 s windows, health every window.
const (
	interval  = time.Minute
	perWindow = 20
	overhead  = 120 // envelope, topic and MQTT header, about what the agent adds
)

type traffic struct {
	rng *rand.Rand
	col *telemetry.Collector
	now time.Time
	// observed totals
	requests, errors uint64
}

func newTraffic(t *testing.T, start time.Time) *traffic {
	b, err := os.ReadFile("../drift/testdata/reference_example.json")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := drift.ParseReference(b)
	if err != nil {
		t.Fatal(err)
	}
	col, err := telemetry.NewCollector("cls", "1.0.0", "bundle-1", ref, start)
	if err != nil {
		t.Fatal(err)
	}
	return &traffic{rng: rand.New(rand.NewPCG(1, 2)), col: col, now: start}
}

// window generates one interval of calls and returns its window.
func (tr *traffic) window() telemetry.InferenceWindow {
	for i := 0; i < perWindow; i++ {
		img := make([]float32, 3*8*8)
		for j := range img {
			img[j] = float32(0.45 + 0.2*tr.rng.NormFloat64())
		}
		probs := []float32{tr.rng.Float32(), tr.rng.Float32(), tr.rng.Float32(), tr.rng.Float32()}
		reason := ""
		if i%20 == 0 {
			reason = "runtime"
			tr.errors++
		}
		tr.requests++
		tr.col.Observe(time.Duration(1+tr.rng.IntN(20))*time.Millisecond, reason,
			[]onnxrt.Tensor{{Name: "input", Shape: []int64{1, 3, 8, 8}, Data: img}},
			[]onnxrt.Tensor{{Name: "probs", Shape: []int64{1, 4}, Data: probs}})
	}
	tr.now = tr.now.Add(interval)
	return tr.col.Flush(tr.now)
}

func health() *telemetry.Health {
	return &telemetry.Health{CPUPercent: 12.5, MemUsedBytes: 512 << 20, MemTotalBytes: 2 << 30, MemPercent: 25, DiskFreeBytes: 10 << 30, UptimeSeconds: 86400, ProcessRSS: 60 << 20}
}

type sent struct {
	at   time.Time
	cost int64
}

// fullCost is what one interval costs at full detail.
func fullCost(t *testing.T, w telemetry.InferenceWindow) int64 {
	b, err := New(Config{BytesPerDay: 1 << 40, Interval: interval, Overhead: overhead}, nil, w.Start)
	if err != nil {
		t.Fatal(err)
	}
	_, d, err := b.Tick(w.End, health(), []telemetry.InferenceWindow{w})
	if err != nil || !d.Sent {
		t.Fatalf("tick: %v %+v", err, d)
	}
	return int64(d.Bytes)
}

// TestBudget runs two simulated days per budget and checks that the bytes of any 24 hours stay
// within the budget, that request and error counts arrive exactly (sent plus still held), and
// that detail goes in the documented order.
func TestBudget(t *testing.T) {
	// Two days of windows, generated once for every case (merging never changes its inputs).
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tr := newTraffic(t, start)
	days := make([]telemetry.InferenceWindow, 2*24*60)
	for i := range days {
		days[i] = tr.window()
	}
	full := fullCost(t, days[1])
	perDay := full * int64(24*time.Hour/interval)
	t.Logf("one interval at full detail: %d bytes; every interval at full detail: %d bytes a day", full, perDay)
	cases := []struct {
		name     string
		budget   int64
		maxLevel int  // highest level seen
		held     bool // some intervals held back
	}{
		{"room for everything", 2 * perDay, LevelFull, false},
		{"a quarter: windows lengthen", perDay / 4, LevelStretched, true},
		{"a hundredth: histograms go", perDay / 100, LevelMoments, true},
		{"smaller than one message: all held", full / 10, -1, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := New(Config{BytesPerDay: c.budget, Interval: interval, Overhead: overhead}, nil, start)
			if err != nil {
				t.Fatal(err)
			}
			var log []sent
			var gotReq, gotErr uint64
			maxLevel, levels := -1, map[int]int{}
			maxStretch := 0
			for i, w := range days {
				msgs, d, err := b.Tick(w.End, health(), []telemetry.InferenceWindow{w})
				if err != nil {
					t.Fatal(err)
				}
				if i%97 == 0 {
					// A restart: the budget continues from its saved state.
					if b, err = New(Config{BytesPerDay: c.budget, Interval: interval, Overhead: overhead}, b.State(), w.End); err != nil {
						t.Fatal(err)
					}
				}
				if !d.Sent {
					continue
				}
				var cost int64
				for _, m := range msgs {
					cost += int64(len(m.Body) + overhead)
					switch m.Kind {
					case telemetry.KindInference:
						var iw telemetry.InferenceWindow
						if err := json.Unmarshal(m.Body, &iw); err != nil {
							t.Fatal(err)
						}
						gotReq += iw.Requests
						gotErr += iw.Errors
						if (iw.Drift == nil) != (d.Level == LevelMoments) || (iw.DriftMoments != nil) != (d.Level == LevelMoments) {
							t.Fatalf("level %d window with drift %v, moments %v", d.Level, iw.Drift != nil, iw.DriftMoments != nil)
						}
					case telemetry.KindHealth:
						var h telemetry.Health
						if err := json.Unmarshal(m.Body, &h); err != nil || h.Budget == nil {
							t.Fatalf("health without its budget report: %s", m.Body)
						}
						if h.Budget.Level != d.Level {
							t.Fatalf("health reports level %d, message sent at %d", h.Budget.Level, d.Level)
						}
						if d.Level == LevelMoments && h.Budget.Stretch < b.cfg.MaxStretch {
							t.Fatalf("histograms dropped after %d intervals, before windows reached %d", h.Budget.Stretch, b.cfg.MaxStretch)
						}
						maxStretch = max(maxStretch, h.Budget.Stretch)
					}
				}
				if cost != int64(d.Bytes) {
					t.Fatalf("decision counts %d bytes, messages are %d", d.Bytes, cost)
				}
				log = append(log, sent{w.End, cost})
				maxLevel = max(maxLevel, d.Level)
				levels[d.Level]++
			}
			// Any 24 hours: the sum of what was sent in (t-24h, t] for every send time t.
			var worst int64
			for i := range log {
				var sum int64
				for j := i; j >= 0 && log[i].at.Sub(log[j].at) < 24*time.Hour; j-- {
					sum += log[j].cost
				}
				worst = max(worst, sum)
			}
			if worst > c.budget {
				t.Fatalf("%d bytes in one 24 hours, budget %d", worst, c.budget)
			}
			// Counts exact: what was sent plus what is still held is what was observed.
			for _, w := range b.st.Windows {
				gotReq += w.Requests
				gotErr += w.Errors
			}
			if gotReq != tr.requests || gotErr != tr.errors {
				t.Fatalf("requests %d of %d, errors %d of %d", gotReq, tr.requests, gotErr, tr.errors)
			}
			if maxLevel != c.maxLevel || (b.st.Held > 0) != c.held {
				t.Fatalf("highest level %d (want %d), %d intervals held", maxLevel, c.maxLevel, b.st.Held)
			}
			t.Logf("budget %d B/day: %d messages sent in 2 days, most in any 24 h %d B (%.0f%% of the budget), levels %v, longest window %d intervals, %d intervals held, %d windows without histograms",
				c.budget, len(log), worst, 100*float64(worst)/float64(c.budget), levels, maxStretch, b.st.Held, b.st.Reduced)
		})
	}
}

func TestBudgetRefusesNonsense(t *testing.T) {
	for _, c := range []Config{{BytesPerDay: 0, Interval: time.Minute}, {BytesPerDay: 1000}} {
		if _, err := New(c, nil, time.Now()); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if _, err := New(Config{BytesPerDay: 1000, Interval: time.Minute}, []byte("{"), time.Now()); err == nil {
		t.Error("corrupt state accepted")
	}
}
