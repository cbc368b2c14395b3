package retrain

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/telemetry"
)

const secret = "s3cret-for-tests"

// receiver is a webhook endpoint that checks the signature and the CloudEvents envelope, answers
// with the status codes it is given in turn (then 200), and records what it accepted.
type receiver struct {
	mu       sync.Mutex
	statuses []int
	calls    int
	badSig   int
	accepted []CloudEvent
	seen     map[string]bool
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if !Verify(secret, body, req.Header.Get(SignatureHeader)) {
		r.badSig++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if len(r.statuses) > 0 {
		code := r.statuses[0]
		r.statuses = r.statuses[1:]
		if code != http.StatusOK {
			w.WriteHeader(code)
			return
		}
	}
	var ev CloudEvent
	if err := json.Unmarshal(body, &ev); err != nil || ev.SpecVersion != "1.0" || ev.ID == "" || ev.Type == "" ||
		req.Header.Get("Content-Type") != "application/cloudevents+json; charset=utf-8" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	if !r.seen[ev.ID] { // at-least-once delivery: deduplicate by id
		r.seen[ev.ID] = true
		r.accepted = append(r.accepted, ev)
	}
	w.WriteHeader(http.StatusAccepted)
}

// clock is a test clock the notifier reads; backoff waits are crossed by advancing it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock() *clock               { return &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)} }
func (r *receiver) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls, len(r.accepted)
}
func (r *receiver) events() []CloudEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]CloudEvent(nil), r.accepted...)
}

func newNotifier(t *testing.T, st store.Store, url, sec string, c *clock) *Notifier {
	t.Helper()
	n, err := New(Config{URL: url, Secret: sec, Store: st, Now: c.Now, MaxAttempts: 4, Backoff: time.Second, MaxBackoff: 4 * time.Second,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWebhookRetriesAndSignature(t *testing.T) {
	ctx := context.Background()
	rec := &receiver{statuses: []int{500, 503}}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	c := newClock()
	st := store.NewMemory()
	n := newNotifier(t, st, srv.URL, secret, c)

	id, err := n.Notify(ctx, TypeDataset, Data{Model: "wake", Version: "1.1.0", Reason: "dataset complete", Datasets: []string{"ds-1"}})
	if err != nil {
		t.Fatal(err)
	}
	n.DeliverDue(ctx) // 500
	n.DeliverDue(ctx) // not due yet: backoff 1s
	if calls, _ := rec.counts(); calls != 1 {
		t.Fatalf("%d calls before the backoff passed, want 1", calls)
	}
	c.Add(time.Second)
	n.DeliverDue(ctx) // 503; next in 2s
	c.Add(time.Second)
	n.DeliverDue(ctx)
	if calls, _ := rec.counts(); calls != 2 {
		t.Fatalf("%d calls, want 2 (second backoff is 2s)", calls)
	}
	c.Add(time.Second)
	n.DeliverDue(ctx) // 202
	calls, accepted := rec.counts()
	if calls != 3 || accepted != 1 {
		t.Fatalf("calls %d accepted %d, want 3 and 1", calls, accepted)
	}
	ev := rec.events()[0]
	if ev.ID != id || ev.Type != TypeDataset || ev.Data.Model != "wake" || len(ev.Data.Datasets) != 1 || ev.Source == "" {
		t.Fatalf("event %+v", ev)
	}
	if p, _ := n.Pending(ctx); len(p) != 0 {
		t.Fatalf("%d still pending after delivery", len(p))
	}

	// A receiver with another secret refuses every attempt: the event ends in the dead-letter list
	// after MaxAttempts, and can be sent again once the secret is fixed.
	wrong := newNotifier(t, st, srv.URL, "not-the-secret", c)
	id2, _ := wrong.Notify(ctx, TypeDrift, Data{Model: "wake", Reason: "drift"})
	for range 10 {
		wrong.DeliverDue(ctx)
		c.Add(5 * time.Second)
	}
	dead, _ := wrong.Dead(ctx)
	if len(dead) != 1 || dead[0].Event.ID != id2 || dead[0].Attempts != 4 || dead[0].LastError == "" {
		t.Fatalf("dead letters %+v, want the event after 4 attempts", dead)
	}
	if rec.badSig != 4 {
		t.Fatalf("receiver saw %d badly signed calls, want 4", rec.badSig)
	}
	if err := n.Redeliver(ctx, id2); err != nil {
		t.Fatal(err)
	}
	n.DeliverDue(ctx)
	if _, accepted := rec.counts(); accepted != 2 {
		t.Fatalf("accepted %d after redelivery, want 2", accepted)
	}
	if err := n.Redeliver(ctx, "nope"); err == nil {
		t.Fatal("redelivering an unknown id worked")
	}
}

// TestWebhookSurvivesRestart: an event queued while the receiver is down is delivered by a new
// notifier over the same store file (a control-plane restart), exactly once.
func TestWebhookSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cp.db")
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	c := newClock()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(502) }))
	n := newNotifier(t, st, down.URL, secret, c)
	if _, err := n.Notify(ctx, TypeSchedule, Data{Model: "wake", Reason: "weekly"}); err != nil {
		t.Fatal(err)
	}
	n.DeliverDue(ctx)
	down.Close()
	st.Close()

	rec := &receiver{}
	up := httptest.NewServer(rec)
	defer up.Close()
	st, err = store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n = newNotifier(t, st, up.URL, secret, c)
	c.Add(time.Minute)
	n.DeliverDue(ctx)
	n.DeliverDue(ctx)
	if _, accepted := rec.counts(); accepted != 1 {
		t.Fatalf("accepted %d after restart, want 1", accepted)
	}
}

