package sign

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

func mustKey(t testing.TB, alg Algorithm) *Signer {
	t.Helper()
	s, err := GenerateKey(alg)
	if err != nil {
		t.Fatalf("GenerateKey(%q): %v", alg, err)
	}
	return s
}

func TestSignVerify(t *testing.T) {
	ctx := context.Background()
	msg := []byte(`{"name":"detector","version":"1.2.0"}`)
	for _, alg := range []Algorithm{ECDSAP256, Ed25519, ""} {
		signer := mustKey(t, alg)
		other := mustKey(t, alg)
		sig, err := signer.Sign(ctx, msg)
		if err != nil {
			t.Fatalf("%s: Sign: %v", alg, err)
		}
		tampered := bytes.Clone(msg)
		tampered[3] ^= 1
		badSig := bytes.Clone(sig)
		badSig[len(badSig)-1] ^= 1
		tests := []struct {
			name    string
			v       *Verifier
			msg     []byte
			sig     []byte
			wantErr error
		}{
			{"valid", signer.Verifier(), msg, sig, nil},
			{"wrong key", other.Verifier(), msg, sig, ErrSignature},
			{"tampered message", signer.Verifier(), tampered, sig, ErrSignature},
			{"tampered signature", signer.Verifier(), msg, badSig, ErrSignature},
			{"empty signature", signer.Verifier(), msg, nil, ErrSignature},
			{"garbage signature", signer.Verifier(), msg, []byte("not a signature"), ErrSignature},
		}
		for _, tt := range tests {
			t.Run(string(alg)+"/"+tt.name, func(t *testing.T) {
				err := tt.v.Verify(ctx, tt.msg, tt.sig)
				if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
					t.Fatalf("Verify = %v, want %v", err, tt.wantErr)
				}
			})
		}
	}
}

func TestSignatureFile(t *testing.T) {
	ctx := context.Background()
	s := mustKey(t, ECDSAP256)
	msg := []byte("manifest bytes")
	file, err := SignBlob(ctx, s, msg)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsAny(file, "\n\r ") {
		t.Fatalf("signature file has whitespace: %q", file)
	}
	other := mustKey(t, Ed25519)
	tests := []struct {
		name    string
		file    []byte
		vs      []*Verifier
		wantID  string
		wantErr error
	}{
		{"as written", file, []*Verifier{s.Verifier()}, s.KeyID(), nil},
		{"trailing newline", append(bytes.Clone(file), '\n'), []*Verifier{s.Verifier()}, s.KeyID(), nil},
		{"second of two keys", file, []*Verifier{other.Verifier(), s.Verifier()}, s.KeyID(), nil},
		{"only another key", file, []*Verifier{other.Verifier()}, "", ErrSignature},
		{"no keys", file, nil, "", ErrUnknownKey},
		{"not base64", []byte("%%%"), []*Verifier{s.Verifier()}, "", ErrMalformed},
		{"empty", nil, []*Verifier{s.Verifier()}, "", ErrMalformed},
		{"oversize", bytes.Repeat([]byte("A"), maxSignatureFile+4), []*Verifier{s.Verifier()}, "", ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := VerifyBlob(ctx, msg, tt.file, tt.vs...)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("VerifyBlob = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil && !errors.Is(err, ErrSignature) && !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("a bad signature file must also read as ErrSignature, got %v", err)
			}
			if id != tt.wantID {
				t.Fatalf("key id = %q, want %q", id, tt.wantID)
			}
		})
	}
}

