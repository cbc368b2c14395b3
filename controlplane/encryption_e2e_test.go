package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/controlplane/bundles"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/builder"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/desired"
	"github.com/edgefleet/edgefleet/ota/seal"
	"github.com/edgefleet/edgefleet/ota/sign"
)

// holdsPlaintext reports which files under dir contain a piece of the model's plaintext.
func holdsPlaintext(t *testing.T, dir string, piece []byte, skip ...string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		for _, s := range skip {
			if d.Name() == s {
				return nil
			}
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, piece) {
			found = append(found, path)
		}
		return nil
	})
	return found
}

// forgeDesired stands for an attacker holding the control key (or a control plane bug): it gives a
// stopped agent a validly signed desired state naming the encrypted bundle, written where the agent
// keeps the one it accepted, and the bundle's ciphertext as a carousel listener would have it (the
// control plane itself serves blocks only to devices it assigned the bundle to, so B could not
// fetch them). The forged state has the generation the control plane holds for the device: at a
// higher one the control plane would at once re-issue above it and end the forgery.
func forgeDesired(t *testing.T, cp *fleettest.ControlPlane, ag *fleettest.Agent, gen uint64, id string, model desired.Model) {
	t.Helper()
	var prev desired.Accepted
	if b, err := os.ReadFile(filepath.Join(ag.DataDir, "desired.json")); err == nil {
		json.Unmarshal(b, &prev)
	}
	control, err := sign.LoadSigner(filepath.Join(cp.Cfg.DataDir, "control.key"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	st := desired.State{Device: ag.ID, Generation: gen, IssuedAt: now, ExpiresAt: now.Add(time.Hour),
		Models: map[string]desired.Model{"wake": model}}
	env, err := desired.Sign(context.Background(), control, st)
	if err != nil {
		t.Fatal(err)
	}
	acc, _ := json.Marshal(desired.Accept(prev, st, env))
	if err := os.WriteFile(filepath.Join(ag.DataDir, "desired.json"), acc, 0o600); err != nil {
		t.Fatal(err)
	}
	src, dst := filepath.Join(cp.Cfg.DataDir, "bundles", id), filepath.Join(ag.DataDir, "downloads", id)
	os.MkdirAll(dst, 0o700)
	mb, _ := os.ReadFile(filepath.Join(src, bundle.ManifestName))
	m, err := bundle.ParseManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{bundle.ManifestName: bundle.ManifestName, bundle.SignatureName: bundle.SignatureName}
	for _, f := range m.Files {
		names[f.Path] = f.Path + ".part"
	}
	for from, to := range names {
		b, err := os.ReadFile(filepath.Join(src, from))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dst, to), b, 0o600)
	}
}

