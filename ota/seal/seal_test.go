package seal_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"filippo.io/age"

	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/seal"
	"github.com/edgefleet/edgefleet/ota/sign"
)

// buildEncrypted builds a signed bundle whose payload is encrypted to a content key sealed to cp.
func buildEncrypted(t *testing.T, s *sign.Signer, cp age.Recipient, files map[string][]byte) (tarBytes []byte, m *bundle.Manifest) {
	t.Helper()
	c, err := seal.NewContent(cp)
	if err != nil {
		t.Fatal(err)
	}
	var in []bundle.File
	for _, name := range []string{"model.onnx", "golden.json", "labels.txt"} {
		role := map[string]bundle.Role{"model.onnx": bundle.RoleModel, "golden.json": bundle.RoleGolden, "labels.txt": bundle.RoleLabels}[name]
		in = append(in, bundle.File{Path: name, Role: role, Bytes: files[name]})
	}
	enc, err := c.EncryptFiles(in, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, mb, err := bundle.Build(context.Background(), bundle.BuildInput{Kind: bundle.KindModel, Name: "secret", Version: "1.0.0",
		BlockSize: bundle.MinBlockSize, Encryption: c.Encryption, Files: enc}, s, &buf)
	if err != nil {
		t.Fatal(err)
	}
	m, err = bundle.ParseManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), m
}

