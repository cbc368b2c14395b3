package deploy

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func newRollout(t *testing.T, s *sim, spec Spec) *Rollout {
	t.Helper()
	r, err := New("r-1", spec, s.infos(), map[string]string{"line-0": "wake@1.0.0"}, s.now)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestGoodReleaseCompletes(t *testing.T) {
	s := newSim(1, 4, 2, 10)
	r := newRollout(t, s, testSpec())
	s.run(t, r, 10*time.Second, 3*time.Hour)
	if r.State != Completed {
		t.Fatalf("state %s, last decision %+v", r.State, lastDecision(r))
	}
	c := r.Counts()
	if c.Installed != 80 || c.Targeted != 80 {
		t.Fatalf("counts %+v", c)
	}
	for _, g := range []string{"line-0", "line-1", "line-2", "line-3"} {
		if s.baseline[g] != "wake@1.1.0" {
			t.Errorf("group %s baseline %q", g, s.baseline[g])
		}
	}
	for id, n := range s.assigned {
		if n != 1 {
			t.Errorf("%s assigned %d times", id, n)
		}
	}
	evals := 0
	for _, d := range r.Decisions {
		if d.Action == ActEvaluate {
			evals++
		}
	}
	if evals != 4*DefaultEvaluations {
		t.Errorf("%d looks, want %d", evals, 4*DefaultEvaluations)
	}
}

func TestInstallFailuresRollBack(t *testing.T) {
	s := newSim(2, 4, 2, 10)
	s.installFail = 0.2
	spec := testSpec()
	spec.Stages[0] = Stage{Devices: 10, Bake: Duration(time.Minute)}
	r := newRollout(t, s, spec)
	s.run(t, r, 10*time.Second, time.Hour)
	if r.State != RolledBack {
		t.Fatalf("state %s, last decision %+v", r.State, lastDecision(r))
	}
	d, ok := findDecision(r, ActRollback)
	if !ok || d.Stage != 0 || d.By != Controller {
		t.Fatalf("rollback decision %+v", d)
	}
	touched := 0
	for _, rec := range r.Devices {
		if rec.Stage > 0 {
			if _, sent := s.assigned[rec.Device]; sent {
				t.Errorf("%s of stage %d received the bundle", rec.Device, rec.Stage)
			}
			continue
		}
		if _, sent := s.assigned[rec.Device]; !sent {
			continue
		}
		touched++
		if s.reverted[rec.Device] != "wake@1.0.0" {
			t.Errorf("%s reverted to %q", rec.Device, s.reverted[rec.Device])
		}
		if rec.Status != StatusRolledBack {
			t.Errorf("%s status %s", rec.Device, rec.Status)
		}
	}
	if touched == 0 || len(s.reverted) != touched {
		t.Fatalf("touched %d, reverted %d", touched, len(s.reverted))
	}
}

func TestModelGatesCatchBadRelease(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(*sim)
		gate  string
	}{
		{"3x latency", func(s *sim) { s.latencyFactor = 3 }, "latency"},
		{"10% output shift", func(s *sim) { s.outputShift = 0.10 }, "output_shift"},
		{"error rate", func(s *sim) { s.errRateNew = 0.05 }, "error_rate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSim(3, 4, 2, 10)
			s.reqPerSec = 5 // enough traffic that the 2-device canary reaches the samples a 10% shift needs
			c.setup(s)
			r := newRollout(t, s, testSpec())
			s.run(t, r, 10*time.Second, 3*time.Hour)
			if r.State != RolledBack {
				t.Fatalf("state %s, last %+v", r.State, lastDecision(r))
			}
			d, _ := findDecision(r, ActRollback)
			if d.Stage != 0 {
				t.Fatalf("caught at stage %d", d.Stage)
			}
			found := false
			for _, g := range d.Inputs["gates"].([]GateResult) {
				found = found || g.Gate == c.gate
			}
			if !found {
				t.Fatalf("%s not among the failed gates: %s", c.gate, d.Reason)
			}
			for _, rec := range r.Devices {
				if _, sent := s.assigned[rec.Device]; sent && rec.Stage != 0 {
					t.Errorf("%s outside the canary received the bundle", rec.Device)
				}
			}
		})
	}
}

