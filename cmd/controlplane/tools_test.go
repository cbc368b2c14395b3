package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/ota/seal"
)

func cmd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func mustCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := cmd(t, args...)
	if code != 0 {
		t.Fatalf("controlplane %s: exit %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out
}

// untar extracts the named entries of a bundle.
func untar(t *testing.T, path, dir string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		os.WriteFile(filepath.Join(dir, filepath.Base(h.Name)), b, 0o644)
	}
}

func TestBundleBuildVerifyInspectRealModels(t *testing.T) {
	models := fleettest.Models(t)
	dir := t.TempDir()
	mustCmd(t, "keys", "generate", "--out", dir)
	other := t.TempDir()
	mustCmd(t, "keys", "generate", "--out", other)
	for _, m := range []string{"hello_deepa.onnx", "ocr_cls.onnx", "ocr_det.onnx"} {
		t.Run(m, func(t *testing.T) {
			out := filepath.Join(dir, m+".bundle")
			id := strings.TrimSpace(mustCmd(t, "bundle", "build", "--model", filepath.Join(models, m), "--name", "m", "--version", "1.2.3",
				"--key", filepath.Join(dir, "release.key"), "--out", out, "--provenance", "code_revision=abc123", "--provenance", "dataset=ds-1,ds-2", "--quiet"))
			if len(id) != 64 {
				t.Fatalf("build printed %q, want a bundle id", id)
			}
			if v := mustCmd(t, "bundle", "verify", "--key", filepath.Join(dir, "release.pub"), out); !strings.Contains(v, id) {
				t.Fatalf("verify: %s", v)
			}
			if _, errs, code := cmd(t, "bundle", "verify", "--key", filepath.Join(other, "release.pub"), out); code == 0 || !strings.Contains(errs, "signature") {
				t.Fatalf("verify with another key: exit %d %s", code, errs)
			}
			var man struct {
				Name       string
				Schema     struct{ Inputs []struct{ Name string } }
				ONNX       struct{ Opset int64 } `json:"onnx"`
				Provenance struct {
					CodeRevision string   `json:"code_revision"`
					DatasetIDs   []string `json:"dataset_ids"`
				}
				Files []struct{ Path, Role string }
			}
			if err := json.Unmarshal([]byte(mustCmd(t, "bundle", "inspect", out)), &man); err != nil {
				t.Fatal(err)
			}
			if man.Name != "m" || len(man.Schema.Inputs) == 0 || man.ONNX.Opset == 0 || man.Provenance.CodeRevision != "abc123" || len(man.Provenance.DatasetIDs) != 2 {
				t.Fatalf("inspect: %+v", man)
			}
			roles := map[string]bool{}
			for _, f := range man.Files {
				roles[f.Role] = true
			}
			if !roles["model"] || !roles["golden"] {
				t.Fatalf("bundle lacks model or golden files: %+v", man.Files)
			}
		})
	}
}

func TestReferenceSamplesMakeADriftReference(t *testing.T) {
	models := fleettest.Models(t)
	dir := t.TempDir()
	mustCmd(t, "keys", "generate", "--out", dir)
	// 40 JSON-lines samples for the wake-word model's [1,25,96] input.
	var lines strings.Builder
	for i := 0; i < 40; i++ {
		vals := make([]string, 2400)
		for j := range vals {
			vals[j] = "0." + string(rune('0'+(i*7+j)%10))
		}
		lines.WriteString(`{"inputs":[{"name":"onnx::Flatten_0","shape":[1,25,96],"datatype":"FP32","data":[` + strings.Join(vals, ",") + `]}]}` + "\n")
	}
	ref := filepath.Join(dir, "ref.jsonl")
	os.WriteFile(ref, []byte(lines.String()), 0o644)
	out := filepath.Join(dir, "wake.bundle")
	mustCmd(t, "bundle", "build", "--model", filepath.Join(models, "hello_deepa.onnx"), "--name", "wake", "--version", "1.0.0",
		"--key", filepath.Join(dir, "release.key"), "--out", out, "--reference", ref, "--quiet")
	x := t.TempDir()
	untar(t, out, x)
	b, err := os.ReadFile(filepath.Join(x, "reference.json"))
	if err != nil {
		t.Fatal("bundle built with --reference has no reference.json")
	}
	var r struct {
		SchemaVersion int `json:"schema_version"`
		Features      []struct {
			Name   string
			Source string
			Count  int
		}
	}
	json.Unmarshal(b, &r)
	if r.SchemaVersion != 1 || len(r.Features) < 2 || r.Features[0].Count != 40 {
		t.Fatalf("reference: %s", b)
	}
}