func TestKeyFiles(t *testing.T) {
	for _, alg := range []Algorithm{ECDSAP256, Ed25519} {
		t.Run(string(alg), func(t *testing.T) {
			dir := t.TempDir()
			keyPath, pubPath := filepath.Join(dir, "release.key"), filepath.Join(dir, "release.pub")
			id, err := GenerateKeyFiles(keyPath, pubPath, alg)
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(keyPath)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("private key mode %v, want 0600", fi.Mode().Perm())
			}
			keyPEM, _ := os.ReadFile(keyPath)
			if !bytes.HasPrefix(keyPEM, []byte("-----BEGIN PRIVATE KEY-----")) {
				t.Fatalf("private key is not PKCS#8 PEM: %.30q", keyPEM)
			}
			pubPEM, _ := os.ReadFile(pubPath)
			if !bytes.HasPrefix(pubPEM, []byte("-----BEGIN PUBLIC KEY-----")) {
				t.Fatalf("public key is not PKIX PEM: %.30q", pubPEM)
			}
			if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*")); len(leftovers) != 0 {
				t.Fatalf("temp files left behind: %v", leftovers)
			}
			s, err := LoadSigner(keyPath)
			if err != nil {
				t.Fatal(err)
			}
			v, err := LoadVerifier(pubPath)
			if err != nil {
				t.Fatal(err)
			}
			if s.KeyID() != id || v.KeyID() != id || !IsFingerprint(id) {
				t.Fatalf("key ids differ or malformed: generated %s, signer %s, verifier %s", id, s.KeyID(), v.KeyID())
			}
			sig, err := s.Sign(context.Background(), []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Verify(context.Background(), []byte("x"), sig); err != nil {
				t.Fatal(err)
			}
			if _, err := GenerateKeyFiles(keyPath, filepath.Join(dir, "other.pub"), alg); !errors.Is(err, os.ErrExist) {
				t.Fatalf("overwriting a key: err = %v, want ErrExist", err)
			}
		})
	}
	if _, err := GenerateKey("rsa-2048"); !errors.Is(err, ErrUnsupportedKey) {
		t.Fatalf("GenerateKey(rsa) = %v, want ErrUnsupportedKey", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384PEM, _ := cryptoutils.MarshalPublicKeyToPEM(p384.Public())
	if _, err := LoadVerifier(write("p384.pub", string(p384PEM))); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("P-384 public key: %v, want ErrUnsupportedKey", err)
	}
	if _, err := LoadVerifier(write("junk.pub", "hello")); !errors.Is(err, ErrMalformed) {
		t.Errorf("junk public key: %v, want ErrMalformed", err)
	}
	if _, err := LoadSigner(write("junk.key", "hello")); !errors.Is(err, ErrMalformed) {
		t.Errorf("junk private key: %v, want ErrMalformed", err)
	}
	if _, err := LoadSigner(write("big.key", strings.Repeat("A", maxKeyFile+1))); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize key: %v, want ErrTooLarge", err)
	}
	if _, err := LoadSigner(filepath.Join(dir, "absent.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absent key: %v, want ErrNotExist", err)
	}
}

// TestLoadEncryptedKey covers cosign's key format without the cosign binary: cryptoutils writes the
// same "ENCRYPTED SIGSTORE PRIVATE KEY" PEM that `cosign generate-key-pair` does.
func TestLoadEncryptedKey(t *testing.T) {
	privPEM, pubPEM, err := cryptoutils.GeneratePEMEncodedECDSAKeyPair(elliptic.P256(), cryptoutils.StaticPasswordFunc([]byte("s3cret")))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "cosign.key")
	if err := os.WriteFile(keyPath, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := ParseVerifier(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("right password", func(t *testing.T) {
		t.Setenv(PasswordEnv, "s3cret")
		s, err := LoadSigner(keyPath)
		if err != nil {
			t.Fatal(err)
		}
		if s.KeyID() != v.KeyID() {
			t.Fatalf("key id %s, want %s", s.KeyID(), v.KeyID())
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		t.Setenv(PasswordEnv, "nope")
		_, err := LoadSigner(keyPath)
		if err == nil || strings.Contains(err.Error(), "nope") {
			t.Fatalf("err = %v; want a failure that does not echo the password", err)
		}
	})
	t.Run("no password", func(t *testing.T) {
		t.Setenv(PasswordEnv, "") // registers the restore of the caller's value
		os.Unsetenv(PasswordEnv)
		_, err := LoadSigner(keyPath)
		if err == nil || !strings.Contains(err.Error(), PasswordEnv) {
			t.Fatalf("err = %v; want one naming %s", err, PasswordEnv)
		}
	})
}

// TestCosignGoldenVector checks a signature that cosign v2.6.5 wrote (testdata/, made with
// `cosign sign-blob --key cosign.key --tlog-upload=false --output-signature`), so the format is
// pinned even where no cosign binary is available.
func TestCosignGoldenVector(t *testing.T) {
	v, err := LoadVerifier("testdata/cosign.pub")
	if err != nil {
		t.Fatal(err)
	}
	// The same fingerprint cosign puts in a bundle's publicKey.hint (base64 there) and that
	// `openssl pkey -pubin -outform DER | sha256sum` prints.
	const wantID = "7ddff64836659f51bcc9e1bb69ed09fdb0ccecdbe94386cb4249b56628b72422"
	if v.KeyID() != wantID {
		t.Fatalf("fingerprint %s, want %s", v.KeyID(), wantID)
	}
	blob, _ := os.ReadFile("testdata/cosign-blob.txt")
	sigFile, _ := os.ReadFile("testdata/cosign-blob.txt.sig")
	if id, err := VerifyBlob(context.Background(), blob, sigFile, v); err != nil || id != wantID {
		t.Fatalf("VerifyBlob = %q, %v", id, err)
	}
	if _, err := VerifyBlob(context.Background(), append(blob, 'x'), sigFile, v); !errors.Is(err, ErrSignature) {
		t.Fatalf("tampered blob: %v, want ErrSignature", err)
	}
}

func TestContextCancelled(t *testing.T) {
	s := mustKey(t, ECDSAP256)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Sign(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sign on cancelled ctx: %v", err)
	}
}