type fakeSource struct {
	serving []Serving
	as      map[string][]Assessment
}

func (f fakeSource) Serving(context.Context) []Serving { return f.serving }
func (f fakeSource) Assess(_ context.Context, b string, _ time.Time) ([]Assessment, error) {
	return f.as[b], nil
}

// TestMonitorTriggers: drift, low accuracy, concept drift and the schedule each queue one event,
// a trigger does not fire again within its cooldown, and a healthy model fires nothing.
func TestMonitorTriggers(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	st := store.NewMemory()
	n := newNotifier(t, st, "http://127.0.0.1:1/unused", secret, c)
	acc := func(c, l uint64) telemetry.Accuracy { return telemetry.Accuracy{Correct: c, Labeled: l} }
	src := fakeSource{
		serving: []Serving{{Bundle: "b-good", Model: "good"}, {Bundle: "b-bad", Model: "bad", Version: "2.0.0", Groups: []string{"line-a", "line-b"}}},
		as: map[string][]Assessment{
			"b-good": {{Group: "a", Accuracy: acc(950, 1000)}},
			"b-bad": {
				{Group: "line-a", Drifted: true, Accuracy: acc(950, 1000)},
				{Group: "line-b", Accuracy: acc(700, 1000), Concept: telemetry.DetectConceptDrift(acc(450, 500), acc(250, 500), false)},
			},
		},
	}
	m := &Monitor{N: n, Src: src, T: Triggers{AccuracyMin: 0.9, Every: 168 * time.Hour}}
	if err := m.Check(ctx); err != nil {
		t.Fatal(err)
	}
	p, _ := n.Pending(ctx)
	got := map[string][]string{}
	for _, d := range p {
		got[d.Event.Type] = append(got[d.Event.Type], d.Event.Data.Model+":"+join(d.Event.Data.Groups))
	}
	want := map[string][]string{
		TypeSchedule: {"bad:line-a,line-b", "good:"},
		TypeDrift:    {"bad:line-a"},
		TypeAccuracy: {"bad:line-b"},
		TypeConcept:  {"bad:line-b"},
	}
	for typ, w := range want {
		slices.Sort(got[typ])
		if len(got[typ]) != len(w) {
			t.Errorf("%s: %v, want %v", typ, got[typ], w)
			continue
		}
		for i := range w {
			if got[typ][i] != w[i] {
				t.Errorf("%s: %v, want %v", typ, got[typ], w)
			}
		}
	}
	if len(p) != 5 {
		t.Fatalf("%d events, want 5", len(p))
	}
	c.Add(time.Hour)
	m.Check(ctx)
	if p, _ := n.Pending(ctx); len(p) != 5 {
		t.Fatalf("%d events after a second check within the cooldown, want still 5", len(p))
	}
	c.Add(25 * time.Hour)
	m.Check(ctx)
	if p, _ := n.Pending(ctx); len(p) != 8 {
		t.Fatalf("%d events after the cooldown, want 8 (drift, accuracy, concept again; schedule not yet)", len(p))
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}
