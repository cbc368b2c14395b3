// Package fleettest starts real parts for end-to-end tests: the edgefleet binaries built once per
// test process, a control plane in-process, agents as real processes (so they can be killed with
// SIGKILL), and a small API client. Only tests import it.
package fleettest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/internal/mqttc"
)

// RepoRoot is the module's root folder.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds bin/controlplane and bin/agent once per test process and returns their folder.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "edgefleet-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/controlplane", "./cmd/agent")
		cmd.Dir = RepoRoot()
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "CGO_ENABLED=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Quiet is a logger for tests: warnings and errors only, to the test log.
func Quiet(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ControlPlane is an in-process control plane.
type ControlPlane struct {
	t       testing.TB
	Cfg     controlplane.Config
	Info    controlplane.Info
	Token   string
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// CPOptions adjust StartControlPlane.
type CPOptions struct {
	DataDir string       // default t.TempDir()
	Broker  mqttc.Config // external broker; embedded when empty
	MQTT    string       // embedded broker address; default a free port
	// TrustKeys are release public key files the registry accepts.
	TrustKeys            []string
	TrustDoc             string
	ControlKey           string
	BundleBytesPerSecond int
	CarouselMin          int
	Retrain              controlplane.RetrainConfig
	// RequireDeviceCredentials and MosquittoDir: see controlplane.Config (enrollment).
	RequireDeviceCredentials bool
	MosquittoDir             string

	// DatasetSweep and Clock: the dataset retention sweeper's interval and clock.
	DatasetSweep time.Duration
	Clock        func() time.Time
	// Store, Etcd and ReplicaID select the metadata store and name the replica (controlplane.Config).
	Store     string
	Etcd      controlplane.EtcdConfig
	ReplicaID string
	// TelemetryStore: see controlplane.Config (postgres://...).
	TelemetryStore string
}

// StartControlPlane runs a control plane until the test ends (or Stop).
func StartControlPlane(t testing.TB, o CPOptions) *ControlPlane {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.MQTT == "" && len(o.Broker.URLs) == 0 {
		o.MQTT = FreeAddr(t)
	}
	cp := &ControlPlane{t: t, Token: "test-admin-token", Cfg: controlplane.Config{
		DataDir: o.DataDir, HTTPAddr: "127.0.0.1:0", MQTTListen: o.MQTT, Broker: o.Broker,
		AdminToken: "test-admin-token", Logger: Quiet(t), TrustKeys: o.TrustKeys, TrustDoc: o.TrustDoc, ControlKey: o.ControlKey,
		BundleBytesPerSecond: o.BundleBytesPerSecond, CarouselMin: o.CarouselMin, Retrain: o.Retrain,
		RequireDeviceCredentials: o.RequireDeviceCredentials, MosquittoDir: o.MosquittoDir,
		DatasetSweep: o.DatasetSweep, Clock: o.Clock,
		Store: o.Store, Etcd: o.Etcd, ReplicaID: o.ReplicaID,
	}}
	cp.Cfg.TelemetryStore = o.TelemetryStore
	cp.start()
	t.Cleanup(cp.Stop)
	return cp
}

func (cp *ControlPlane) start() {
	cp.t.Helper()
	ready := make(chan controlplane.Info, 1)
	cfg := cp.Cfg
	cfg.Ready = func(i controlplane.Info) { ready <- i }
	ctx, cancel := context.WithCancel(context.Background())
	cp.cancel, cp.done, cp.stopped = cancel, make(chan error, 1), false
	go func() { cp.done <- controlplane.Run(ctx, cfg) }()
	select {
	case cp.Info = <-ready:
	case err := <-cp.done:
		cp.t.Fatalf("control plane did not start: %v", err)
	case <-time.After(30 * time.Second):
		cp.t.Fatal("control plane did not start within 30s")
	}
}

// Stop shuts the control plane down gracefully and waits for it.
func (cp *ControlPlane) Stop() {
	if cp.stopped {
		return
	}
	cp.stopped = true
	cp.cancel()
	select {
	case err := <-cp.done:
		if err != nil {
			cp.t.Errorf("control plane exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		cp.t.Error("control plane did not stop within 30s")
	}
}

// Restart stops and starts it again on the same data folder and broker address.
func (cp *ControlPlane) Restart() {
	cp.Stop()
	cp.Start()
}

// Start starts a stopped control plane again on the same data folder and addresses.
func (cp *ControlPlane) Start() {
	cp.Cfg.HTTPAddr = cp.Info.HTTPAddr
	cp.start()
}

// BrokerURL is where agents connect.
func (cp *ControlPlane) BrokerURL() string { return cp.Info.BrokerURL }

// Get performs an authenticated GET on the API and decodes the JSON answer into out.
func (cp *ControlPlane) Get(path string, out any) (int, error) {
	req, _ := http.NewRequest("GET", "http://"+cp.Info.HTTPAddr+path, nil)
	req.Header.Set("Authorization", "Bearer "+cp.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s: %w: %s", path, err, b)
		}
	}
	return resp.StatusCode, nil
}

// Devices lists the registry through the API.
func (cp *ControlPlane) Devices() map[string]fleet.Device {
	var body struct {
		Devices []fleet.Device `json:"devices"`
	}
	if _, err := cp.Get("/api/v1/devices", &body); err != nil {
		cp.t.Logf("list devices: %v", err)
		return nil
	}
	out := map[string]fleet.Device{}
	for _, d := range body.Devices {
		out[d.ID] = d
	}
	return out
}

// Agent is an agent process.
type Agent struct {
	ID      string
	DataDir string
	cmd     *exec.Cmd
	log     *os.File
	args    []string
	bin     string
}

// StartAgent starts `agent run` as a process; extra flags are appended.
func StartAgent(t testing.TB, brokerURL, id, group string, extra ...string) *Agent {
	t.Helper()
	a := &Agent{ID: id, DataDir: filepath.Join(t.TempDir(), id), bin: filepath.Join(Binaries(t), "agent")}
	a.args = append([]string{"run", "--id", id, "--broker", brokerURL, "--data", a.DataDir, "--group", group, "--telemetry-interval", "2s", "--listen", "127.0.0.1:0"}, extra...)
	a.Start(t)
	t.Cleanup(func() { a.Kill(); a.dumpLogOnFailure(t) })
	return a
}

// Start (re)starts the process with the same flags and data folder.
func (a *Agent) Start(t testing.TB) {
	t.Helper()
	var err error
	a.log, err = os.OpenFile(a.DataDir+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command(a.bin, a.args...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
}

// Kill sends SIGKILL: no clean disconnect, so only the Last Will tells the fleet.
func (a *Agent) Kill() {
	if a.cmd != nil && a.cmd.Process != nil && a.cmd.ProcessState == nil {
		a.cmd.Process.Signal(syscall.SIGKILL)
		a.cmd.Wait()
	}
	if a.log != nil {
		a.log.Close()
	}
}

// Stop sends SIGTERM and waits.
func (a *Agent) Stop() {
	if a.cmd != nil && a.cmd.Process != nil && a.cmd.ProcessState == nil {
		a.cmd.Process.Signal(syscall.SIGTERM)
		a.cmd.Wait()
	}
}

// Pid is the process id.
func (a *Agent) Pid() int { return a.cmd.Process.Pid }

// Log returns what the process printed.
func (a *Agent) Log() string {
	b, _ := os.ReadFile(a.DataDir + ".log")
	return string(b)
}

func (a *Agent) dumpLogOnFailure(t testing.TB) {
	if t.Failed() {
		t.Logf("agent %s log:\n%s", a.ID, a.Log())
	}
}

// Eventually polls cond until it holds or the timeout passes. It is a wait, not a timing
// assertion: the timeout only bounds how long a broken build takes to fail.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}

// StartWith (re)starts the process with extra flags for this run only.
func (a *Agent) StartWith(t testing.TB, extra ...string) {
	t.Helper()
	base := a.args
	a.args = append(append([]string{}, base...), extra...)
	a.Start(t)
	a.args = base
}

// WaitExit waits for the process to end by itself and reports whether it did within timeout.
func (a *Agent) WaitExit(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { a.cmd.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}
