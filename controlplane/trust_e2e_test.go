package controlplane_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/ota/sign"
	"github.com/edgefleet/edgefleet/ota/trust"
)

// TestTrustDocumentRotation: devices that know only the root key get their release and control
// keys from root-signed trust documents; rotating the release key (new one listed, old one
// revoked) reaches them through the control plane, and bundles signed by the revoked key are
// refused.
func TestTrustDocumentRotation(t *testing.T) {
	fleettest.Models(t)
	dir := t.TempDir()
	for _, role := range []trust.Role{trust.RoleRoot, trust.RoleControl} {
		if _, _, _, err := trust.GenerateKeyFiles(dir, role); err != nil {
			t.Fatal(err)
		}
	}
	kA, kB := fleettest.NewKeys(t), fleettest.NewKeys(t)
	ctx := context.Background()
	sign1 := func(version uint64, release string, revoke ...string) string {
		out := filepath.Join(dir, "trust-v"+string(rune('0'+version))+".json")
		_, err := trust.SignTrustFile(ctx, trust.SignFileOptions{Version: version, RootKeys: []string{filepath.Join(dir, "root.key")},
			ReleasePubs: []string{release}, ControlPubs: []string{filepath.Join(dir, "control.pub")}, Revoked: revoke, Out: out})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	v1 := sign1(1, kA.PubPath)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustDoc: v1, ControlKey: filepath.Join(dir, "control.key")})
	ag := fleettest.StartAgent(t, cp.BrokerURL(), "rot-1", "g", "--root", filepath.Join(dir, "root.pub"), "--ort-lib", os.Getenv("EDGEFLEET_ORT_LIB"))

	a1, idA1 := fleettest.BuildBundle(t, kA, "hello_deepa.onnx", "wake", "1.0.0")
	cp.Push(a1)
	fleettest.Eventually(t, 30e9, "registered", func() bool { _, ok := cp.Devices()["rot-1"]; return ok })
	assign(t, cp, "rot-1", "wake@1.0.0", "0s")
	waitModel(t, cp, "rot-1", "wake", "bundle signed by key A installed under trust v1", func(a, s, _ string) bool { return a == idA1 && s == updater.StepCommitted })

	// Rotate: v2 trusts B and revokes A. The control plane publishes it on restart.
	vA, _ := sign.LoadVerifier(kA.PubPath)
	cp.Cfg.TrustDoc = sign1(2, kB.PubPath, vA.KeyID())
	cp.Restart()
	b2, idB2 := fleettest.BuildBundle(t, kB, "hello_deepa.onnx", "wake", "2.0.0")
	cp.Push(b2)
	assign(t, cp, "rot-1", "wake@2.0.0", "0s")
	waitModel(t, cp, "rot-1", "wake", "bundle signed by key B installed under trust v2", func(a, s, _ string) bool { return a == idB2 && s == updater.StepCommitted })
	stored, err := os.ReadFile(filepath.Join(ag.DataDir, "trust.json"))
	if err != nil || len(stored) == 0 {
		t.Fatalf("agent did not persist the trust document: %v", err)
	}
	a3, _ := fleettest.BuildBundle(t, kA, "hello_deepa.onnx", "wake", "3.0.0")
	f, _ := os.Open(a3)
	defer f.Close()
	if code, body := cp.Do("POST", "/api/v1/bundles", f, nil); code != 422 {
		t.Fatalf("bundle signed by the revoked key: %d %s", code, body)
	}
}