func TestTooFewSamplesWaits(t *testing.T) {
	s := newSim(4, 4, 2, 10)
	s.reqPerSec = 0.1 // 2 devices * 0.1/s * 120s = 24 samples, far below 200
	r := newRollout(t, s, testSpec())
	s.run(t, r, 10*time.Second, 30*time.Minute)
	if r.State != Running || r.Stage != 0 || r.Stages[0].Looks != 0 {
		t.Fatalf("state %s stage %d looks %d", r.State, r.Stage, r.Stages[0].Looks)
	}
	d := lastDecision(r)
	if d.Action != ActWait || d.Reason[:len("waiting for samples")] != "waiting for samples" {
		t.Fatalf("last decision %+v", d)
	}
	// The wait is logged once, not once per tick.
	waits := 0
	for _, d := range r.Decisions {
		if d.Action == ActWait && d.Reason == lastDecision(r).Reason {
			waits++
		}
	}
	if waits != 1 {
		t.Fatalf("%d identical wait decisions", waits)
	}
}

func TestApprovalPauseResume(t *testing.T) {
	s := newSim(5, 4, 2, 10)
	spec := testSpec()
	spec.Stages[1].Approval = true
	r := newRollout(t, s, spec)
	s.run(t, r, 10*time.Second, time.Hour)
	if r.State != WaitingApproval || r.Stage != 1 {
		t.Fatalf("state %s stage %d", r.State, r.Stage)
	}
	if c := r.Counts(); c.Installed != 2 {
		t.Fatalf("before approval %+v", c)
	}
	if _, err := r.Resume(s.now, "ops"); !errors.Is(err, ErrState) {
		t.Fatalf("resume while waiting: %v", err)
	}
	if _, err := r.Pause(s.now, "ops", "lunch"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Approve(s.now, "ops"); !errors.Is(err, ErrState) {
		t.Fatalf("approve while paused: %v", err)
	}
	acts, _ := Step(s.now, r, s.observe(r))
	if len(acts) != 0 {
		t.Fatalf("paused rollout acted: %v", acts)
	}
	if _, err := r.Resume(s.now, "ops"); err != nil || r.State != WaitingApproval {
		t.Fatalf("resume: %v, state %s", err, r.State)
	}
	if _, err := r.Approve(s.now, "alice"); err != nil {
		t.Fatal(err)
	}
	if d := lastDecision(r); d.Action != ActApprove || d.By != "alice" {
		t.Fatalf("approve decision %+v", d)
	}
	s.run(t, r, 10*time.Second, 3*time.Hour)
	if r.State != Completed {
		t.Fatalf("state %s", r.State)
	}
	if _, err := r.Pause(s.now, "ops", ""); !errors.Is(err, ErrState) {
		t.Fatalf("pause completed: %v", err)
	}
}

func TestOnFailurePause(t *testing.T) {
	s := newSim(6, 4, 2, 10)
	s.latencyFactor = 3
	spec := testSpec()
	spec.OnFailure = OnFailurePause
	r := newRollout(t, s, spec)
	s.run(t, r, 10*time.Second, time.Hour)
	if r.State != Paused || len(s.reverted) != 0 {
		t.Fatalf("state %s, reverted %d", r.State, len(s.reverted))
	}
	acts, err := r.Rollback(s.now, "ops", "")
	if err != nil || r.State != RollingBack {
		t.Fatal(err, r.State)
	}
	reverts := 0
	for _, a := range acts {
		if _, ok := a.(RevertDesired); ok {
			reverts++
		}
	}
	if reverts != 2 {
		t.Fatalf("%d reverts, want the 2 canary devices", reverts)
	}
}

func TestAbort(t *testing.T) {
	s := newSim(7, 4, 2, 10)
	r := newRollout(t, s, testSpec())
	s.run(t, r, 10*time.Second, 30*time.Second)
	acts, err := r.Abort(s.now, "ops", "wrong bundle")
	if err != nil || r.State != Aborted {
		t.Fatal(err, r.State)
	}
	for _, a := range acts {
		if _, ok := a.(Record); !ok {
			t.Fatalf("abort sent %T", a)
		}
	}
	if acts, _ := Step(s.now.Add(time.Hour), r, s.observe(r)); len(acts) != 0 {
		t.Fatalf("aborted rollout acted: %v", acts)
	}
	if _, err := r.Abort(s.now, "ops", ""); !errors.Is(err, ErrState) {
		t.Fatalf("second abort: %v", err)
	}
	// An aborted rollout can still be undone.
	if _, err := r.Rollback(s.now, "ops", ""); err != nil {
		t.Fatal(err)
	}
}

func TestRateLimitAndMaxInFlight(t *testing.T) {
	s := newSim(8, 4, 2, 10)
	s.manualInstall = true
	spec := testSpec()
	spec.Stages = []Stage{{Percent: 50}, {Percent: 100}}
	spec.Rate = Rate{DevicesPerMinute: 6, MaxInFlight: 4}
	r := newRollout(t, s, spec)

	count := func(acts []Action) int {
		n := 0
		for _, a := range acts {
			if _, ok := a.(AssignDesired); ok {
				n++
			}
		}
		return n
	}
	acts, _ := Step(s.now, r, s.observe(r))
	s.apply(acts)
	if n := count(acts); n != 4 {
		t.Fatalf("first step assigned %d, want max_in_flight 4", n)
	}
	s.now = s.now.Add(time.Minute)
	acts, _ = Step(s.now, r, s.observe(r))
	if n := count(acts); n != 0 {
		t.Fatalf("assigned %d with 4 in flight", n)
	}
	s.installAll()
	acts, _ = Step(s.now, r, s.observe(r))
	s.apply(acts)
	// The bucket holds at most a minute's worth (6); 4 were spent a minute ago and 6 refilled.
	if n := count(acts); n != 4 {
		t.Fatalf("assigned %d after installs, want 4 (in-flight bound)", n)
	}
	s.installAll()
	acts, _ = Step(s.now, r, s.observe(r))
	if n := count(acts); n != 2 {
		t.Fatalf("assigned %d, want the 2 tokens left", n)
	}
	s.apply(acts)
	s.installAll()
	s.now = s.now.Add(10 * time.Second) // one token
	acts, _ = Step(s.now, r, s.observe(r))
	if n := count(acts); n != 1 {
		t.Fatalf("assigned %d after 10s at 6/min, want 1", n)
	}
}

func TestStepIdempotent(t *testing.T) {
	s := newSim(9, 4, 2, 10)
	r := newRollout(t, s, testSpec())
	for range 40 {
		obs := s.observe(r)
		acts, err := Step(s.now, r, obs)
		if err != nil {
			t.Fatal(err)
		}
		before, _ := json.Marshal(r)
		again, err := Step(s.now, r, obs)
		if err != nil {
			t.Fatal(err)
		}
		after, _ := json.Marshal(r)
		if len(again) != 0 || string(before) != string(after) {
			t.Fatalf("second Step at %v: %d actions %v, rollout changed: %v", s.now, len(again), again, string(before) != string(after))
		}
		s.apply(acts)
		s.now = s.now.Add(10 * time.Second)
	}
}

// A control plane restart reloads the stored rollout (JSON) and continues without re-sending.
func TestRestartContinues(t *testing.T) {
	s := newSim(10, 4, 2, 10)
	r := newRollout(t, s, testSpec())
	s.run(t, r, 10*time.Second, 5*time.Minute)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Rollout
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Spec, r.Spec) || !reflect.DeepEqual(back.Devices, r.Devices) {
		t.Fatal("rollout does not survive a JSON round trip")
	}
	s.run(t, &back, 10*time.Second, 3*time.Hour)
	if back.State != Completed {
		t.Fatalf("state %s", back.State)
	}
	for id, n := range s.assigned {
		if n != 1 {
			t.Errorf("%s assigned %d times", id, n)
		}
	}
}

