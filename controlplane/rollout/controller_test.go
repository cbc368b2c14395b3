package rollout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/deploy"
	"github.com/edgefleet/edgefleet/internal/wire"
)

// fakeFleet is a registry whose devices install instantly: an assignment makes the device report
// the bundle committed (or failed, for bundles in bad).
type fakeFleet struct {
	mu        sync.Mutex
	devices   map[string]*fleet.Device
	bundles   map[string]Bundle
	groups    map[string]GroupInfo
	bad       map[string]bool
	archOnly  map[string]string // bundle -> the only arch it runs on
	failNext  int               // transient Assign failures to inject
	assigns   map[string][]string
	baselines []string
}

func newFakeFleet(n int) *fakeFleet {
	f := &fakeFleet{devices: map[string]*fleet.Device{}, bundles: map[string]Bundle{}, groups: map[string]GroupInfo{},
		bad: map[string]bool{}, archOnly: map[string]string{}, assigns: map[string][]string{}}
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
		id := "id-" + v
		f.bundles[id] = Bundle{ID: id, Name: "wake", Version: v, Stage: "staging"}
	}
	for i := range n {
		id := fmt.Sprintf("d%02d", i)
		g := "a"
		if i%2 == 1 {
			g = "b"
		}
		f.devices[id] = &fleet.Device{ID: id, Group: g, Online: true, Reported: &wire.Reported{Device: id, Host: wire.HostFacts{Arch: "amd64"},
			Models: map[string]wire.ModelReport{"wake": {Active: "id-1.0.0", Target: "id-1.0.0", State: stepCommitted}}}}
	}
	f.groups["a"] = GroupInfo{Baseline: map[string]string{"wake": "id-1.0.0"}}
	f.groups["b"] = GroupInfo{Baseline: map[string]string{"wake": "id-1.0.0"}}
	return f
}

func (f *fakeFleet) Devices() []fleet.Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fleet.Device
	for _, d := range f.devices {
		c := *d
		rep := *d.Reported
		rep.Models = map[string]wire.ModelReport{}
		for k, v := range d.Reported.Models {
			rep.Models[k] = v
		}
		c.Reported = &rep
		out = append(out, c)
	}
	return out
}

func (f *fakeFleet) Bundle(_ context.Context, ref string) (Bundle, error) {
	for _, b := range f.bundles {
		if b.ID == ref || b.Ref() == ref {
			return b, nil
		}
	}
	return Bundle{}, fmt.Errorf("%w: %s", ErrUnknownBundle, ref)
}

func (f *fakeFleet) Incompatible(_ context.Context, id string, d fleet.Device) (string, error) {
	if a, ok := f.archOnly[id]; ok && d.Reported.Host.Arch != a {
		return "needs " + a, nil
	}
	return "", nil
}

func (f *fakeFleet) Group(_ context.Context, g string) (GroupInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.groups[g], nil
}

func (f *fakeFleet) Assign(_ context.Context, device, model, bundleID, rollout string, bake time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failNext > 0 {
		f.failNext--
		return errors.New("store unavailable")
	}
	d := f.devices[device]
	m := d.Reported.Models[model]
	if m.Target == bundleID && m.Rollout == rollout {
		return nil // idempotent, as desiredService is
	}
	f.assigns[device] = append(f.assigns[device], bundleID)
	if f.bad[bundleID] {
		m.Target, m.State, m.Reason, m.Rollout = bundleID, stepFailed, "smoke_test_failed", rollout
	} else {
		if m.Active != bundleID {
			m.Previous = m.Active
		}
		m.Active, m.Target, m.State, m.Reason, m.Rollout = bundleID, bundleID, stepCommitted, "", rollout
	}
	d.Reported.Models[model] = m
	return nil
}