// TestEncryptedBundleRecipients: an encrypted bundle assigned to device A installs and serves on
// A; device B, handed the same bundle id by a validly signed desired state and the ciphertext, but
// with no key or with A's key, cannot install it, reports not_a_recipient and keeps serving its
// old model. Nothing the registry serves, and nothing on B, holds the plaintext.
func TestEncryptedBundleRecipients(t *testing.T) {
	models := fleettest.Models(t)
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	devA := fleettest.OTAAgent(t, cp, k, "dev-a", "line-a")
	devB := fleettest.OTAAgent(t, cp, k, "dev-b", "line-b")
	addrA := devA.ListenAddr(t)
	devB.ListenAddr(t)
	fleettest.Eventually(t, 30*time.Second, "devices report their recipients", func() bool {
		d := cp.Devices()
		return d["dev-a"].Reported != nil && d["dev-a"].Reported.Runtime != nil && d["dev-a"].Reported.Runtime.AgeRecipient != "" &&
			d["dev-b"].Reported != nil && d["dev-b"].Reported.Runtime != nil && d["dev-b"].Reported.Runtime.AgeRecipient != ""
	})

	// B serves an unencrypted wake@1.0.0 (another model, so its plaintext is not the secret one).
	v1, id1 := fleettest.BuildBundle(t, k, "ocr_cls.onnx", "wake", "1.0.0")
	cp.Push(v1)
	assign(t, cp, "dev-b", "wake@1.0.0", "1s")
	waitModel(t, cp, "dev-b", "wake", "v1 committed", func(a, s, _ string) bool { return a == id1 && s == updater.StepCommitted })

	// wake@2.0.0, encrypted to the control plane's recipient.
	plain, err := os.ReadFile(filepath.Join(models, "hello_deepa.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	piece := plain[len(plain)/2 : len(plain)/2+64]
	var buf bytes.Buffer
	res, err := builder.Build(context.Background(), builder.Options{ModelPath: filepath.Join(models, "hello_deepa.onnx"), Name: "wake", Version: "2.0.0",
		Golden: 2, EncryptTo: []string{filepath.Join(cp.Cfg.DataDir, "encryption.pub")}}, k.Release, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), piece) {
		t.Fatal("the encrypted bundle file holds the model's plaintext")
	}
	v2 := filepath.Join(t.TempDir(), "wake-2.0.0.bundle")
	os.WriteFile(v2, buf.Bytes(), 0o644)
	id2 := res.ID
	cp.Push(v2)
	var rec bundles.Record
	if code, _ := cp.Get("/api/v1/bundles/"+id2, &rec); code != 200 || !rec.Encrypted {
		t.Fatalf("registry record: %d encrypted=%v", code, rec.Encrypted)
	}
	// A bundle sealed to another control plane's key is refused at upload: no device could get it.
	other, _ := seal.NewIdentity()
	var foreign bytes.Buffer
	if _, err := builder.Build(context.Background(), builder.Options{ModelPath: filepath.Join(models, "hello_deepa.onnx"), Name: "wake", Version: "2.9.0",
		Golden: 1, EncryptTo: []string{other.Recipient().String()}}, k.Release, &foreign); err != nil {
		t.Fatal(err)
	}
	if code, body := cp.Do("POST", "/api/v1/bundles", &foreign, nil); code != 422 || !strings.Contains(body, "encryption.pub") {
		t.Fatalf("bundle sealed to another key: %d %s", code, body)
	}
	// What blocks and carousels are read from holds ciphertext only; the control plane's own
	// plaintext drift reference (none here) is the one file allowed.
	if f := holdsPlaintext(t, filepath.Join(cp.Cfg.DataDir, "bundles", id2), piece, bundles.DriftReferenceName); len(f) > 0 {
		t.Fatalf("registry files hold plaintext: %v", f)
	}

	// A: a recipient. Killed right after it starts decrypting into its slot, it redoes that at
	// restart, then smoke-tests and serves the decrypted model.
	devA.Stop()
	devA.StartWith(t, "--crash-at", updater.StepUnpacking)
	devA.ListenAddrAfter(t, 2)
	assign(t, cp, "dev-a", "wake@2.0.0", "1s")
	if !devA.WaitExit(60 * time.Second) {
		t.Fatal("A never reached the unpacking step")
	}
	if !strings.Contains(devA.Log(), "crash point reached") {
		t.Fatal("A exited, but not at the crash point")
	}
	devA.Start(t)
	devA.ListenAddrAfter(t, 3)
	waitModel(t, cp, "dev-a", "wake", "encrypted v2 committed", func(a, s, _ string) bool { return a == id2 && s == updater.StepCommitted })
	// A restart verifies the slot again, against the plaintext digests recorded at decryption, and
	// serves it without needing the key.
	devA.Stop()
	devA.Start(t)
	addrA = devA.ListenAddrAfter(t, 4)
	fleettest.Eventually(t, 30*time.Second, "A serves v2 after a restart", func() bool { return servedBundle(t, addrA, "wake") == id2 })
	if f := holdsPlaintext(t, filepath.Join(devA.DataDir, "downloads"), piece); len(f) > 0 {
		t.Fatalf("plaintext outside A's slots: %v", f)
	}
	sess, err := onnxrt.NewSession(plain, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	inputs, _ := onnxrt.GenerateInputs(sess.Schema(), 1, 7, nil)
	if got, code, body := infer(t, addrA, "wake", inputs[0]); code != 200 || got.ModelVersion != "2.0.0" {
		t.Fatalf("A serves: %d %s %+v", code, body, got)
	}
	var accA desired.Accepted
	b, _ := os.ReadFile(filepath.Join(devA.DataDir, "desired.json"))
	json.Unmarshal(b, &accA)
	keyA := accA.State.Models["wake"]
	if keyA.Key == "" || keyA.Recipient != cp.Devices()["dev-a"].Reported.Runtime.AgeRecipient {
		t.Fatalf("A's desired state carries no key wrapped for A: %+v", keyA)
	}
	recipientB := cp.Devices()["dev-b"].Reported.Runtime.AgeRecipient
	genB := cp.Devices()["dev-b"].Reported.Generation

	cases := []struct {
		name string
		key  string
		want string // in the reported message
	}{
		{"no key", "", "no key for this device"},
		{"A's key, claimed for B", keyA.Key, "cannot open its key"},
	}
	for i, tc := range cases {
		devB.Stop()
		forgeDesired(t, cp, devB, genB, id2, desired.Model{Bundle: id2, Name: "wake", Version: "2.0.0", Key: tc.key, Recipient: recipientB})
		devB.Start(t)
		addrB := devB.ListenAddrAfter(t, i+2)
		fleettest.Eventually(t, 60*time.Second, "B refuses: "+tc.name, func() bool {
			m := cp.Model("dev-b", "wake")
			return m.Target == id2 && m.State == updater.StepFailed && m.Reason == updater.ReasonNotRecipient && strings.Contains(m.Message, tc.want)
		})
		if m := cp.Model("dev-b", "wake"); m.Active != id1 {
			t.Fatalf("%s: B's active bundle %s, want v1 %s", tc.name, m.Active, id1)
		}
		if got := servedBundle(t, addrB, "wake"); got != id1 {
			t.Fatalf("%s: B serves %q, want v1", tc.name, got)
		}
		if f := holdsPlaintext(t, devB.DataDir, piece); len(f) > 0 {
			t.Fatalf("%s: plaintext on B: %v", tc.name, f)
		}
	}
	// A still serves v2.
	if got := servedBundle(t, addrA, "wake"); got != id2 {
		t.Fatalf("A serves %q after B's attempts", got)
	}

	// A's data folder loses its identity (replaced disk): A reports a new recipient and the control
	// plane wraps the key again for it, in a new desired state.
	devA.Stop()
	os.Remove(filepath.Join(devA.DataDir, "age.key"))
	devA.Start(t)
	devA.ListenAddrAfter(t, 5)
	fleettest.Eventually(t, 30*time.Second, "A's key wrapped for its new recipient", func() bool {
		var acc desired.Accepted
		b, _ := os.ReadFile(filepath.Join(devA.DataDir, "desired.json"))
		json.Unmarshal(b, &acc)
		d := cp.Devices()["dev-a"]
		if acc.State == nil || d.Reported == nil || d.Reported.Runtime == nil {
			return false
		}
		m := acc.State.Models["wake"]
		return m.Recipient == d.Reported.Runtime.AgeRecipient && m.Recipient != keyA.Recipient && m.Key != "" && m.Key != keyA.Key
	})
}
