package controlplane_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/deploy"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/ota/golden"
)

// rolloutFleet is a control plane with 8 real agents in two groups, all on wake@1.0.0.
type rolloutFleet struct {
	cp        *fleettest.ControlPlane
	k         fleettest.Keys
	ids       map[string]string // version -> bundle id
	devices   []string
	groupOf   map[string]string
	v1Path    string
	startedAt time.Time
}

func startRolloutFleet(t *testing.T, n int) *rolloutFleet {
	fleettest.Models(t)
	f := &rolloutFleet{k: fleettest.NewKeys(t), ids: map[string]string{}, groupOf: map[string]string{}, startedAt: time.Now()}
	f.cp = fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{f.k.PubPath}})
	v1, id1 := fleettest.BuildBundle(t, f.k, "hello_deepa.onnx", "wake", "1.0.0")
	f.v1Path, f.ids["1.0.0"] = v1, id1
	f.cp.Push(v1)
	var wg sync.WaitGroup
	for i := range n {
		id, g := fmt.Sprintf("ro-%d", i), "line-a"
		if i%2 == 1 {
			g = "line-b"
		}
		f.devices = append(f.devices, id)
		f.groupOf[id] = g
		wg.Add(1)
		go func() { defer wg.Done(); fleettest.OTAAgent(t, f.cp, f.k, id, g) }()
	}
	wg.Wait()
	fleettest.Eventually(t, 60*time.Second, "agents online", func() bool {
		devs := f.cp.Devices()
		for _, id := range f.devices {
			if !devs[id].Online || devs[id].Reported == nil {
				return false
			}
		}
		return true
	})
	for _, g := range []string{"line-a", "line-b"} {
		if code, body := f.cp.Do("PUT", "/api/v1/groups/"+g+"/desired", map[string]string{"bundle": "wake@1.0.0", "bake": "0s"}, nil); code != 200 {
			t.Fatalf("baseline for %s: %d %s", g, code, body)
		}
	}
	f.waitAll(t, id1, "every device on the v1 baseline")
	return f
}

// bundle builds a good (edit nil) or bad release of wake under version and pushes it.
func (f *rolloutFleet) bundle(t *testing.T, version string, edit func(string, []byte) []byte) string {
	p, id := fleettest.RebuildWith(t, f.k, f.v1Path, version, edit)
	f.cp.Push(p)
	f.ids[version] = id
	return id
}

func (f *rolloutFleet) waitAll(t *testing.T, id, what string) {
	t.Helper()
	fleettest.Eventually(t, 60*time.Second, what, func() bool {
		for _, d := range f.devices {
			if m := f.cp.Model(d, "wake"); m.Active != id || m.State != updater.StepCommitted {
				return false
			}
		}
		return true
	})
}

type rolloutView struct {
	ID        string            `json:"id"`
	State     string            `json:"state"`
	Stage     int               `json:"stage"`
	Counts    deploy.Counts     `json:"counts"`
	Decisions []deploy.Decision `json:"decisions"`
}

func (f *rolloutFleet) create(t *testing.T, spec string) string {
	t.Helper()
	var out struct{ ID, State string }
	code, body := f.cp.Do("POST", "/api/v1/rollouts", strings.NewReader(spec), &out)
	if code != 201 || out.ID == "" {
		t.Fatalf("create rollout: %d %s", code, body)
	}
	return out.ID
}

func (f *rolloutFleet) get(t *testing.T, id string) rolloutView {
	t.Helper()
	var v rolloutView
	if code, body := f.cp.Do("GET", "/api/v1/rollouts/"+id, nil, &v); code != 200 {
		t.Fatalf("get rollout %s: %d %s", id, code, body)
	}
	return v
}

