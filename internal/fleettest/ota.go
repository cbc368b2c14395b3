package fleettest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/builder"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/sign"
)

var (
	provisionOnce sync.Once
	modelsDir     string
	provisionErr  error
)

// Models provisions ONNX Runtime and the real test models (scripts/fetch-ort.sh,
// scripts/fetch-models.sh) and returns the models folder. Missing parts fail under CI=true and
// skip loudly elsewhere.
func Models(t testing.TB) string {
	t.Helper()
	provisionOnce.Do(func() {
		root := RepoRoot()
		out, err := exec.Command(filepath.Join(root, "scripts", "fetch-ort.sh")).Output()
		if err != nil {
			provisionErr = fmt.Errorf("scripts/fetch-ort.sh: %v", err)
			return
		}
		if os.Getenv("EDGEFLEET_ORT_LIB") == "" {
			os.Setenv("EDGEFLEET_ORT_LIB", strings.TrimSpace(string(out)))
		}
		out, err = exec.Command(filepath.Join(root, "scripts", "fetch-models.sh")).Output()
		if err != nil {
			provisionErr = fmt.Errorf("scripts/fetch-models.sh: %v", err)
			return
		}
		modelsDir = strings.TrimSpace(string(out))
		provisionErr = onnxrt.Init("")
	})
	if provisionErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ONNX Runtime or models missing in CI: %v", provisionErr)
		}
		t.Skipf("SKIPPING: ONNX Runtime or test models unavailable (%v); run scripts/fetch-ort.sh and scripts/fetch-models.sh", provisionErr)
	}
	return modelsDir
}

// Keys is a release key pair in a temp folder.
type Keys struct {
	Dir     string
	Release *sign.Signer
	PubPath string
}

// NewKeys generates a release key.
func NewKeys(t testing.TB) Keys {
	t.Helper()
	dir := t.TempDir()
	if _, err := sign.GenerateKeyFiles(filepath.Join(dir, "release.key"), filepath.Join(dir, "release.pub"), sign.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	s, err := sign.LoadSigner(filepath.Join(dir, "release.key"))
	if err != nil {
		t.Fatal(err)
	}
	return Keys{Dir: dir, Release: s, PubPath: filepath.Join(dir, "release.pub")}
}

// BuildBundle builds a bundle of a real model with the builder and returns its file and id.
func BuildBundle(t testing.TB, k Keys, model, name, version string) (path, id string) {
	return BuildBundleRef(t, k, model, name, version, 0)
}

// BuildBundleRef is BuildBundle with a drift reference made from n generated samples (the same
// distribution `agent simulate` sends), so drift can be scored.
func BuildBundleRef(t testing.TB, k Keys, model, name, version string, n int) (path, id string) {
	t.Helper()
	o := builder.Options{ModelPath: filepath.Join(Models(t), model), Name: name, Version: version, Golden: 2}
	if n > 0 {
		b, err := os.ReadFile(o.ModelPath)
		if err != nil {
			t.Fatal(err)
		}
		sch, err := onnxrt.Inspect(b)
		if err != nil {
			t.Fatal(err)
		}
		sets, err := onnxrt.GenerateInputs(sch, n, 99, nil)
		if err != nil {
			t.Fatal(err)
		}
		var lines bytes.Buffer
		for _, set := range sets {
			req := oip.Request{}
			for _, x := range set {
				enc, _ := oip.Encode(x)
				req.Inputs = append(req.Inputs, enc)
			}
			j, _ := json.Marshal(req)
			lines.Write(j)
			lines.WriteByte('\n')
		}
		o.Reference = filepath.Join(t.TempDir(), "reference.jsonl")
		os.WriteFile(o.Reference, lines.Bytes(), 0o644)
	}
	var buf bytes.Buffer
	res, err := builder.Build(context.Background(), o, k.Release, &buf)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), fmt.Sprintf("%s-%s.bundle", name, version))
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, res.ID
}

// RebuildWith rebuilds a bundle under a new version with one payload changed by edit (e.g. golden
// outputs that no longer match), signed by the same key: a bad release that is correctly signed.
func RebuildWith(t testing.TB, k Keys, src, version string, edit func(path string, data []byte) []byte) (path, id string) {
	t.Helper()
	return Rebuild(t, k, src, func(in *bundle.BuildInput) {
		in.Version = version
		if edit != nil {
			for i, f := range in.Files {
				in.Files[i].Bytes = edit(f.Path, f.Bytes)
			}
		}
	})
}