// TestEncryptedBundle: what a device goes through, from the bundle file to plaintext in a slot.
func TestEncryptedBundle(t *testing.T) {
	signer, err := sign.GenerateKey(sign.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	verifiers := []bundle.Verifier{signer.Verifier()}
	cpID, _ := seal.NewIdentity()
	devA, _ := seal.NewIdentity()
	devB, _ := seal.NewIdentity()
	model := bytes.Repeat([]byte("weights of a model nobody else may read "), 500) // several blocks
	files := map[string][]byte{"model.onnx": model, "golden.json": []byte(`{"cases":[]}`), "labels.txt": []byte("cat\ndog\n")}
	tarBytes, m := buildEncrypted(t, signer, cpID.Recipient(), files)

	if m.Encryption == nil || m.Encryption.Scheme != bundle.EncryptionAgeX25519 {
		t.Fatalf("manifest encryption = %+v", m.Encryption)
	}
	// Nothing of the plaintext is in the bundle file, which every device can read (carousels).
	for name, plain := range files {
		if len(plain) >= 8 && bytes.Contains(tarBytes, plain[:min(len(plain), 64)]) {
			t.Fatalf("bundle file holds plaintext of %s", name)
		}
	}
	// The control plane opens the seal and wraps the content key for device A only.
	content, err := seal.Open(m, cpID)
	if err != nil {
		t.Fatal(err)
	}
	wrappedA, err := seal.Wrap(content, devA.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	otherContent, _ := seal.NewIdentity()
	wrappedOther, _ := seal.Wrap(otherContent, devA.Recipient()) // a valid key, for another bundle

	tamper := func(b []byte) []byte {
		b = bytes.Clone(b)
		// Flip a byte inside the model's ciphertext: past the two head entries.
		i := bytes.Index(b, []byte("age-encryption.org/v1"))
		b[i+200] ^= 1
		return b
	}
	cases := []struct {
		name    string
		bundle  []byte
		device  age.Identity
		wrapped string
		wantErr error
	}{
		{"recipient decrypts", tarBytes, devA, wrappedA, nil},
		{"no key for the device", tarBytes, devB, "", seal.ErrNotRecipient},
		{"another device's key", tarBytes, devB, wrappedA, seal.ErrNotRecipient},
		{"the control plane's sealed key", tarBytes, devA, m.Encryption.SealedKey, seal.ErrNotRecipient},
		{"a key for another bundle", tarBytes, devA, wrappedOther, seal.ErrNotRecipient},
		{"tampered ciphertext is caught by its digest", tamper(tarBytes), devA, wrappedA, bundle.ErrDigest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dl := filepath.Join(t.TempDir(), "download")
			// Digests are of the ciphertext: verification needs no key and comes first.
			b, err := bundle.ExtractTo(context.Background(), bytes.NewReader(tc.bundle), dl, verifiers, bundle.Limits{})
			if err != nil {
				if tc.wantErr == nil || !errors.Is(err, tc.wantErr) {
					t.Fatalf("verify: %v, want %v", err, tc.wantErr)
				}
				return
			}
			key, err := seal.Unwrap(tc.wrapped, tc.device, b.Manifest.Encryption.ContentRecipient)
			if err != nil {
				if tc.wantErr == nil || !errors.Is(err, tc.wantErr) {
					t.Fatalf("unwrap: %v, want %v", err, tc.wantErr)
				}
				// Nor does the device's own identity open the payload directly.
				_, _, err := seal.DecryptFile(filepath.Join(dl, "model.onnx"), filepath.Join(t.TempDir(), "model.onnx"), tc.device)
				if !errors.Is(err, seal.ErrNotRecipient) {
					t.Fatalf("decrypt with the device identity: %v, want ErrNotRecipient", err)
				}
				return
			}
			if tc.wantErr != nil {
				t.Fatalf("unwrap succeeded, want %v", tc.wantErr)
			}
			slot := t.TempDir()
			for _, f := range b.Manifest.Files {
				n, _, err := seal.DecryptFile(filepath.Join(dl, f.Path), filepath.Join(slot, f.Path), key)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(filepath.Join(slot, f.Path))
				if !bytes.Equal(got, files[f.Path]) || n != int64(len(got)) {
					t.Fatalf("%s: round trip differs", f.Path)
				}
			}
		})
	}
}

// TestDecryptAltered: age authenticates the ciphertext, so a file altered after verification (on
// the device's disk) fails and leaves no partial plaintext.
func TestDecryptAltered(t *testing.T) {
	content, _ := seal.NewIdentity()
	dir := t.TempDir()
	var buf bytes.Buffer
	if err := seal.Encrypt(&buf, bytes.NewReader(bytes.Repeat([]byte{7}, 200<<10)), content.Recipient()); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	b[len(b)-10] ^= 1
	src := filepath.Join(dir, "model.onnx.age")
	os.WriteFile(src, b, 0o600)
	dst := filepath.Join(dir, "model.onnx")
	if _, _, err := seal.DecryptFile(src, dst, content); err == nil {
		t.Fatal("altered ciphertext decrypted")
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial plaintext left behind: %v", err)
	}
}

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "age.key"), filepath.Join(dir, "age.pub")
	a, err := seal.LoadOrCreate(key, pub)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(key)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode %v, want 0600", st.Mode().Perm())
	}
	b, err := seal.LoadOrCreate(key, pub)
	if err != nil || b.String() != a.String() {
		t.Fatalf("reload gave another identity (%v)", err)
	}
	r, err := seal.ReadRecipient(pub)
	if err != nil || r.String() != a.Recipient().String() {
		t.Fatalf("recipient file: %v %v", r, err)
	}
}

// BenchmarkDecryptFile: what decryption adds to an install, per byte of model.
func BenchmarkDecryptFile(b *testing.B) {
	content, _ := seal.NewIdentity()
	dir := b.TempDir()
	src := filepath.Join(dir, "model.onnx.age")
	f, _ := os.Create(src)
	if err := seal.Encrypt(f, bytes.NewReader(make([]byte, 32<<20)), content.Recipient()); err != nil {
		b.Fatal(err)
	}
	f.Close()
	b.SetBytes(32 << 20)
	for b.Loop() {
		dst := filepath.Join(dir, "model.onnx")
		if _, _, err := seal.DecryptFile(src, dst, content); err != nil {
			b.Fatal(err)
		}
		os.Remove(dst)
	}
}