func (f *rolloutFleet) waitState(t *testing.T, id, state string) rolloutView {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		v := f.get(t, id)
		if v.State == state {
			return v
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(v, "", "  ")
			t.Fatalf("rollout %s still %s after 90s, want %s:\n%s\ndevices: %+v", id, v.State, state, b, f.devicesOf(t, id))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (f *rolloutFleet) verb(t *testing.T, id, verb string, wantCode int) {
	t.Helper()
	if code, body := f.cp.Do("POST", "/api/v1/rollouts/"+id+"/"+verb, map[string]string{"reason": "test"}, nil); code != wantCode {
		t.Fatalf("%s %s: %d %s, want %d", verb, id, code, body, wantCode)
	}
}

func (f *rolloutFleet) devicesOf(t *testing.T, id string) []rollout.DeviceView {
	t.Helper()
	var out struct{ Devices []rollout.DeviceView }
	if code, body := f.cp.Do("GET", "/api/v1/rollouts/"+id+"/devices", nil, &out); code != 200 {
		t.Fatalf("devices of %s: %d %s", id, code, body)
	}
	return out.Devices
}

func (f *rolloutFleet) generation(t *testing.T, dev string) uint64 {
	t.Helper()
	var st struct{ Generation uint64 }
	if code, body := f.cp.Do("GET", "/api/v1/devices/"+dev+"/desired", nil, &st); code != 200 {
		t.Fatalf("desired of %s: %d %s", dev, code, body)
	}
	return st.Generation
}

// assignedOnce checks that the decision log assigns each targeted device exactly once.
func assignedOnce(t *testing.T, v rolloutView, devices []string) {
	t.Helper()
	seen := map[string]int{}
	for _, d := range v.Decisions {
		if d.Action != deploy.ActAssign {
			continue
		}
		ids, _ := d.Inputs["devices"].([]any)
		for _, id := range ids {
			seen[fmt.Sprint(id)]++
		}
	}
	for _, dev := range devices {
		if seen[dev] != 1 {
			t.Fatalf("%s assigned %d times in the decision log of %s", dev, seen[dev], v.ID)
		}
	}
}

const threeStages = `[{"devices": 1, "bake": "2s"}, {"percent": 50, "bake": "2s"}, {"percent": 100, "bake": "2s"}]`

// TestRolloutLifecycle drives rollouts through 8 real agents in two groups: a good release
// through three stages, a group rollback without download, a bad release halted at its first
// gate, the approval flow, and a control plane restarted mid-rollout.
func TestRolloutLifecycle(t *testing.T) {
	f := startRolloutFleet(t, 8)
	cp := f.cp
	id1 := f.ids["1.0.0"]
	id2 := f.bundle(t, "2.0.0", nil)
	id3 := f.bundle(t, "3.0.0", func(path string, data []byte) []byte {
		if path != golden.FileName {
			return data
		}
		g, _ := golden.Parse(data)
		g.Cases[0].Outputs[0].Data[0] += 1
		b, _ := json.Marshal(g)
		return b
	})
	id4 := f.bundle(t, "4.0.0", nil)
	t.Logf("fleet of %d agents on v1 after %v", len(f.devices), time.Since(f.startedAt).Round(time.Millisecond))

	t.Run("validation", func(t *testing.T) {
		for _, tc := range []struct{ body, code string }{
			{`{"bundle": "wake@9.9.9", "target": {"groups": ["line-a"]}, "stages": [{"percent": 100}]}`, "unknown_bundle"},
			{`{"bundle": "wake@2.0.0", "target": {"groups": ["nowhere"]}, "stages": [{"percent": 100}]}`, "empty_target"},
			{`{"bundle": "wake@2.0.0", "target": {}, "stages": [{"percent": 100}]}`, "invalid_spec"},
			{`{"bundle": "wake@2.0.0", "target": {"groups": ["line-a"]}, "stages": [{"percent": 50}]}`, "invalid_spec"},
		} {
			code, body := cp.Do("POST", "/api/v1/rollouts", strings.NewReader(tc.body), nil)
			if code != 422 || !strings.Contains(body, `"code":"`+tc.code+`"`) {
				t.Errorf("%s: %d %s, want 422 %s", tc.body, code, body, tc.code)
			}
		}
		if code, _ := cp.Do("GET", "/api/v1/rollouts/r-nope", nil, nil); code != 404 {
			t.Errorf("unknown rollout: %d", code)
		}
	})

	t.Run("good release completes three stages", func(t *testing.T) {
		start := time.Now()
		id := f.create(t, `{"bundle": "wake@2.0.0", "target": {"groups": ["line-a", "line-b"]}, "stages": `+threeStages+`}`)
		v := f.waitState(t, id, "completed")
		f.waitAll(t, id2, "every device committed v2")
		t.Logf("3-stage rollout to %d devices: completed in %v", len(f.devices), time.Since(start).Round(time.Millisecond))
		if v.Counts.Installed != len(f.devices) || v.Counts.Targeted != len(f.devices) {
			t.Fatalf("counts %+v", v.Counts)
		}
		assignedOnce(t, v, f.devices)
		advances := 0
		for _, d := range v.Decisions {
			if d.Action == deploy.ActAdvance {
				advances++
			}
			if d.Action == deploy.ActEvaluate && d.Inputs["telemetry"] != rollout.NoTelemetry {
				t.Fatalf("evaluation without the no-telemetry note: %+v", d)
			}
		}
		if advances != 2 {
			t.Fatalf("%d advances, want 2", advances)
		}
		for _, dev := range f.devices {
			// The v1 baseline was generation 1, the rollout generation 2: nothing sent twice.
			if g := f.generation(t, dev); g != 2 {
				t.Fatalf("%s desired generation %d, want 2", dev, g)
			}
		}
	})

	t.Run("group rollback without download", func(t *testing.T) {
		sent := cp.Metric("edgefleet_bundle_blocks_sent_total")
		for _, g := range []string{"line-a", "line-b"} {
			var out rollout.GroupRollback
			if code, body := cp.Do("POST", "/api/v1/groups/"+g+"/rollback", map[string]string{"model": "wake"}, &out); code != 200 || len(out.Models) != 1 || len(out.Models[0].Devices) != 4 || out.Models[0].Baseline != id1 {
				t.Fatalf("rollback %s: %d %s", g, code, body)
			}
		}
		f.waitAll(t, id1, "every device back on v1")
		if now := cp.Metric("edgefleet_bundle_blocks_sent_total"); now != sent {
			t.Fatalf("group rollback sent %.0f blocks: the previous bundle was downloaded again", now-sent)
		}
		code, body := cp.Do("POST", "/api/v1/groups/line-a/rollback", map[string]string{"model": "wake"}, nil)
		if code != 409 {
			t.Fatalf("second rollback of line-a: %d %s, want 409", code, body)
		}
	})

	t.Run("bad release halts at the first gate", func(t *testing.T) {
		id := f.create(t, `{"bundle": "wake@3.0.0", "target": {"groups": ["line-a", "line-b"]}, "stages": `+threeStages+`}`)
		v := f.waitState(t, id, "rolled_back")
		var why string
		for _, d := range v.Decisions {
			if d.Action == deploy.ActRollback {
				why = d.Reason
			}
		}
		if !strings.Contains(why, "install_success") {
			t.Fatalf("rollback reason %q", why)
		}
		canaries := 0
		for _, d := range f.devicesOf(t, id) {
			m := cp.Model(d.Device, "wake")
			if d.Stage == 0 {
				canaries++
				if d.Status != deploy.StatusRolledBack || !strings.Contains(d.Reason, updater.ReasonSmoke) {
					t.Fatalf("canary %s: %+v", d.Device, d)
				}
			} else if d.Status != deploy.StatusExcluded || m.Target == id3 || m.Active == id3 {
				t.Fatalf("%s outside the canary: rollout status %s, reported target %s active %s", d.Device, d.Status, m.Target, m.Active)
			}
			if m.Active != id1 {
				t.Fatalf("%s runs %s after the rollback", d.Device, m.Active)
			}
		}
		if canaries != 1 {
			t.Fatalf("%d canaries", canaries)
		}
	})

	t.Run("approval and pause", func(t *testing.T) {
		id := f.create(t, `{"bundle": "wake@2.0.0", "target": {"groups": ["line-a", "line-b"]},
			"stages": [{"devices": 1, "bake": "1s"}, {"percent": 100, "bake": "1s", "approval": true}]}`)
		f.waitState(t, id, "waiting_approval")
		time.Sleep(1500 * time.Millisecond) // waiting means waiting: nothing beyond the canary moves
		targeted := 0
		for _, dev := range f.devices {
			if cp.Model(dev, "wake").Target == id2 {
				targeted++
			}
		}
		if v := f.get(t, id); v.State != "waiting_approval" || targeted != 1 {
			t.Fatalf("before approval: state %s, %d devices targeted with v2", v.State, targeted)
		}
		f.verb(t, id, "pause", 200)
		f.verb(t, id, "approve", 409) // a paused rollout is resumed first
		f.verb(t, id, "resume", 200)
		if v := f.get(t, id); v.State != "waiting_approval" {
			t.Fatalf("resume went to %s", v.State)
		}
		f.verb(t, id, "approve", 200)
		f.waitState(t, id, "completed")
		f.waitAll(t, id2, "every device on v2 after approval")
	})

	t.Run("control plane restarted mid-rollout", func(t *testing.T) {
		before := map[string]uint64{}
		for _, dev := range f.devices {
			before[dev] = f.generation(t, dev)
		}
		id := f.create(t, `{"bundle": "wake@4.0.0", "target": {"groups": ["line-a", "line-b"]}, "stages": `+threeStages+`}`)
		// One active rollout per device and model.
		var conflict struct{ Code, Rollout string }
		code, body := cp.Do("POST", "/api/v1/rollouts", strings.NewReader(`{"bundle": "wake@1.0.0", "target": {"groups": ["line-a"]}, "stages": [{"percent": 100}]}`), nil)
		json.Unmarshal([]byte(body), &conflict)
		if code != 409 || conflict.Code != "conflict" || conflict.Rollout != id {
			t.Fatalf("overlapping rollout: %d %s, want 409 naming %s", code, body, id)
		}
		fleettest.Eventually(t, 60*time.Second, "stage 1 under way", func() bool { return f.get(t, id).Stage >= 1 })
		cp.Restart()
		v := f.waitState(t, id, "completed")
		f.waitAll(t, id4, "every device on v4")
		assignedOnce(t, v, f.devices)
		for _, dev := range f.devices {
			if g := f.generation(t, dev); g != before[dev]+1 {
				t.Fatalf("%s desired generation %d -> %d across a restart: want exactly one new assignment", dev, before[dev], g)
			}
		}
		// The baseline moved: a device joining the group later converges to v4.
		fleettest.OTAAgent(t, cp, f.k, "ro-late", "line-b")
		waitModel(t, cp, "ro-late", "wake", "late joiner on the new baseline", func(a, s, _ string) bool { return a == id4 && s == updater.StepCommitted })
	})
	t.Logf("whole lifecycle: %v", time.Since(f.startedAt).Round(time.Millisecond))
}
