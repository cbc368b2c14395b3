package controlplane_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/launcher"
	"github.com/edgefleet/edgefleet/agent/runtimeup"
	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/ota/builder"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

// buildAgentVersion links cmd/agent with its version stamped, as `make build` does.
func buildAgentVersion(t *testing.T, version string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "agent")
	cmd := exec.Command("go", "build", "-ldflags", "-s -w -X github.com/edgefleet/edgefleet/internal/cli.Version="+version, "-o", out, "./cmd/agent")
	cmd.Dir = fleettest.RepoRoot()
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build agent %s: %v\n%s", version, err, b)
	}
	return out
}

// runtimeBundle builds a signed runtime bundle around an agent binary.
func runtimeBundle(t *testing.T, k fleettest.Keys, bin, ortLib, version string) (path, id string) {
	t.Helper()
	var buf bytes.Buffer
	res, err := builder.BuildRuntime(t.Context(), builder.RuntimeOptions{AgentPath: bin, ORTLibPath: ortLib, Version: version, Arch: runtime.GOARCH}, k.Release, &buf)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("runtime bundle %s: %d bytes", version, res.Size)
	path = filepath.Join(t.TempDir(), "agent-"+version+".bundle")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, res.ID
}

// TestRuntimeUpdate: the agent updates itself through a signed runtime bundle under `agent
// launch`. A good v2 (the real agent, stamped 2.0.0, with the ONNX Runtime library) replaces v1
// and is committed once it reported and baked; a bad v3 (a binary that exits at start) is
// reverted by the launcher, and v2, running again, reports the revert and why.
func TestRuntimeUpdate(t *testing.T) {
	fleettest.Models(t) // the ONNX Runtime library that v2's bundle carries
	ortLib := os.Getenv("EDGEFLEET_ORT_LIB")
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}, BundleBytesPerSecond: 64 << 20})
	v1 := buildAgentVersion(t, "1.0.0")
	v2 := buildAgentVersion(t, "2.0.0")
	bad := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho 'bad agent: cannot start' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b2, id2 := runtimeBundle(t, k, v2, ortLib, "2.0.0")
	b3, id3 := runtimeBundle(t, k, bad, "", "3.0.0")
	cp.Push(b2)
	cp.Push(b3)

	// The launcher is the installed binary (v1), as systemd starts it.
	const dev = "dev-rt"
	data := filepath.Join(t.TempDir(), "data")
	l := startLauncher(t, cp, k, v1, dev, data)
	logPath := l.logPath

	version := func() (string, bool) {
		d := cp.Devices()[dev]
		if d.Reported == nil {
			return "", false
		}
		return d.Reported.AgentVersion, d.Online
	}
	fleettest.Eventually(t, 30*time.Second, "v1 online", func() bool { v, on := version(); return v == "1.0.0" && on })

	// v2 and v3 go out through rollouts, like any model.
	rolloutOf := func(version string) string {
		t.Helper()
		var ro struct{ ID string }
		spec := `{"bundle": "` + bundle.RuntimeName + `@` + version + `", "target": {"groups": ["rt"]}, "stages": [{"percent": 100, "bake": "2s"}]}`
		if code, body := cp.Do("POST", "/api/v1/rollouts", strings.NewReader(spec), &ro); code != 201 {
			t.Fatalf("create rollout: %d %s", code, body)
		}
		return ro.ID
	}
	rolloutState := func(id, state string) {
		t.Helper()
		fleettest.Eventually(t, 60*time.Second, "rollout "+state, func() bool {
			var v struct{ State string }
			cp.Do("GET", "/api/v1/rollouts/"+id, nil, &v)
			return v.State == state
		})
	}
	assigned := time.Now()
	r2 := rolloutOf("2.0.0")
	waitModel(t, cp, dev, bundle.RuntimeName, "v2 baking on trial", func(a, s, _ string) bool { return a == id2 && s == updater.StepBaking })
	waitModel(t, cp, dev, bundle.RuntimeName, "v2 committed", func(a, s, _ string) bool { return a == id2 && s == updater.StepCommitted })
	t.Logf("v2: rollout created to committed on the device in %v", time.Since(assigned).Round(100*time.Millisecond))
	rolloutState(r2, "completed")
	fleettest.Eventually(t, 10*time.Second, "v2 reported", func() bool { v, on := version(); return v == "2.0.0" && on })
	ls, err := launcher.ReadState(data)
	if err != nil || ls.Active == nil || ls.Active.Bundle != id2 || ls.Trial != nil || ls.Last.Result != launcher.ResultCommitted {
		t.Fatalf("launch state after v2: %+v %v", ls, err)
	}
	// v2 loaded the ONNX Runtime library from its own slot.
	if rt := cp.Devices()[dev].Reported.Runtime; rt == nil || rt.ORTVersion == "" {
		t.Fatalf("v2 reports no ONNX Runtime: %+v", rt)
	}
	if maps := agentMaps(t, logPath, ls.Active.Name); !strings.Contains(maps, filepath.Join(launcher.SlotDir(data, ls.Active.Name), launcher.ORTLibFile)) {
		t.Fatalf("v2 did not load the library from its slot")
	}

	// The launcher's revert of v3 is a failed install to the rollout, which rolls back.
	assigned = time.Now()
	r3 := rolloutOf("3.0.0")
	waitModel(t, cp, dev, bundle.RuntimeName, "v3 reverted on the device", func(a, s, r string) bool {
		return a == id2 && s == updater.StepReverted && r == launcher.ReasonCrashed
	})
	m := cp.Model(dev, bundle.RuntimeName)
	if m.Target != id3 || m.Message == "" {
		t.Fatalf("the revert does not name the bad bundle and why: %+v", m)
	}
	t.Logf("v3: rollout created to reverted on the device in %v; reported %s: %s", time.Since(assigned).Round(100*time.Millisecond), m.Reason, m.Message)
	rolloutState(r3, "rolled_back")
	var devs struct{ Devices []rollout.DeviceView }
	cp.Do("GET", "/api/v1/rollouts/"+r3+"/devices", nil, &devs)
	if len(devs.Devices) != 1 || !strings.Contains(devs.Devices[0].Reason, launcher.ReasonCrashed) {
		t.Fatalf("rollout devices: %+v", devs.Devices)
	}
	waitModel(t, cp, dev, bundle.RuntimeName, "v2 committed again after the rollback", func(a, s, _ string) bool { return a == id2 && s == updater.StepCommitted })
	fleettest.Eventually(t, 10*time.Second, "v2 online after the revert", func() bool { v, on := version(); return v == "2.0.0" && on })
}

