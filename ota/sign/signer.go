package sign

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// Signer signs with one private key. It is safe for concurrent use.
type Signer struct {
	priv  crypto.PrivateKey
	s     signature.Signer
	v     *Verifier
	keyID string
}

// NewSigner wraps an ECDSA P-256 or Ed25519 private key.
func NewSigner(priv crypto.PrivateKey) (*Signer, error) {
	var pub crypto.PublicKey
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		pub = k.Public()
	case ed25519.PrivateKey:
		pub = k.Public()
	default:
		return nil, fmt.Errorf("signing key %T: %w", priv, ErrUnsupportedKey)
	}
	v, err := NewVerifier(pub)
	if err != nil {
		return nil, err
	}
	// SHA-256 is what cosign uses for P-256 (sign-blob and verify-blob); Ed25519 ignores it and signs
	// the message itself (pure Ed25519, not Ed25519ph).
	s, err := signature.LoadSigner(priv, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("load signer: %w", err)
	}
	return &Signer{priv: priv, s: s, v: v, keyID: v.keyID}, nil
}

// Sign returns the raw signature of msg (ASN.1 DER for ECDSA, 64 bytes for Ed25519). For the file
// that sits beside a manifest, see EncodeSignature.
func (s *Signer) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	sig, err := s.s.SignMessage(bytes.NewReader(msg), options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("sign with key %s: %w", short(s.keyID), err)
	}
	return sig, nil
}

// KeyID is the fingerprint of the public half.
func (s *Signer) KeyID() string { return s.keyID }

// PublicKey is the public half.
func (s *Signer) PublicKey() crypto.PublicKey { return s.v.pub }

// PublicKeyPEM is the public half as PKIX PEM (what cosign.pub and our ROLE.pub hold).
func (s *Signer) PublicKeyPEM() []byte { return s.v.PublicKeyPEM() }

// Verifier verifies what this Signer signs.
func (s *Signer) Verifier() *Verifier { return s.v }

// Verifier checks signatures made by one public key. It is safe for concurrent use.
type Verifier struct {
	pub    crypto.PublicKey
	v      signature.Verifier
	keyID  string
	pubPEM []byte
}

// NewVerifier wraps an ECDSA P-256 or Ed25519 public key.
func NewVerifier(pub crypto.PublicKey) (*Verifier, error) {
	if err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("load verifier: %w", err)
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("load verifier: %w", err)
	}
	id, err := Fingerprint(pub)
	if err != nil {
		return nil, err
	}
	pemBytes, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return &Verifier{pub: pub, v: v, keyID: id, pubPEM: pemBytes}, nil
}

// Verify checks a raw signature of msg. Any failure is ErrSignature: callers need not tell a
// truncated signature from a wrong key, and the detail is kept in the message.
func (v *Verifier) Verify(ctx context.Context, msg, sig []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if err := v.v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(msg), options.WithContext(ctx)); err != nil {
		return fmt.Errorf("verify with key %s: %w: %v", short(v.keyID), ErrSignature, err)
	}
	return nil
}

// KeyID is the key's fingerprint.
func (v *Verifier) KeyID() string { return v.keyID }

// PublicKey is the key itself.
func (v *Verifier) PublicKey() crypto.PublicKey { return v.pub }

// PublicKeyPEM is the key as PKIX PEM.
func (v *Verifier) PublicKeyPEM() []byte { return bytes.Clone(v.pubPEM) }

// maxSignatureFile bounds a detached signature file: a base64 P-256 DER signature is under 100 bytes.
const maxSignatureFile = 4 << 10

// EncodeSignature is the content of a detached signature file (manifest.sig): standard base64 of the
// raw signature, no newline. That is exactly what `cosign sign-blob --output-signature` writes and
// what `cosign verify-blob --signature` reads.
func EncodeSignature(sig []byte) []byte {
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sig)))
	base64.StdEncoding.Encode(out, sig)
	return out
}

// DecodeSignature reads a detached signature file as written by EncodeSignature or cosign. Trailing
// whitespace is tolerated because people copy signatures through editors and `echo`.
func DecodeSignature(file []byte) ([]byte, error) {
	if len(file) > maxSignatureFile {
		return nil, fmt.Errorf("decode signature file: %w", ErrTooLarge)
	}
	sig, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(file)))
	if err != nil {
		return nil, fmt.Errorf("decode signature file: %w: %v", ErrMalformed, err)
	}
	if len(sig) == 0 {
		return nil, fmt.Errorf("decode signature file: empty: %w", ErrMalformed)
	}
	return sig, nil
}

// SignBlob signs msg and returns the detached signature file content (see EncodeSignature).
func SignBlob(ctx context.Context, s *Signer, msg []byte) ([]byte, error) {
	sig, err := s.Sign(ctx, msg)
	if err != nil {
		return nil, err
	}
	return EncodeSignature(sig), nil
}

// VerifyBlob checks a detached signature file against msg with each verifier in turn and returns
// the id of the key that signed. An agent holds several release keys during a rotation; which one
// signed is worth reporting. No verifiers is ErrUnknownKey; none matching is ErrSignature.
func VerifyBlob(ctx context.Context, msg, sigFile []byte, verifiers ...*Verifier) (string, error) {
	if len(verifiers) == 0 {
		return "", fmt.Errorf("verify blob: no keys to verify with: %w", ErrUnknownKey)
	}
	sig, err := DecodeSignature(sigFile)
	if err != nil {
		return "", fmt.Errorf("verify blob: %w: %w", ErrSignature, err)
	}
	for _, v := range verifiers {
		if v == nil {
			continue
		}
		if err := v.Verify(ctx, msg, sig); err == nil {
			return v.keyID, nil
		} else if ctx.Err() != nil {
			return "", fmt.Errorf("verify blob: %w", ctx.Err())
		}
	}
	return "", fmt.Errorf("verify blob against %d key(s): %w", len(verifiers), ErrSignature)
}

// short abbreviates a key id for messages; the full id is in trust documents.
func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
