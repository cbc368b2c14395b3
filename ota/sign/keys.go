package sign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"io"
	"os"
	"strings"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// Algorithm names a key type we generate.
type Algorithm string

const (
	// ECDSAP256 is the default: what cosign generates, and what most sigstore tooling expects.
	ECDSAP256 Algorithm = "ecdsa-p256"
	// Ed25519 gives smaller keys and deterministic signatures.
	Ed25519 Algorithm = "ed25519"
)

// PasswordEnv is the environment variable that holds the password of an encrypted cosign.key,
// the same one cosign itself reads.
const PasswordEnv = "COSIGN_PASSWORD"

// maxKeyFile bounds what we read as a key file: a PEM key is well under 1 KiB, and a path pointed at
// the wrong file (a model, a log) should fail fast instead of being read whole.
const maxKeyFile = 64 << 10

// GenerateKey creates a new private key. An empty alg means ECDSAP256.
func GenerateKey(alg Algorithm) (*Signer, error) {
	var priv crypto.PrivateKey
	switch alg {
	case "", ECDSAP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate ECDSA P-256 key: %w", err)
		}
		priv = k
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate Ed25519 key: %w", err)
		}
		priv = k
	default:
		return nil, fmt.Errorf("generate key %q: %w (want %s or %s)", alg, ErrUnsupportedKey, ECDSAP256, Ed25519)
	}
	return NewSigner(priv)
}

// GenerateKeyFiles creates a key pair and writes the private key to keyPath (PKCS#8 PEM, 0600) and
// the public key to pubPath (PKIX PEM, 0644). It refuses to overwrite an existing file at either
// path: replacing a root or release key by accident cannot be undone. It returns the key id.
func GenerateKeyFiles(keyPath, pubPath string, alg Algorithm) (string, error) {
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", fmt.Errorf("generate key files: %s: %w", p, os.ErrExist)
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("generate key files: %w", err)
		}
	}
	s, err := GenerateKey(alg)
	if err != nil {
		return "", err
	}
	privPEM, err := cryptoutils.MarshalPrivateKeyToPEM(s.priv)
	if err != nil {
		return "", fmt.Errorf("encode private key: %w", err)
	}
	// The public half goes first: a crash between the two writes leaves a useless .pub (harmless,
	// regenerate) rather than a private key whose public half is missing.
	if err := atomicfile.WriteFile(pubPath, s.PublicKeyPEM(), 0o644); err != nil {
		return "", fmt.Errorf("write public key: %w", err)
	}
	if err := atomicfile.WriteFile(keyPath, privPEM, 0o600); err != nil {
		return "", fmt.Errorf("write private key: %w", err)
	}
	return s.KeyID(), nil
}

// LoadSigner reads a private key: our PKCS#8 PEM ("PRIVATE KEY"), or cosign's encrypted cosign.key
// ("ENCRYPTED SIGSTORE PRIVATE KEY" / "ENCRYPTED COSIGN PRIVATE KEY"), decrypted with the password in
// $COSIGN_PASSWORD (an empty password is valid, as with cosign).
func LoadSigner(path string) (*Signer, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	s, err := ParseSigner(data)
	if err != nil {
		return nil, fmt.Errorf("load signing key %s: %w", path, err)
	}
	return s, nil
}

// ParseSigner is LoadSigner for bytes already read.
func ParseSigner(pemBytes []byte) (*Signer, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("no PEM block: %w", ErrMalformed)
	}
	encrypted := strings.Contains(block.Type, "ENCRYPTED")
	pw, havePW := os.LookupEnv(PasswordEnv)
	if encrypted && !havePW {
		// cosign would prompt; we run unattended, so say what is missing instead of failing obscurely.
		return nil, fmt.Errorf("key is encrypted (%s) and $%s is not set", block.Type, PasswordEnv)
	}
	// A non-nil slice even for an empty password: cryptoutils skips decryption on nil.
	password := append([]byte{}, pw...)
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(pemBytes, cryptoutils.StaticPasswordFunc(password))
	clear(password)
	if err != nil {
		if encrypted {
			return nil, fmt.Errorf("decrypt key (is $%s right?): %w", PasswordEnv, err)
		}
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	return NewSigner(priv)
}

// LoadVerifier reads a PEM public key ("PUBLIC KEY", PKIX), ours or cosign.pub.
func LoadVerifier(path string) (*Verifier, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, fmt.Errorf("load public key: %w", err)
	}
	v, err := ParseVerifier(data)
	if err != nil {
		return nil, fmt.Errorf("load public key %s: %w", path, err)
	}
	return v, nil
}

// ParseVerifier is LoadVerifier for bytes already read (e.g. a public_key_pem in a trust document).
func ParseVerifier(pemBytes []byte) (*Verifier, error) {
	if len(pemBytes) > maxKeyFile {
		return nil, fmt.Errorf("public key: %w", ErrTooLarge)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w: %w", ErrMalformed, err)
	}
	return NewVerifier(pub)
}

// Fingerprint is the key id: hex SHA-256 of the public key's PKIX DER encoding. Equal keys have equal
// fingerprints whichever tool wrote the PEM.
func Fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// IsFingerprint reports whether s has the form of a key id (64 lower-case hex digits).
func IsFingerprint(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// checkPublicKey admits the key types we sign with; anything else (RSA, other curves) is refused
// so that every key in the system verifies the same way everywhere.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("ECDSA curve %s: %w", k.Curve.Params().Name, ErrUnsupportedKey)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("%T: %w", pub, ErrUnsupportedKey)
	}
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%s: over %d bytes: %w", path, maxKeyFile, ErrTooLarge)
	}
	return data, nil
}