// cosignBin returns the cached cosign binary; missing fails under CI and skips loudly elsewhere.
func cosignBin(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(fleettest.RepoRoot(), "scripts", "fetch-cosign.sh"), "--no-build").Output()
	p := strings.TrimSpace(string(out))
	if err != nil || p == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("cosign is required in CI: run scripts/fetch-cosign.sh")
		}
		t.Skip("SKIPPING cosign interop: no cached cosign (run scripts/fetch-cosign.sh)")
	}
	return p
}

func TestCosignInterop(t *testing.T) {
	models := fleettest.Models(t)
	cosign := cosignBin(t)
	dir := t.TempDir()
	mustCmd(t, "keys", "generate", "--out", dir)
	out := filepath.Join(dir, "wake.bundle")
	mustCmd(t, "bundle", "build", "--model", filepath.Join(models, "hello_deepa.onnx"), "--name", "wake", "--version", "1.0.0",
		"--key", filepath.Join(dir, "release.key"), "--out", out, "--quiet")
	x := t.TempDir()
	untar(t, out, x)
	// Our bundle's signature verifies with stock cosign, offline.
	c := exec.Command(cosign, "verify-blob", "--key", filepath.Join(dir, "release.pub"), "--signature", filepath.Join(x, "manifest.sig"),
		"--insecure-ignore-tlog=true", filepath.Join(x, "manifest.json"))
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("cosign verify-blob of our bundle: %v\n%s", err, b)
	}
	// A key pair made by cosign signs our bundles, and its public key verifies them.
	cdir := t.TempDir()
	gen := exec.Command(cosign, "generate-key-pair")
	gen.Dir = cdir
	gen.Env = append(os.Environ(), "COSIGN_PASSWORD=test-pass")
	if b, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, b)
	}
	t.Setenv("COSIGN_PASSWORD", "test-pass")
	out2 := filepath.Join(dir, "wake-cosign.bundle")
	mustCmd(t, "bundle", "build", "--model", filepath.Join(models, "hello_deepa.onnx"), "--name", "wake", "--version", "1.0.1",
		"--key", filepath.Join(cdir, "cosign.key"), "--out", out2, "--quiet")
	mustCmd(t, "bundle", "verify", "--key", filepath.Join(cdir, "cosign.pub"), out2)
	t.Setenv("COSIGN_PASSWORD", "wrong")
	if _, errs, code := cmd(t, "bundle", "build", "--model", filepath.Join(models, "hello_deepa.onnx"), "--name", "wake", "--version", "1.0.2",
		"--key", filepath.Join(cdir, "cosign.key"), "--out", filepath.Join(dir, "x.bundle"), "--quiet"); code == 0 || strings.Contains(errs, "wrong") {
		t.Fatalf("wrong cosign password: exit %d, %q (the password must not be echoed)", code, errs)
	}
}

