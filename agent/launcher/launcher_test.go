package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/sign"
)

// The agents here are small shell scripts, real processes the launcher starts, stops and waits
// for: each appends "<name> <slot>" to DATA/starts.log, then behaves as told.
const (
	behaveRun     = "exec sleep 60"
	behaveCrash   = "exit 1"
	behaveUsage   = "exit 2"
	behaveHealthy = `id=$(sha256sum "$(dirname "$0")/manifest.json" | cut -d' ' -f1)
printf '{"bundle":"%s"}' "$id" > "$DATA/runtime/healthy.json.tmp" && mv "$DATA/runtime/healthy.json.tmp" "$DATA/runtime/healthy.json"
exec sleep 60`
)

func script(name, behave string) []byte {
	return []byte(fmt.Sprintf("#!/bin/sh\necho \"%s $%s\" >> \"$DATA/starts.log\"\n%s\n", name, EnvSlot, behave))
}

// installSlot writes a runtime bundle's manifest and agent into slot name, as the agent's
// lifecycle leaves it, and returns the slot.
func installSlot(t *testing.T, data, name, version string, agent []byte) Slot {
	t.Helper()
	s, err := sign.GenerateKey(sign.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	id, mb, err := bundle.Build(t.Context(), bundle.BuildInput{Kind: bundle.KindRuntime, Name: bundle.RuntimeName, Version: version,
		Requirements: bundle.Requirements{Arch: []string{"amd64", "arm64"}},
		Files:        []bundle.File{{Path: AgentFile, Role: bundle.RoleRuntime, Bytes: agent}}}, s, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	dir := SlotDir(data, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, bundle.ManifestName), mb, 0o600)
	if err := os.WriteFile(filepath.Join(dir, AgentFile), agent, 0o700); err != nil {
		t.Fatal(err)
	}
	return Slot{Name: name, Bundle: id, Version: version}
}

type rig struct {
	t      *testing.T
	data   string
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, data string, installed []byte, timeout time.Duration) *rig {
	t.Helper()
	return startVersion(t, data, installed, timeout, "")
}

func startVersion(t *testing.T, data string, installed []byte, timeout time.Duration, version string) *rig {
	t.Helper()
	inst := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(inst, installed, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATA", data)
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{t: t, data: data, cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- Run(ctx, Config{DataDir: data, Installed: inst, InstalledVersion: version, TrialTimeout: timeout, StopTimeout: 5 * time.Second,
			Stdout: io.Discard, Stderr: io.Discard})
	}()
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *rig) stop() error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		return err
	case <-time.After(20 * time.Second):
		r.t.Error("launcher did not stop")
		return nil
	}
}

func (r *rig) starts() []string {
	b, _ := os.ReadFile(filepath.Join(r.data, "starts.log"))
	return strings.Fields(strings.ReplaceAll(string(b), "\n", " "))
}

func (r *rig) waitFor(what string, cond func(State, []string) bool) State {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := ReadState(r.data)
		if err == nil && cond(st, r.starts()) {
			return st
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, _ := ReadState(r.data)
	r.t.Fatalf("timed out waiting for %s; state %+v, starts %v", what, st, r.starts())
	return State{}
}

func lastStart(starts []string) string {
	if len(starts) < 2 {
		return ""
	}
	return starts[len(starts)-2] + " " + starts[len(starts)-1]
}

// TestTrial: a switch request leads to a trial that ends committed, reverted at the deadline, or
// reverted after repeated exits; the previous agent then runs again.
func TestTrial(t *testing.T) {
	cases := map[string]struct {
		behave  string
		result  string
		reason  string
		running string // what runs at the end
	}{
		"healthy agent is committed":       {behaveHealthy, ResultCommitted, "", "new a"},
		"silent agent is reverted":         {behaveRun, ResultReverted, ReasonUnhealthy, "old installed"},
		"crashing agent is reverted":       {behaveCrash, ResultReverted, ReasonCrashed, "old installed"},
		"agent refusing flags is reverted": {behaveUsage, ResultReverted, ReasonCrashed, "old installed"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			data := t.TempDir()
			slot := installSlot(t, data, "a", "2.0.0", script("new", c.behave))
			// The installed agent asks for the switch once, as the agent does after unpacking.
			installed := script("old", fmt.Sprintf(`if [ ! -e "$DATA/asked" ]; then touch "$DATA/asked"; printf '{"name":"a","bundle":"%s","version":"2.0.0"}' > "$DATA/runtime/request.json"; exit %d; fi
exec sleep 60`, slot.Bundle, ExitSwitch))
			r := start(t, data, installed, 2*time.Second)
			st := r.waitFor("the trial's end", func(st State, starts []string) bool {
				return st.Last != nil && st.Trial == nil && lastStart(starts) == c.running
			})
			if st.Last.Result != c.result || st.Last.Reason != c.reason || st.Last.Bundle != slot.Bundle {
				t.Fatalf("outcome %+v, want %s %s", st.Last, c.result, c.reason)
			}
			if c.result == ResultCommitted && (st.Active == nil || *st.Active != slot || st.Previous != nil) {
				t.Fatalf("committed state %+v", st)
			}
			if c.result == ResultReverted && st.Active != nil {
				t.Fatalf("reverted, yet active is %+v", st.Active)
			}
			if _, err := os.Stat(filepath.Join(data, Dir, RequestFile)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("request not consumed: %v", err)
			}
		})
	}
}

