package edgefleet_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/fleettest"
)

// TestMakeRunDemo runs scripts/run-demo.sh, what `make run` runs, and checks that a newcomer would
// see three devices online, so `make run` cannot rot unnoticed.
func TestMakeRunDemo(t *testing.T) {
	bin := fleettest.Binaries(t)
	dir := t.TempDir()
	httpAddr := fleettest.FreeAddr(t)
	agentAddr := fleettest.FreeAddr(t)
	agentPort := agentAddr[strings.LastIndex(agentAddr, ":")+1:]
	cmd := exec.Command("bash", "scripts/run-demo.sh")
	cmd.Env = append(os.Environ(),
		"EDGEFLEET_DEMO_DIR="+dir, "EDGEFLEET_DEMO_HTTP="+httpAddr,
		"EDGEFLEET_DEMO_MQTT="+fleettest.FreeAddr(t), "EDGEFLEET_DEMO_BIN="+bin, "EDGEFLEET_DEMO_AGENT_PORT="+agentPort)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		}
	})
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var printed []string
	deadline := time.After(60 * time.Second)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("demo exited early:\n%s", strings.Join(printed, "\n"))
			}
			printed = append(printed, l)
			if strings.HasPrefix(l, "Press Ctrl-C") {
				break wait
			}
		case <-deadline:
			t.Fatalf("demo did not come up:\n%s", strings.Join(printed, "\n"))
		}
	}
	text := strings.Join(printed, "\n")
	if !strings.Contains(text, "3 of 3 devices online") || !strings.Contains(text, "3 of 3 serving the demo model") || !strings.Contains(text, "curl -s -H") {
		t.Fatalf("demo output lacks the online count or the curl hint:\n%s", text)
	}
	// The curl line it prints must work: do the same request.
	tok, err := os.ReadFile(filepath.Join(dir, "controlplane", "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+httpAddr+"/api/v1/devices", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Devices []struct {
			ID     string `json:"id"`
			Group  string `json:"group"`
			Online bool   `json:"online"`
		} `json:"devices"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	groups := map[string]int{}
	for _, d := range body.Devices {
		if d.Online {
			groups[d.Group]++
		}
	}
	if groups["line-a"] != 2 || groups["line-b"] != 1 {
		t.Fatalf("devices by group: %v (%+v)", groups, body.Devices)
	}
	// The predict line it prints must work too.
	reqBody, err := os.ReadFile(filepath.Join(dir, "demo-request.json"))
	if err != nil {
		t.Fatal(err)
	}
	presp, err := http.Post("http://"+agentAddr+"/v2/models/wake/infer", "application/json", bytes.NewReader(reqBody))
	if err != nil {
		t.Fatal(err)
	}
	var pred struct {
		ID           string `json:"id"`
		ModelVersion string `json:"model_version"`
		Outputs      []struct {
			Data []float64 `json:"data"`
		} `json:"outputs"`
	}
	json.NewDecoder(presp.Body).Decode(&pred)
	presp.Body.Close()
	if presp.StatusCode != 200 || pred.ID != "demo-1" || pred.ModelVersion != "1.0.0" || len(pred.Outputs) != 1 || len(pred.Outputs[0].Data) != 1 {
		t.Fatalf("demo prediction: status %d, %+v", presp.StatusCode, pred)
	}
	// The demo's staged rollout of 1.1.0 completes on all three devices.
	i := strings.Index(text, "rollout r-")
	if i < 0 {
		t.Fatalf("demo did not start a rollout:\n%s", text)
	}
	rid := strings.Fields(text[i+len("rollout "):])[0]
	until := time.Now().Add(240 * time.Second) // an upper bound: the demo shares a loaded 2-core CI machine with the other packages
	state := ""
	for time.Now().Before(until) && state != "completed" {
		req, _ := http.NewRequest("GET", "http://"+httpAddr+"/api/v1/rollouts/"+rid, nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var r struct{ State string }
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			state = r.State
		}
		time.Sleep(250 * time.Millisecond)
	}
	if state != "completed" {
		t.Fatalf("demo rollout %s ended in state %q", rid, state)
	}
	// Ctrl-C stops everything.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		stopped = true
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop on SIGINT")
	}
}
