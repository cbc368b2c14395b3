package fleettest

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane"
)

// ControlPlaneProcess is `controlplane serve` run as a child process against an external broker, so
// that a test can freeze it (SIGSTOP) while the broker keeps queueing for its session. Its API is
// reached through the embedded ControlPlane's helpers (Do, Devices, Metric).
type ControlPlaneProcess struct {
	*ControlPlane
	cmd     *exec.Cmd
	logPath string
}

// StartControlPlaneProcess starts `controlplane serve --broker brokerURL` with its own data folder
// and HTTP port, waits for /healthz, and stops it when the test ends (printing its log if the test
// failed). extra flags are appended.
func StartControlPlaneProcess(t testing.TB, brokerURL string, extra ...string) *ControlPlaneProcess {
	t.Helper()
	dir := t.TempDir()
	addr := FreeAddr(t)
	p := &ControlPlaneProcess{
		ControlPlane: &ControlPlane{t: t, Token: "test-admin-token", stopped: true,
			Cfg: controlplane.Config{DataDir: filepath.Join(dir, "data")}, Info: controlplane.Info{HTTPAddr: addr, BrokerURL: brokerURL}},
		logPath: filepath.Join(dir, "controlplane.log"),
	}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child holds its own descriptor
	args := append([]string{"serve", "--data", p.Cfg.DataDir, "--http", addr, "--broker", brokerURL,
		"--admin-token", p.Token, "--log-level", "warn"}, extra...)
	p.cmd = exec.Command(filepath.Join(Binaries(t), "controlplane"), args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGCONT) // a frozen process cannot act on SIGTERM
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			t.Logf("control plane log:\n%s", b)
		}
	})
	Eventually(t, 30*time.Second, "control plane process serving", func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// Freeze stops the process (SIGSTOP): it keeps its connections open but reads and acknowledges
// nothing, as a control plane stalled on a slow disk or a long GC pause would.
func (p *ControlPlaneProcess) Freeze() {
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		p.t.Fatalf("SIGSTOP control plane: %v", err)
	}
}

// Thaw resumes a frozen process (SIGCONT).
func (p *ControlPlaneProcess) Thaw() {
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		p.t.Fatalf("SIGCONT control plane: %v", err)
	}
}

// Kill ends the process at once (SIGKILL), as a crash or a power cut would: no graceful shutdown,
// no lease given back.
func (p *ControlPlaneProcess) Kill() {
	p.cmd.Process.Signal(syscall.SIGCONT)
	p.cmd.Process.Kill()
	p.cmd.Wait()
}
