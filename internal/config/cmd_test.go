package config_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir) // about 60 MB of binaries per run otherwise left in /tmp
	}
	os.Exit(code)
}

// binaries builds the real commands once: the point of these tests is the wiring in cmd/, which
// a test of the package alone cannot see.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		binDir, buildErr = os.MkdirTemp("", "edgefleet-config-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/controlplane", "./cmd/agent")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// run starts a binary with a clean EDGEFLEET_ environment plus env, and returns its exit code,
// stdout and stderr.
func run(t *testing.T, bin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binaries(t), bin), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EDGEFLEET_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func TestControlPlanePrintConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "controlplane.yaml")
	data := filepath.Join(dir, "cpdata")
	os.WriteFile(file, []byte(`data: `+data+`
http: 0.0.0.0:8080
broker: [mqtts://broker-1.site:8883, mqtts://broker-2.site:8883]
broker-username: edgefleet-cp
broker-password: from-the-file
tls-ca: /etc/edgefleet/broker-ca.pem
trust: [release-2024.pub, release-2025.pub]
desired-ttl: 72h
`), 0o600)
	code, out, errs := run(t, "controlplane", []string{"EDGEFLEET_ADMIN_TOKEN=tok-in-env-42", "EDGEFLEET_LOG_LEVEL=debug"},
		"serve", "--print-config", "--config", file, "--broker-password", "hunter2", "--http", "127.0.0.1:9090")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	t.Logf("\n%s", out)
	for _, secret := range []string{"hunter2", "from-the-file", "tok-in-env-42"} {
		if strings.Contains(out+errs, secret) {
			t.Errorf("%q printed", secret)
		}
	}
	for _, w := range []string{
		"broker-password: <redacted> # flag",
		"admin-token: <redacted> # env EDGEFLEET_ADMIN_TOKEN",
		"http: 127.0.0.1:9090 # flag",
		"log-level: debug # env EDGEFLEET_LOG_LEVEL",
		"data: " + data + " # file",
		"broker: mqtts://broker-1.site:8883,mqtts://broker-2.site:8883 # file",
		"trust: [release-2024.pub, release-2025.pub] # file",
		"desired-ttl: 72h0m0s # file",
		"mqtt-listen: 127.0.0.1:1883 # default",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	// --print-config starts nothing: serve would have created the data folder.
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data folder %s exists after --print-config (%v)", data, err)
	}
}

func TestAgentPrintConfigAndFileErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agent.yaml")
	os.WriteFile(file, []byte(`id: cam-17
data: /var/lib/edgefleet-agent
broker: [mqtts://broker-1.site:8883, mqtts://broker-2.site:8883]
broker-username: cam-17
broker-password: s3cr3t-device-pw
tls-ca: /etc/edgefleet/broker-ca.pem
labels: {site: plant-3, line: a}
telemetry-interval: 30s
`), 0o600)
	code, out, errs := run(t, "agent", []string{"EDGEFLEET_CONFIG=" + file}, "run", "--print-config")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	if strings.Contains(out, "s3cr3t-device-pw") {
		t.Error("device password printed")
	}
	for _, w := range []string{"id: cam-17 # file", "labels: site=plant-3,line=a # file", "telemetry-interval: 30s # file", "broker-password: <redacted> # file"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("id: cam-17\ntelemetry-intervall: 30s\n"), 0o600)
	code, _, errs = run(t, "agent", nil, "run", "--config", bad)
	if code != 1 || !strings.Contains(errs, `line 2: unknown key "telemetry-intervall" (did you mean "telemetry-interval"?)`) {
		t.Errorf("exit %d, stderr:\n%s", code, errs)
	}

	// --help lists the new flags with their variables, like every other flag.
	_, _, errs = run(t, "controlplane", nil, "serve", "--help")
	for _, w := range []string{"--config  [EDGEFLEET_CONFIG]", "--print-config  [EDGEFLEET_PRINT_CONFIG]"} {
		if !strings.Contains(errs, w) {
			t.Errorf("--help lacks %q", w)
		}
	}
}

// TestDocsExamplesLoad runs the full examples of docs/CONFIG.md through the real commands, so
// the documentation cannot drift into keys the binaries refuse.
func TestDocsExamplesLoad(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	doc, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "docs", "CONFIG.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmds := map[string][]string{"controlplane.yaml": {"controlplane", "serve"}, "agent.yaml": {"agent", "run"}}
	found := 0
	for _, block := range strings.Split(string(doc), "```yaml\n")[1:] {
		body, _, _ := strings.Cut(block, "```")
		first, _, _ := strings.Cut(body, "\n")
		for name, cmd := range cmds {
			if !strings.HasSuffix(first, "/"+name) {
				continue
			}
			found++
			path := filepath.Join(t.TempDir(), name)
			os.WriteFile(path, []byte(body), 0o600)
			code, out, errs := run(t, cmd[0], nil, cmd[1], "--config", path, "--print-config")
			if code != 0 || !strings.Contains(out, "# file") {
				t.Errorf("docs/CONFIG.md example %s: exit %d\n%s%s", name, code, out, errs)
			}
		}
	}
	if found != 2 {
		t.Errorf("found %d of the 2 full examples in docs/CONFIG.md", found)
	}
}
