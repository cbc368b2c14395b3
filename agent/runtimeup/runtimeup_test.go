package runtimeup

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/launcher"
	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

func TestCheck(t *testing.T) {
	agent := bundle.FileEntry{Path: bundle.RuntimeAgentFile, Role: bundle.RoleRuntime}
	cases := map[string]struct {
		m    bundle.Manifest
		want string // "" = accepted, else a word of the error
	}{
		"runtime for this arch": {bundle.Manifest{Kind: bundle.KindRuntime, Files: []bundle.FileEntry{agent}, Requirements: bundle.Requirements{Arch: []string{runtime.GOARCH}}}, ""},
		"model kind":            {bundle.Manifest{Kind: bundle.KindModel, Files: []bundle.FileEntry{agent}, Requirements: bundle.Requirements{Arch: []string{runtime.GOARCH}}}, "only runtime bundles"},
		"no agent binary":       {bundle.Manifest{Kind: bundle.KindRuntime, Files: []bundle.FileEntry{{Path: "lib.so", Role: bundle.RoleRuntime}}, Requirements: bundle.Requirements{Arch: []string{runtime.GOARCH}}}, "carries no"},
		"other arch":            {bundle.Manifest{Kind: bundle.KindRuntime, Files: []bundle.FileEntry{agent}, Requirements: bundle.Requirements{Arch: []string{"mips"}}}, "built for"},
		"no arch":               {bundle.Manifest{Kind: bundle.KindRuntime, Files: []bundle.FileEntry{agent}}, "built for"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := Check(&c.m)
			if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
				t.Fatalf("Check: %v, want %q", err, c.want)
			}
		})
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestOutcomes: what the lifecycle records from the launcher's state, one step at a time (the
// launcher and the switch itself run as real processes in controlplane's TestRuntimeUpdate).
func TestOutcomes(t *testing.T) {
	x := launcher.Slot{Name: "b", Bundle: strings.Repeat("b", 64), Version: "2.0.0"}
	old := launcher.Slot{Name: "a", Bundle: strings.Repeat("a", 64), Version: "1.0.0"}
	tx := &updater.Target{Bundle: x.Bundle, Version: x.Version, Generation: 3}
	cases := map[string]struct {
		slot     string // this process's slot ("" = no launcher)
		st       State
		ls       launcher.State
		step     string
		reason   string
		failed   bool // the target is remembered as failed
		reported bool // the agent reported (connected) before the step
		healthy  bool // healthy.json written
	}{
		"committed by the launcher": {slot: "b", st: State{Step: updater.StepBaking, Target: tx},
			ls: launcher.State{Active: &x, Previous: &old}, step: updater.StepCommitted},
		"reverted by the launcher": {slot: "a", st: State{Step: updater.StepSwitching, Target: tx, Slot: "b"},
			ls:   launcher.State{Active: &old, Last: &launcher.Outcome{Bundle: x.Bundle, Result: launcher.ResultReverted, Reason: launcher.ReasonCrashed, Message: "exited 3 times"}},
			step: updater.StepReverted, reason: launcher.ReasonCrashed, failed: true},
		"superseded by the package": {slot: launcher.Installed, st: State{Step: updater.StepCommitted, Target: tx},
			ls:   launcher.State{Previous: &x, Last: &launcher.Outcome{Bundle: x.Bundle, Result: launcher.ResultSuperseded, Reason: launcher.ReasonPackage}},
			step: updater.StepFailed, reason: launcher.ReasonPackage, failed: true},
		"no launcher": {slot: "", st: State{Step: updater.StepIdle},
			step: updater.StepFailed, reason: launcher.ReasonNoLauncher, failed: true},
		"on trial, not yet reported": {slot: "b", st: State{Step: updater.StepSwitching, Target: tx, Slot: "b"},
			ls: launcher.State{Active: &old, Trial: &launcher.Trial{Slot: x}}, step: updater.StepBaking},
		"on trial and reported": {slot: "b", st: State{Step: updater.StepBaking, Target: tx, Slot: "b"},
			ls: launcher.State{Active: &old, Trial: &launcher.Trial{Slot: x}}, step: updater.StepBaking, reported: true, healthy: true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			data := t.TempDir()
			writeJSON(t, filepath.Join(launcher.RuntimeDir(data), stateFile), c.st)
			writeJSON(t, filepath.Join(launcher.RuntimeDir(data), launcher.StateFile), c.ls)
			restarted := false
			u, err := New(Deps{DataDir: data, Slot: c.slot, Version: "2.0.0", Verifiers: func() []bundle.Verifier { return nil },
				Restart: func() { restarted = true }})
			if err != nil {
				t.Fatal(err)
			}
			u.SetTarget(tx)
			if c.reported {
				u.Reported()
			}
			if _, err := u.step(context.Background()); err != nil {
				t.Fatal(err)
			}
			st := u.State()
			if st.Step != c.step || st.Reason != c.reason || (st.FailedBundle == x.Bundle) != c.failed {
				t.Fatalf("state %+v, want step %s reason %q failed %v", st, c.step, c.reason, c.failed)
			}
			_, err = os.Stat(filepath.Join(launcher.RuntimeDir(data), launcher.HealthyFile))
			if (err == nil) != c.healthy {
				t.Fatalf("healthy.json present: %v, want %v", err == nil, c.healthy)
			}
			if restarted {
				t.Fatal("asked for a restart")
			}
			// What the fleet sees.
			r, ok := u.Report()
			if !ok || r.State != c.step {
				t.Fatalf("report %+v %v", r, ok)
			}
		})
	}
}