func TestRollbackCompleted(t *testing.T) {
	s := newSim(11, 4, 2, 10)
	r := newRollout(t, s, testSpec())
	s.run(t, r, 10*time.Second, 3*time.Hour)
	if r.State != Completed {
		t.Fatalf("state %s", r.State)
	}
	acts, err := r.Rollback(s.now, "ops", "customer complaint")
	if err != nil {
		t.Fatal(err)
	}
	s.apply(acts)
	if len(s.reverted) != 80 {
		t.Fatalf("%d reverts, want 80", len(s.reverted))
	}
	if s.baseline["line-0"] != "wake@1.0.0" || s.baseline["line-1"] != "" {
		t.Fatalf("baselines %v", s.baseline)
	}
	s.now = s.now.Add(time.Second)
	acts, _ = Step(s.now, r, s.observe(r))
	if r.State != RolledBack || len(acts) != 1 {
		t.Fatalf("state %s, acts %v", r.State, acts)
	}
	if _, err := r.Rollback(s.now, "ops", ""); !errors.Is(err, ErrState) {
		t.Fatalf("second rollback: %v", err)
	}
}

func TestRollbackGroup(t *testing.T) {
	s := newSim(12, 4, 2, 10)
	r := newRollout(t, s, testSpec())
	s.run(t, r, 10*time.Second, 4*time.Minute)
	acts, err := r.RollbackGroup(s.now, "ops", "line-1")
	if err != nil {
		t.Fatal(err)
	}
	s.apply(acts)
	for _, rec := range r.Devices {
		if rec.Group != "line-1" {
			continue
		}
		if rec.Status != StatusRollingBack && rec.Status != StatusExcluded {
			t.Errorf("%s %s", rec.Device, rec.Status)
		}
	}
	if r.State != Paused {
		t.Fatalf("state %s", r.State)
	}
	if _, err := r.RollbackGroup(s.now, "ops", "nope"); !errors.Is(err, ErrState) {
		t.Fatalf("unknown group: %v", err)
	}
	if _, err := r.Resume(s.now, "ops"); err != nil {
		t.Fatal(err)
	}
	s.run(t, r, 10*time.Second, 3*time.Hour)
	if r.State != Completed {
		t.Fatalf("state %s: %+v", r.State, lastDecision(r))
	}
	for _, rec := range r.Devices {
		if rec.Group == "line-1" && s.devs[rec.Device].bundle == "wake@1.1.0" {
			t.Errorf("%s of the rolled back group runs the new bundle", rec.Device)
		}
	}
}