func TestTrustSignAndKeysCLI(t *testing.T) {
	dir := t.TempDir()
	for _, role := range []string{"root", "release", "control"} {
		mustCmd(t, "keys", "generate", "--out", dir, "--role", role)
		st, err := os.Stat(filepath.Join(dir, role+".key"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s.key: %v %v", role, st.Mode(), err)
		}
	}
	if _, _, code := cmd(t, "keys", "generate", "--out", dir, "--role", "root"); code == 0 {
		t.Fatal("keys generate overwrote an existing root key")
	}
	out := filepath.Join(dir, "trust.json")
	mustCmd(t, "trust", "sign", "--root", filepath.Join(dir, "root.key"), "--version", "1", "--release", filepath.Join(dir, "release.pub"),
		"--control", filepath.Join(dir, "control.pub"), "--out", out)
	var env struct{ PayloadType string }
	b, _ := os.ReadFile(out)
	if json.Unmarshal(b, &env); env.PayloadType != "application/vnd.edgefleet.trust+json" {
		t.Fatalf("trust document: %s", b)
	}
	if _, errs, code := cmd(t, "keys", "generate", "--out", dir, "--role", "admin"); code == 0 || errs == "" {
		t.Fatal("unknown role accepted")
	}
}

func TestBuildInt8Variant(t *testing.T) {
	models := fleettest.Models(t)
	dir := t.TempDir()
	mustCmd(t, "keys", "generate", "--out", dir)
	out := filepath.Join(dir, "wake-int8.bundle")
	mustCmd(t, "bundle", "build", "--model", filepath.Join(models, "hello_deepa.onnx"), "--name", "wake", "--version", "1.0.0",
		"--key", filepath.Join(dir, "release.key"), "--out", out, "--quantize", "int8-dynamic", "--force", "--quiet")
	var man struct {
		Variant      string
		Quantization struct {
			Method     string
			SizeBefore int64 `json:"size_before"`
			SizeAfter  int64 `json:"size_after"`
			Agreement  float64
			Extra      map[string]string
		}
		Files []struct {
			Role string
			Size int64
		}
	}
	json.Unmarshal([]byte(mustCmd(t, "bundle", "inspect", out)), &man)
	q := man.Quantization
	if man.Variant != "int8" || q.Method == "" || q.SizeAfter*3 > q.SizeBefore || q.Agreement < 0.99 || q.Extra["kernels"] == "" {
		t.Fatalf("int8 manifest facts: %+v", man)
	}
	for _, f := range man.Files {
		if f.Role == "model" && f.Size != q.SizeAfter {
			t.Fatalf("bundle ships a %d byte model, quantized one is %d", f.Size, q.SizeAfter)
		}
	}
	// Static quantization needs real calibration inputs.
	if _, errs, code := cmd(t, "bundle", "build", "--model", filepath.Join(models, "ocr_cls.onnx"), "--name", "cls", "--version", "1.0.0",
		"--key", filepath.Join(dir, "release.key"), "--out", filepath.Join(dir, "c.bundle"), "--quantize", "int8", "--quiet"); code == 0 || !strings.Contains(errs, "--reference") {
		t.Fatalf("static int8 without samples: exit %d %s", code, errs)
	}
}

// TestBundleBuildEncrypted: --encrypt-to gives a bundle that verifies like any other (digests are
// of the ciphertext), names its encryption in the manifest, and holds no plaintext.
func TestBundleBuildEncrypted(t *testing.T) {
	models := fleettest.Models(t)
	dir := t.TempDir()
	mustCmd(t, "keys", "generate", "--out", dir)
	cpID, err := seal.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "encryption.pub")
	os.WriteFile(pub, []byte(cpID.Recipient().String()+"\n"), 0o644)
	model := filepath.Join(models, "hello_deepa.onnx")
	base := []string{"bundle", "build", "--model", model, "--name", "m", "--version", "1.0.0", "--key", filepath.Join(dir, "release.key"), "--quiet"}
	for _, to := range []string{pub, cpID.Recipient().String()} {
		out := filepath.Join(t.TempDir(), "m.bundle")
		id := strings.TrimSpace(mustCmd(t, append(base, "--out", out, "--encrypt-to", to)...))
		if v := mustCmd(t, "bundle", "verify", "--key", filepath.Join(dir, "release.pub"), out); !strings.Contains(v, id) {
			t.Fatalf("verify: %s", v)
		}
		var man struct {
			Encryption *struct {
				Scheme           string `json:"scheme"`
				ContentRecipient string `json:"content_recipient"`
			} `json:"encryption"`
		}
		json.Unmarshal([]byte(mustCmd(t, "bundle", "inspect", out)), &man)
		if man.Encryption == nil || man.Encryption.Scheme != "age-x25519" || !strings.HasPrefix(man.Encryption.ContentRecipient, "age1") {
			t.Fatalf("inspect: encryption %+v", man.Encryption)
		}
		plain, _ := os.ReadFile(model)
		b, _ := os.ReadFile(out)
		if bytes.Contains(b, plain[len(plain)/2:len(plain)/2+64]) {
			t.Fatal("encrypted bundle holds the model's plaintext")
		}
	}
	if _, errs, code := cmd(t, append(base, "--out", filepath.Join(dir, "x.bundle"), "--encrypt-to", "age1notarecipient")...); code == 0 || !strings.Contains(errs, "encrypt-to") {
		t.Fatalf("bad recipient: exit %d %s", code, errs)
	}
}