func (f *fakeFleet) SetGroupBaseline(_ context.Context, group, model, bundleID, by string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.groups[group]
	if g.Baseline == nil {
		g.Baseline = map[string]string{}
	}
	g.Baseline[model] = bundleID
	f.groups[group] = g
	f.baselines = append(f.baselines, group+"="+bundleID)
	return nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newController(t *testing.T, st store.Store, f Fleet, ck *clock, ms MetricsSource, require bool) *Controller {
	t.Helper()
	c, err := New(Config{Store: st, Fleet: f, Now: ck.now, Metrics: ms, RequireTelemetry: require})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func spec(bundle string, stages ...deploy.Stage) deploy.Spec {
	return deploy.Spec{Bundle: bundle, Target: deploy.Target{Groups: []string{"a", "b"}}, Stages: stages}
}

func st(devices int, pct float64, bake time.Duration) deploy.Stage {
	return deploy.Stage{Devices: devices, Percent: pct, Bake: deploy.Duration(bake)}
}

// drive reconciles, advancing the clock, until cond holds.
func drive(t *testing.T, c *Controller, ck *clock, cond func() bool) {
	t.Helper()
	for range 200 {
		if err := c.Reconcile(t.Context()); err != nil {
			t.Logf("reconcile: %v", err)
		}
		if cond() {
			return
		}
		ck.t = ck.t.Add(time.Second)
	}
	t.Fatal("condition never held")
}

func state(t *testing.T, c *Controller, id string) deploy.State {
	v, err := c.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return v.State
}

func TestGoodRolloutCompletesOnInstallGatesWithoutTelemetry(t *testing.T) {
	f := newFakeFleet(8)
	ck := &clock{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := newController(t, store.NewMemory(), f, ck, nil, false)
	v, err := c.Create(t.Context(), spec("wake@2.0.0", st(1, 0, 5*time.Second), st(0, 50, 5*time.Second), st(0, 100, 5*time.Second)), "alice")
	if err != nil {
		t.Fatal(err)
	}
	drive(t, c, ck, func() bool { return state(t, c, v.ID) == deploy.Completed })
	for id := range f.devices {
		if got := f.assigns[id]; len(got) != 1 || got[0] != "id-2.0.0" {
			t.Fatalf("%s assignments %v, want exactly one of id-2.0.0", id, got)
		}
	}
	if g := f.groups["a"].Baseline["wake"]; g != "id-2.0.0" {
		t.Fatalf("baseline of a: %s", g)
	}
	got, _ := c.Get(t.Context(), v.ID)
	evals := 0
	for _, d := range got.Decisions {
		if d.Action == deploy.ActEvaluate {
			evals++
			if d.Inputs["telemetry"] != NoTelemetry {
				t.Fatalf("evaluation without the no-telemetry note: %+v", d)
			}
		}
	}
	if evals == 0 {
		t.Fatal("no evaluation decision")
	}
	if got.Decisions[0].By != "alice" {
		t.Fatalf("create decision by %q", got.Decisions[0].By)
	}
	audit, _ := c.Audit(t.Context())
	if len(audit) != len(got.Decisions) || audit[0].Who != "alice" || audit[0].Action != "rollout.create" {
		t.Fatalf("audit has %d entries for %d decisions: %+v", len(audit), len(got.Decisions), audit[0])
	}
}

// quietBaseline reports a baseline cohort that exists but served nothing: deploy would wait for
// samples forever.
type quietBaseline struct{}

func (quietBaseline) CohortMetrics(_ context.Context, _ string, canary, baseline []string, _ time.Time) (deploy.Metrics, error) {
	return deploy.Metrics{Canary: deploy.Cohort{Devices: len(canary)}, Baseline: deploy.Cohort{Devices: len(baseline)}}, nil
}

func TestNoTrafficRule(t *testing.T) {
	for _, require := range []bool{false, true} {
		t.Run(fmt.Sprintf("require=%v", require), func(t *testing.T) {
			f := newFakeFleet(4)
			ck := &clock{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
			c := newController(t, store.NewMemory(), f, ck, quietBaseline{}, require)
			v, err := c.Create(t.Context(), spec("wake@2.0.0", st(1, 0, 3*time.Second), st(0, 100, 3*time.Second)), "op")
			if err != nil {
				t.Fatal(err)
			}
			for range 30 {
				c.Reconcile(t.Context())
				ck.t = ck.t.Add(time.Second)
			}
			s := state(t, c, v.ID)
			if !require && s != deploy.Completed {
				t.Fatalf("state %s: a fleet without inference traffic must be judged on install gates", s)
			}
			if require {
				got, _ := c.Get(t.Context(), v.ID)
				last := got.Decisions[len(got.Decisions)-1]
				if s != deploy.Running || !strings.Contains(last.Reason, "waiting for samples") {
					t.Fatalf("RequireTelemetry: state %s, last decision %q", s, last.Reason)
				}
			}
		})
	}
}

func TestBadBundleRollsBackAtFirstGate(t *testing.T) {
	f := newFakeFleet(8)
	f.bad["id-3.0.0"] = true
	ck := &clock{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := newController(t, store.NewMemory(), f, ck, nil, false)
	v, err := c.Create(t.Context(), spec("wake@3.0.0", st(1, 0, 5*time.Second), st(0, 100, 5*time.Second)), "op")
	if err != nil {
		t.Fatal(err)
	}
	drive(t, c, ck, func() bool { return state(t, c, v.ID) == deploy.RolledBack })
	touched := 0
	for id, as := range f.assigns {
		touched++
		if len(as) != 2 || as[0] != "id-3.0.0" || as[1] != "id-1.0.0" {
			t.Fatalf("%s: assignments %v, want the bad bundle then the previous one", id, as)
		}
	}
	if touched != 1 {
		t.Fatalf("%d devices got the bad bundle, want only the canary", touched)
	}
}

// TestOutboxReplay: actions persisted but not executed (the fleet failed, or the process died)
// are executed after a restart, exactly once.
func TestOutboxReplay(t *testing.T) {
	f := newFakeFleet(6)
	mem := store.NewMemory()
	ck := &clock{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	c1 := newController(t, mem, f, ck, nil, false)
	v, err := c1.Create(t.Context(), spec("wake@2.0.0", st(0, 100, time.Second)), "op")
	if err != nil {
		t.Fatal(err)
	}
	f.failNext = 1000
	if err := c1.Reconcile(t.Context()); err == nil {
		t.Fatal("reconcile reported no error while the fleet refused everything")
	}
	var pending int
	mem.View(t.Context(), func(tx store.Tx) error {
		return tx.ForEach(bucketOutbox, "", func(string, []byte) error { pending++; return nil })
	})
	if pending != 6 {
		t.Fatalf("outbox holds %d actions, want 6", pending)
	}
	// "Restart": a new controller on the same store, the fleet healthy again.
	f.failNext = 0
	c2 := newController(t, mem, f, ck, nil, false)
	drive(t, c2, ck, func() bool { return state(t, c2, v.ID) == deploy.Completed })
	for id := range f.devices {
		if got := f.assigns[id]; len(got) != 1 {
			t.Fatalf("%s assigned %d times", id, len(got))
		}
	}
	r, _ := c2.Raw(t.Context(), v.ID)
	assignDecisions := 0
	for _, d := range r.Decisions {
		if d.Action == deploy.ActAssign {
			assignDecisions++
		}
	}
	if assignDecisions != 1 {
		t.Fatalf("%d assign decisions, want 1", assignDecisions)
	}
}

func TestCreateValidation(t *testing.T) {
	f := newFakeFleet(4)
	f.archOnly["id-3.0.0"] = "arm64"
	ck := &clock{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := newController(t, store.NewMemory(), f, ck, nil, false)
	ctx := t.Context()
	stages := []deploy.Stage{st(1, 0, time.Second), st(0, 100, time.Second)}
	cases := []struct {
		name string
		spec deploy.Spec
		want error
	}{
		{"unknown bundle", spec("wake@9.9.9", stages...), ErrUnknownBundle},
		{"empty target", deploy.Spec{Bundle: "wake@2.0.0", Target: deploy.Target{Groups: []string{"nope"}}, Stages: stages}, deploy.ErrEmptyTarget},
		{"no target", deploy.Spec{Bundle: "wake@2.0.0", Stages: stages}, deploy.ErrInvalidSpec},
		{"incompatible", spec("wake@3.0.0", stages...), ErrIncompatible},
	}
	for _, tc := range cases {
		if _, err := c.Create(ctx, tc.spec, "op"); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	f.groups["b"] = GroupInfo{Baseline: f.groups["b"].Baseline, Production: true}
	if _, err := c.Create(ctx, spec("wake@2.0.0", stages...), "op"); !errors.Is(err, ErrNotProduction) {
		t.Fatalf("staging bundle to a production group: %v", err)
	}
	b := f.bundles["id-2.0.0"]
	b.Stage = StageProduction
	f.bundles["id-2.0.0"] = b
	first, err := c.Create(ctx, spec("wake@2.0.0", stages...), "op")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Create(ctx, deploy.Spec{Bundle: "wake@1.0.0", Target: deploy.Target{Groups: []string{"a"}}, Stages: stages}, "op")
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Rollout != first.ID {
		t.Fatalf("overlapping rollout: %v, want a conflict naming %s", err, first.ID)
	}
	if _, err := c.Do(ctx, first.ID, VerbApprove, "op", ""); !errors.Is(err, deploy.ErrState) {
		t.Fatalf("approve a running rollout: %v", err)
	}
	if _, err := c.Do(ctx, first.ID, VerbAbort, "op", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, deploy.Spec{Bundle: "wake@1.0.0", Target: deploy.Target{Groups: []string{"a"}}, Stages: stages}, "op"); err != nil {
		t.Fatalf("after the abort the devices are free: %v", err)
	}
}

func TestGroupRollbackAfterCompletion(t *testing.T) {
	f := newFakeFleet(6)
	ck := &clock{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := newController(t, store.NewMemory(), f, ck, nil, false)
	v, err := c.Create(t.Context(), spec("wake@2.0.0", st(0, 100, time.Second)), "op")
	if err != nil {
		t.Fatal(err)
	}
	drive(t, c, ck, func() bool { return state(t, c, v.ID) == deploy.Completed })
	res, err := c.RollbackGroup(t.Context(), "a", "wake", "op")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Models) != 1 || res.Models[0].Rollout != v.ID || len(res.Models[0].Devices) != 3 || res.Models[0].Baseline != "id-1.0.0" {
		t.Fatalf("rollback: %+v", res)
	}
	drive(t, c, ck, func() bool {
		r, _ := c.Raw(t.Context(), v.ID)
		return r.Counts().RolledBack == 3
	})
	for id, d := range f.devices {
		want := "id-2.0.0"
		if d.Group == "a" {
			want = "id-1.0.0"
		}
		if got := d.Reported.Models["wake"].Active; got != want {
			t.Fatalf("%s (group %s) runs %s, want %s", id, d.Group, got, want)
		}
	}
	if f.groups["a"].Baseline["wake"] != "id-1.0.0" || f.groups["b"].Baseline["wake"] != "id-2.0.0" {
		t.Fatalf("baselines: %+v", f.groups)
	}
	if _, err := c.RollbackGroup(t.Context(), "a", "wake", "op"); !errors.Is(err, ErrNoRollback) {
		t.Fatalf("second rollback of the same group: %v", err)
	}
}

func TestInstallState(t *testing.T) {
	const b = "new"
	cases := []struct {
		rep    wire.ModelReport
		want   deploy.InstallState
		reason bool
	}{
		{wire.ModelReport{Target: "old", Active: "old", State: stepCommitted}, "", false},
		{wire.ModelReport{Target: b, State: stepIdle}, deploy.InstallPending, false},
		{wire.ModelReport{Target: b, State: stepDownloading}, deploy.InstallDownloading, false},
		{wire.ModelReport{Target: b, State: stepDownloading, Reason: reasonStalled}, deploy.InstallStalled, true},
		{wire.ModelReport{Target: b, State: stepSmokeTest, Active: "old"}, deploy.InstallDownloading, false},
		{wire.ModelReport{Target: b, State: stepBaking, Active: b}, deploy.InstallInstalled, false},
		{wire.ModelReport{Target: b, State: stepCommitted, Active: b}, deploy.InstallInstalled, false},
		{wire.ModelReport{Target: b, State: stepFailed, Active: "old", Reason: "smoke_test_failed"}, deploy.InstallFailed, true},
		{wire.ModelReport{Target: b, State: stepReverted, Active: "old", Reason: "bake_failed"}, deploy.InstallFailed, true},
	}
	for _, tc := range cases {
		got, why := installState(b, tc.rep)
		if got != tc.want || (why != "") != tc.reason {
			t.Errorf("%+v: %q %q, want %q (reason %v)", tc.rep, got, why, tc.want, tc.reason)
		}
	}
}

// TestDefaultMaxInFlight: a rollout that names no max_in_flight gets as many devices in flight as
// the bundle bandwidth feeds in DownloadWindow, recorded in its spec; one that names it keeps it.
func TestDefaultMaxInFlight(t *testing.T) {
	for _, c := range []struct {
		name        string
		bandwidth   int
		size        int64
		set, wantIn int
	}{
		{"464 KB bundle at 8 MiB/s", 8 << 20, 464_000, 0, 542},
		{"50 MB bundle: the floor", 8 << 20, 50_000_000, 0, minDefaultInFlight},
		{"size unknown: unbounded", 8 << 20, 0, 0, 0},
		{"the spec's own value wins", 8 << 20, 464_000, 5000, 5000},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeFleet(4)
			b := f.bundles["id-2.0.0"]
			b.Size = c.size
			f.bundles["id-2.0.0"] = b
			ck := &clock{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
			ctl, err := New(Config{Store: store.NewMemory(), Fleet: f, Now: ck.now, BundleBytesPerSecond: c.bandwidth})
			if err != nil {
				t.Fatal(err)
			}
			s := spec("wake@2.0.0", st(1, 0, time.Second), st(0, 100, time.Second))
			s.Rate.MaxInFlight = c.set
			v, err := ctl.Create(t.Context(), s, "op")
			if err != nil {
				t.Fatal(err)
			}
			if got := v.Spec.Rate.MaxInFlight; got != c.wantIn {
				t.Fatalf("max_in_flight %d, want %d", got, c.wantIn)
			}
		})
	}
}