func TestOfflineDevicesPause(t *testing.T) {
	s := newSim(13, 4, 2, 10)
	s.manualInstall = true
	spec := testSpec()
	spec.Stages[0] = Stage{Devices: 10, Bake: Duration(time.Minute)}
	r := newRollout(t, s, spec)
	acts, _ := Step(s.now, r, s.observe(r))
	s.apply(acts)
	// Two of ten go dark: above the default of 10% (1), a person decides.
	n := 0
	for _, rec := range r.Devices[:10] {
		if n < 2 {
			s.devs[rec.Device].online = false
			n++
		}
	}
	s.now = s.now.Add(10 * time.Second)
	if _, err := Step(s.now, r, s.observe(r)); err != nil {
		t.Fatal(err)
	}
	if r.State != Paused || lastDecision(r).Action != ActPause {
		t.Fatalf("state %s, %+v", r.State, lastDecision(r))
	}
}

func TestVerbsFromWrongStates(t *testing.T) {
	s := newSim(14, 1, 1, 5)
	spec := testSpec()
	spec.Target.Groups = []string{"line-0"}
	r := newRollout(t, s, spec)
	if _, err := r.Approve(s.now, "ops"); !errors.Is(err, ErrState) {
		t.Fatalf("approve running: %v", err)
	}
	if _, err := r.Resume(s.now, "ops"); !errors.Is(err, ErrState) {
		t.Fatalf("resume running: %v", err)
	}
	bad := *r
	bad.Stage = 9
	if _, err := Step(s.now, &bad, Observation{}); !errors.Is(err, ErrState) {
		t.Fatalf("inconsistent rollout: %v", err)
	}
}