// launchProc is `agent launch` as systemd would run it, in its own process group so that a
// power cut can take the launcher and its agent down together.
type launchProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	args    []string
	bin     string
	logPath string
	logf    *os.File
}

func startLauncher(t *testing.T, cp *fleettest.ControlPlane, k fleettest.Keys, bin, dev, data string) *launchProc {
	t.Helper()
	l := &launchProc{t: t, bin: bin, logPath: filepath.Join(t.TempDir(), "launch.log"),
		args: []string{"launch", "--trial-timeout", "30s", "--id", dev, "--broker", cp.BrokerURL(), "--data", data, "--group", "rt",
			"--trust", k.PubPath, "--control-key", cp.ControlPub(), "--listen", "127.0.0.1:0", "--telemetry-interval", "2s"}}
	l.start()
	t.Cleanup(func() {
		// SIGTERM goes to the launcher, which stops its agent; the group kill is a backstop.
		l.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { l.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("launcher did not stop within 30s of SIGTERM")
		}
		syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
		l.logf.Close()
		if t.Failed() || testing.Verbose() {
			b, _ := os.ReadFile(l.logPath)
			t.Logf("launcher log:\n%s", b)
		}
	})
	return l
}

func (l *launchProc) start() {
	l.t.Helper()
	var err error
	if l.logf, err = os.OpenFile(l.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
		l.t.Fatal(err)
	}
	l.cmd = exec.Command(l.bin, l.args...)
	l.cmd.Stdout, l.cmd.Stderr = l.logf, l.logf
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := l.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
}