// Rebuild re-signs a bundle after change edits what goes into it (version, variant, requirements,
// files): a correctly signed release with exactly the facts a test needs.
func Rebuild(t testing.TB, k Keys, src string, change func(in *bundle.BuildInput)) (path, id string) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := bundle.ExtractTo(context.Background(), f, filepath.Join(dir, "x"), []bundle.Verifier{k.Release.Verifier()}, bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m := b.Manifest
	in := bundle.BuildInput{Kind: m.Kind, Name: m.Name, Version: m.Version, Variant: m.Variant, Schema: m.Schema, ONNX: m.ONNX, Requirements: m.Requirements, BlockSize: m.BlockSize}
	for _, fe := range m.Files {
		data, err := os.ReadFile(filepath.Join(dir, "x", fe.Path))
		if err != nil {
			t.Fatal(err)
		}
		in.Files = append(in.Files, bundle.File{Path: fe.Path, Role: fe.Role, Bytes: data})
	}
	change(&in)
	var buf bytes.Buffer
	id, _, err = bundle.Build(context.Background(), in, k.Release, &buf)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, in.Name+"-"+in.Version+"-"+cmp.Or(in.Variant, "default")+".bundle")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, id
}

// Do performs an authenticated request with a JSON (or raw) body and decodes the answer.
func (cp *ControlPlane) Do(method, path string, body any, out any) (int, string) {
	cp.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd = b
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, "http://"+cp.Info.HTTPAddr+path, rd)
	req.Header.Set("Authorization", "Bearer "+cp.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cp.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		json.Unmarshal(raw, out)
	}
	return resp.StatusCode, string(raw)
}

// Push uploads a bundle file.
func (cp *ControlPlane) Push(path string) string {
	cp.t.Helper()
	f, err := os.Open(path)
	if err != nil {
		cp.t.Fatal(err)
	}
	defer f.Close()
	var rec struct{ ID string }
	code, body := cp.Do("POST", "/api/v1/bundles", f, &rec)
	if code != 201 && code != 200 {
		cp.t.Fatalf("push %s: %d %s", path, code, body)
	}
	return rec.ID
}

// ControlPub is the control plane's desired-state public key file.
func (cp *ControlPlane) ControlPub() string { return filepath.Join(cp.Cfg.DataDir, "control.pub") }

// OTAAgent starts an agent process that trusts k and the control plane's control key.
func OTAAgent(t testing.TB, cp *ControlPlane, k Keys, id, group string, extra ...string) *Agent {
	t.Helper()
	Models(t)
	args := append([]string{"--trust", k.PubPath, "--control-key", cp.ControlPub(), "--ort-lib", os.Getenv("EDGEFLEET_ORT_LIB")}, extra...)
	return StartAgent(t, cp.BrokerURL(), id, group, args...)
}

// ListenAddr waits for and returns the agent's local API address from its log.
func (a *Agent) ListenAddr(t testing.TB) string {
	t.Helper()
	var addr string
	Eventually(t, 30e9, "agent "+a.ID+" local API", func() bool {
		for _, line := range strings.Split(a.Log(), "\n") {
			if i := strings.Index(line, "local inference API listening"); i >= 0 {
				if j := strings.Index(line, "addr="); j >= 0 {
					addr = strings.Fields(line[j+5:])[0]
				}
			}
		}
		return addr != ""
	})
	return addr
}

// Metric reads one unlabelled counter from /metrics.
func (cp *ControlPlane) Metric(name string) float64 {
	cp.t.Helper()
	_, body := cp.Do("GET", "/metrics", nil, nil)
	for _, line := range strings.Split(body, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			var v float64
			fmt.Sscan(f[1], &v)
			return v
		}
	}
	cp.t.Fatalf("metric %s not found", name)
	return 0
}

// Model returns a device's reported state of one model (zero value when absent).
func (cp *ControlPlane) Model(device, model string) (st struct{ Active, Previous, State, Reason, Message, Target, Progress string }) {
	d := cp.Devices()[device]
	if d.Reported == nil {
		return st
	}
	m, ok := d.Reported.Models[model]
	if !ok {
		return st
	}
	st.Active, st.Previous, st.State, st.Reason, st.Message, st.Target, st.Progress = m.Active, m.Previous, m.State, m.Reason, m.Message, m.Target, m.Progress
	return st
}

// ListenAddrAfter returns the local API address the agent logged on its n-th start.
func (a *Agent) ListenAddrAfter(t testing.TB, n int) string {
	t.Helper()
	var addr string
	Eventually(t, 30e9, "agent "+a.ID+" local API", func() bool {
		seen := 0
		for _, line := range strings.Split(a.Log(), "\n") {
			if strings.Contains(line, "local inference API listening") {
				if seen++; seen == n {
					if j := strings.Index(line, "addr="); j >= 0 {
						addr = strings.Fields(line[j+5:])[0]
					}
				}
			}
		}
		return addr != ""
	})
	return addr
}

// Simulate runs `agent simulate` with n devices trusting k and the control plane's control key,
// telemetry every second, until the test ends; extra flags (groups, rate, faults) are appended.
// Its log is printed when the test fails.
func Simulate(t testing.TB, cp *ControlPlane, brokerURL string, k Keys, n int, extra ...string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "sim.log"))
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"simulate", "--count", fmt.Sprint(n), "--broker", brokerURL, "--data", t.TempDir(),
		"--trust", k.PubPath, "--control-key", cp.ControlPub(), "--telemetry-interval", "1s", "--log-level", "warn"}, extra...)
	cmd := exec.Command(filepath.Join(Binaries(t), "agent"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("simulate log:\n%s", b)
		}
	})
}
