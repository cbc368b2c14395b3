package sign

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cosignBinary finds the cached cosign through scripts/fetch-cosign.sh (the one place that knows the
// path and version). A missing binary fails the test under CI=true, where it must have been
// provisioned, and skips it loudly elsewhere: building cosign takes minutes and is not a test's job.
func cosignBinary(t *testing.T) string {
	t.Helper()
	script, err := filepath.Abs("../../scripts/fetch-cosign.sh")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(script, "--no-build").Output()
	path := strings.TrimSpace(string(out))
	if err != nil || path == "" {
		msg := "cosign binary not found (run scripts/fetch-cosign.sh to build it): "
		if ee, ok := err.(*exec.ExitError); ok {
			msg += strings.TrimSpace(string(ee.Stderr))
		} else if err != nil {
			msg += err.Error()
		}
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true: " + msg)
		}
		t.Skip("SKIPPING cosign interop test: " + msg)
	}
	return path
}

// runCosign runs cosign in dir with a private HOME, so it neither reads nor writes the user's
// ~/.sigstore, and a bounded time: verify-blob tries to reach the TUF CDN before falling back, and a
// network that swallows packets must not hang the test.
func runCosign(t *testing.T, bin, dir string, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "TUF_ROOT="+filepath.Join(dir, ".sigstore"))
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestCosignVerifiesOurSignature: what we write as manifest.sig passes `cosign verify-blob --key`.
func TestCosignVerifiesOurSignature(t *testing.T) {
	bin := cosignBinary(t)
	ctx := context.Background()
	for _, alg := range []Algorithm{ECDSAP256, Ed25519} {
		t.Run(string(alg), func(t *testing.T) {
			dir := t.TempDir()
			if _, err := GenerateKeyFiles(filepath.Join(dir, "release.key"), filepath.Join(dir, "release.pub"), alg); err != nil {
				t.Fatal(err)
			}
			s, err := LoadSigner(filepath.Join(dir, "release.key"))
			if err != nil {
				t.Fatal(err)
			}
			blob := []byte(`{"name":"detector","version":"1.0.0"}`)
			sigFile, err := SignBlob(ctx, s, blob)
			if err != nil {
				t.Fatal(err)
			}
			must(t, os.WriteFile(filepath.Join(dir, "manifest.json"), blob, 0o644))
			must(t, os.WriteFile(filepath.Join(dir, "manifest.sig"), sigFile, 0o644))
			out := runCosign(t, bin, dir, nil, "verify-blob", "--key", "release.pub", "--signature", "manifest.sig",
				"--insecure-ignore-tlog=true", "manifest.json")
			if !strings.Contains(out, "Verified OK") {
				t.Fatalf("cosign did not say Verified OK:\n%s", out)
			}
			// And cosign must refuse a tampered manifest, or the check above proves nothing.
			must(t, os.WriteFile(filepath.Join(dir, "manifest.json"), append(blob, ' '), 0o644))
			cmd := exec.Command(bin, "verify-blob", "--key", "release.pub", "--signature", "manifest.sig",
				"--insecure-ignore-tlog=true", "manifest.json")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "HOME="+dir)
			if out, err := cmd.CombinedOutput(); err == nil {
				t.Fatalf("cosign verified a tampered manifest:\n%s", out)
			}
		})
	}
}

// TestWeVerifyCosign: a cosign key pair and a cosign signature work with our LoadSigner,
// LoadVerifier and Verifier.
func TestWeVerifyCosign(t *testing.T) {
	bin := cosignBinary(t)
	ctx := context.Background()
	dir := t.TempDir()
	const password = "correct horse"
	t.Setenv(PasswordEnv, password)
	pwEnv := []string{PasswordEnv + "=" + password}
	runCosign(t, bin, dir, pwEnv, "generate-key-pair")
	blob := []byte("bundle manifest from cosign\n")
	must(t, os.WriteFile(filepath.Join(dir, "blob"), blob, 0o644))
	runCosign(t, bin, dir, pwEnv, "sign-blob", "--key", "cosign.key", "--tlog-upload=false", "--yes",
		"--output-signature", "s", "blob")

	v, err := LoadVerifier(filepath.Join(dir, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	sigFile, err := os.ReadFile(filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	if id, err := VerifyBlob(ctx, blob, sigFile, v); err != nil || id != v.KeyID() {
		t.Fatalf("our verifier on cosign's signature: %q, %v", id, err)
	}
	if _, err := VerifyBlob(ctx, append(bytes.Clone(blob), 'x'), sigFile, v); err == nil {
		t.Fatal("tampered blob verified")
	}

	s, err := LoadSigner(filepath.Join(dir, "cosign.key"))
	if err != nil {
		t.Fatalf("our LoadSigner on cosign.key: %v", err)
	}
	if s.KeyID() != v.KeyID() {
		t.Fatalf("cosign.key and cosign.pub fingerprints differ: %s vs %s", s.KeyID(), v.KeyID())
	}
	// Full circle: our signature with cosign's key, checked by cosign.
	ours, err := SignBlob(ctx, s, blob)
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(dir, "ours.sig"), ours, 0o644))
	runCosign(t, bin, dir, nil, "verify-blob", "--key", "cosign.pub", "--signature", "ours.sig",
		"--insecure-ignore-tlog=true", "blob")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