// TestOfflineCanaryWaits: a one-device stage whose device goes offline while installing (an agent
// restarting into a new runtime, a power cut) waits for it: with nothing left to judge, the
// install-success ratio must not be read as 0 of 1.
func TestOfflineCanaryWaits(t *testing.T) {
	s := newSim(14, 4, 2, 10)
	s.manualInstall = true
	spec := testSpec()
	spec.Stages[0] = Stage{Devices: 1, Bake: Duration(time.Minute)}
	one := 1
	spec.Gates.OfflineMax = &one
	r := newRollout(t, s, spec)
	acts, _ := Step(s.now, r, s.observe(r))
	s.apply(acts)
	s.devs[r.Devices[0].Device].online = false
	for range 3 {
		s.now = s.now.Add(10 * time.Second)
		if _, err := Step(s.now, r, s.observe(r)); err != nil {
			t.Fatal(err)
		}
		if r.State != Running || lastDecision(r).Action != ActWait {
			t.Fatalf("state %s, %+v: an offline canary must be waited for", r.State, lastDecision(r))
		}
	}
}

// TestOfflineGrace: an installed canary that drops off the broker counts against offline_max only
// after offline_grace; a blip of seconds (one broker node lost, a site's uplink flapping) does
// not pause the rollout.
func TestOfflineGrace(t *testing.T) {
	for _, c := range []struct {
		name  string
		grace *Duration
		away  time.Duration
		pause bool
	}{
		{"30s away under the default grace runs on", nil, 30 * time.Second, false},
		{"3m away past the default grace pauses", nil, 3 * time.Minute, true},
		{"no grace pauses at once", new(Duration(0)), 10 * time.Second, true},
		{"5m grace keeps 3m away running", new(Duration(5 * time.Minute)), 3 * time.Minute, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSim(15, 4, 2, 10)
			spec := testSpec()
			spec.Stages[0] = Stage{Devices: 4, Bake: Duration(time.Hour)}
			zero := 0
			spec.Gates.OfflineMax = &zero
			spec.Gates.OfflineGrace = c.grace
			r := newRollout(t, s, spec)
			for i := 0; r.Devices[0].Status != StatusInstalled; i++ {
				if i > 10 {
					t.Fatalf("canary never installed: %+v", lastDecision(r))
				}
				acts, err := Step(s.now, r, s.observe(r))
				if err != nil {
					t.Fatal(err)
				}
				s.apply(acts)
				s.now = s.now.Add(time.Second)
			}
			d := s.devs[r.Devices[0].Device]
			d.online, d.gone = false, s.now
			for end := s.now.Add(c.away); !s.now.After(end); s.now = s.now.Add(10 * time.Second) {
				acts, err := Step(s.now, r, s.observe(r))
				if err != nil {
					t.Fatal(err)
				}
				s.apply(acts)
			}
			if got := r.State == Paused; got != c.pause {
				t.Fatalf("state %s after %s away (last decision %+v), want paused=%v", r.State, c.away, lastDecision(r), c.pause)
			}
			if c.pause && !strings.Contains(lastDecision(r).Reason, "offline") {
				t.Fatalf("paused, but not by the offline gate: %+v", lastDecision(r))
			}
		})
	}
}