// TestRestartMidTrial: a launcher started on a state left by a power cut during a trial goes on
// with the trial, counting the start it was in; one whose trial used up its starts reverts at once.
func TestRestartMidTrial(t *testing.T) {
	for _, starts := range []int{1, 3} {
		t.Run(fmt.Sprint("starts=", starts), func(t *testing.T) {
			data := t.TempDir()
			slot := installSlot(t, data, "b", "2.0.0", script("new", behaveHealthy))
			if err := writeState(data, State{Trial: &Trial{Slot: slot, Deadline: time.Now().Add(time.Hour), Starts: starts}}); err != nil {
				t.Fatal(err)
			}
			r := start(t, data, script("old", behaveRun), 5*time.Second)
			if starts < 3 {
				st := r.waitFor("commit", func(st State, _ []string) bool { return st.Active != nil })
				if *st.Active != slot || st.Last.Result != ResultCommitted {
					t.Fatalf("state %+v", st)
				}
				return
			}
			st := r.waitFor("revert", func(st State, s []string) bool { return st.Last != nil && lastStart(s) == "old installed" })
			if st.Last.Reason != ReasonCrashed || st.Active != nil {
				t.Fatalf("state %+v", st)
			}
			for _, s := range r.starts() {
				if s == "new" {
					t.Fatal("a trial with no starts left was started again")
				}
			}
		})
	}
}

// TestDamagedActiveSlot: an active slot whose binary no longer matches its manifest is not run;
// the previous slot runs, and the outcome says why.
func TestDamagedActiveSlot(t *testing.T) {
	data := t.TempDir()
	prev := installSlot(t, data, "a", "1.0.0", script("prev", behaveRun))
	active := installSlot(t, data, "b", "2.0.0", script("active", behaveRun))
	if err := writeState(data, State{Active: &active, Previous: &prev}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(SlotDir(data, "b"), AgentFile), script("tampered", behaveRun), 0o700)
	r := start(t, data, script("old", behaveRun), time.Second)
	st := r.waitFor("fallback", func(st State, s []string) bool { return lastStart(s) == "prev a" })
	if st.Active == nil || *st.Active != prev || st.Last.Reason != ReasonCorrupt || st.Last.Bundle != active.Bundle {
		t.Fatalf("state %+v", st)
	}
}

// TestUsageErrorStops: outside a trial, an agent that refuses its settings stops the launcher
// with ErrUsage (systemd's RestartPreventExitStatus=2 then leaves it stopped).
func TestUsageErrorStops(t *testing.T) {
	data := t.TempDir()
	r := start(t, data, script("old", behaveUsage), time.Second)
	select {
	case err := <-r.done:
		r.cancel = nil
		if !errors.Is(err, ErrUsage) {
			t.Fatalf("launcher returned %v, want ErrUsage", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("launcher kept restarting an agent with bad flags")
	}
}

// TestPackageUpgrade: after the package manager replaced the installed binary, the installed
// agent runs instead of the older runtime slot, which stays as the previous one; an unchanged
// package keeps running the slot.
func TestPackageUpgrade(t *testing.T) {
	for _, installed := range []string{"1.0.0", "1.1.0"} {
		t.Run(installed, func(t *testing.T) {
			data := t.TempDir()
			active := installSlot(t, data, "a", "2.0.0", script("slot", behaveRun))
			if err := writeState(data, State{Active: &active, Installed: "1.0.0"}); err != nil {
				t.Fatal(err)
			}
			r := startVersion(t, data, script("pkg", behaveRun), time.Second, installed)
			if installed == "1.0.0" {
				st := r.waitFor("the slot running", func(_ State, s []string) bool { return lastStart(s) == "slot a" })
				if st.Active == nil || *st.Active != active {
					t.Fatalf("state %+v", st)
				}
				return
			}
			st := r.waitFor("the package's agent running", func(_ State, s []string) bool { return lastStart(s) == "pkg installed" })
			if st.Active != nil || st.Previous == nil || *st.Previous != active || st.Last.Result != ResultSuperseded || st.Installed != "1.1.0" {
				t.Fatalf("state %+v", st)
			}
		})
	}
}