// powerCut kills the launcher and its agent at once, without warning, as a power cut does.
func (l *launchProc) powerCut() {
	syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
	l.cmd.Wait()
	l.logf.Close()
}

// TestRuntimeUpdatePowerCut: the device loses power (launcher and agent killed together) while
// the runtime bundle downloads, and again while the new agent is on trial; each time the launcher,
// started again, runs an agent that works, and the update completes.
func TestRuntimeUpdatePowerCut(t *testing.T) {
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}, BundleBytesPerSecond: 2 << 20})
	v1 := buildAgentVersion(t, "1.0.0")
	v2 := buildAgentVersion(t, "2.0.0")
	b2, id2 := runtimeBundle(t, k, v2, "", "2.0.0")
	cp.Push(b2)
	const dev = "dev-cut"
	data := filepath.Join(t.TempDir(), "data")
	l := startLauncher(t, cp, k, v1, dev, data)
	online := func(version string) func() bool {
		return func() bool {
			d := cp.Devices()[dev]
			return d.Online && d.Reported != nil && d.Reported.AgentVersion == version
		}
	}
	fleettest.Eventually(t, 30*time.Second, "v1 online", online("1.0.0"))
	assign(t, cp, dev, bundle.RuntimeName+"@2.0.0", "4s")

	var up runtimeup.State
	fleettest.Eventually(t, 60*time.Second, "the download under way", func() bool {
		b, _ := os.ReadFile(filepath.Join(launcher.RuntimeDir(data), "update.json"))
		return json.Unmarshal(b, &up) == nil && up.Step == updater.StepDownloading
	})
	l.powerCut()
	l.start()
	fleettest.Eventually(t, 30*time.Second, "v1 back online", online("1.0.0"))

	var ls launcher.State
	fleettest.Eventually(t, 60*time.Second, "v2 started on trial", func() bool {
		var err error
		ls, err = launcher.ReadState(data)
		return err == nil && ls.Trial != nil && ls.Trial.Starts >= 1
	})
	l.powerCut()
	if ls, _ = launcher.ReadState(data); ls.Trial == nil || ls.Trial.Starts != 1 {
		t.Fatalf("launch state after the cut on trial: %+v (trial %+v)", ls, ls.Trial)
	}
	l.start()
	waitModel(t, cp, dev, bundle.RuntimeName, "v2 committed", func(a, s, _ string) bool { return a == id2 && s == updater.StepCommitted })
	fleettest.Eventually(t, 10*time.Second, "v2 online", online("2.0.0"))
	if ls, _ = launcher.ReadState(data); ls.Active == nil || ls.Active.Bundle != id2 || ls.Last.Result != launcher.ResultCommitted {
		t.Fatalf("launch state at the end: %+v", ls)
	}
}

// agentMaps returns /proc/PID/maps of the agent the launcher last started from slot.
func agentMaps(t *testing.T, logPath, slot string) string {
	t.Helper()
	b, _ := os.ReadFile(logPath)
	pid := ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `msg="agent started"`) && strings.Contains(line, " slot="+slot+" ") {
			if i := strings.Index(line, " pid="); i >= 0 {
				pid = strings.Fields(line[i+5:])[0]
			}
		}
	}
	maps, err := os.ReadFile("/proc/" + pid + "/maps")
	if pid == "" || err != nil {
		t.Fatalf("agent process of slot %s (pid %q): %v", slot, pid, err)
	}
	return string(maps)
}