// TestBundleBuildRuntime: `bundle build --kind runtime` packs an agent binary (here this test's
// own executable, an ELF of the host's arch) and an optional library, signed, named
// edgefleet-agent, with the arch as requirement and variant; wrong uses are refused plainly.
func TestBundleBuildRuntime(t *testing.T) {
	dir := t.TempDir()
	mustCmd(t, "keys", "generate", "--out", dir)
	key := filepath.Join(dir, "release.key")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dir, "libonnxruntime.so.1")
	os.WriteFile(lib, []byte("not really a library"), 0o644)
	out := filepath.Join(dir, "agent.bundle")
	id := strings.TrimSpace(mustCmd(t, "bundle", "build", "--kind", "runtime", "--agent", self, "--ort-lib", lib, "--version", "1.5.0",
		"--key", key, "--out", out, "--quiet"))
	if v := mustCmd(t, "bundle", "verify", "--key", filepath.Join(dir, "release.pub"), out); !strings.Contains(v, id) {
		t.Fatalf("verify: %s", v)
	}
	var man struct {
		Kind, Name, Version, Variant string
		Requirements                 struct{ Arch []string }
		Files                        []struct{ Path, Role string }
	}
	if err := json.Unmarshal([]byte(mustCmd(t, "bundle", "inspect", out)), &man); err != nil {
		t.Fatal(err)
	}
	arch := runtime.GOARCH
	if man.Kind != "runtime" || man.Name != "edgefleet-agent" || man.Version != "1.5.0" || man.Variant != arch ||
		len(man.Requirements.Arch) != 1 || man.Requirements.Arch[0] != arch || len(man.Files) != 2 ||
		man.Files[0].Path != "agent" || man.Files[1].Path != "libonnxruntime.so" || man.Files[0].Role != "runtime" {
		t.Fatalf("manifest: %+v", man)
	}

	script := filepath.Join(dir, "agent.sh")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no agent":         {[]string{"--version", "1.0.0"}, "--agent is required"},
		"another name":     {[]string{"--agent", self, "--name", "wake", "--version", "1.0.0"}, "edgefleet-agent"},
		"not ELF, no arch": {[]string{"--agent", script, "--version", "1.0.0"}, "pass --arch"},
		"bad version":      {[]string{"--agent", self, "--version", "one"}, "semantic version"},
		"model named so":   {[]string{"--kind", "model", "--model", self, "--name", "edgefleet-agent", "--version", "1.0.0"}, "reserved"},
		"script with arch": {[]string{"--agent", script, "--arch", "arm64", "--version", "1.0.0"}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"bundle", "build", "--kind", "runtime", "--key", key, "--out", filepath.Join(t.TempDir(), "b"), "--quiet"}, tc.args...)
			_, errs, code := cmd(t, args...)
			if (tc.want == "") != (code == 0) || !strings.Contains(errs, tc.want) {
				t.Fatalf("exit %d, stderr %q; want %q", code, errs, tc.want)
			}
		})
	}
}
