package sign

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	ssldsse "github.com/secure-systems-lab/go-securesystemslib/dsse"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"
)

// MaxEnvelopeSize bounds a DSSE envelope we will parse. Envelopes arrive from the network (MQTT,
// retained): a desired state or trust document is a few KiB, and anything near this bound is an
// error or an attack, refused before any JSON parsing or signature check.
const MaxEnvelopeSize = 1 << 20

// maxEnvelopeSignatures bounds the signatures we try, so a crafted envelope cannot make a device
// run thousands of signature checks. A trust document during a root rotation has two or three.
const maxEnvelopeSignatures = 16

// SignEnvelope wraps payload in a DSSE envelope signed by s: the in-toto/sigstore envelope
// (payloadType, base64 payload, signatures over the pre-authentication encoding), so the signature
// covers the exact payload bytes and its type, and standard DSSE tooling can read it. Each signature
// carries the signer's KeyID.
func SignEnvelope(ctx context.Context, s *Signer, payloadType string, payload []byte) ([]byte, error) {
	return SignEnvelopeWith(ctx, payloadType, payload, s)
}

// SignEnvelopeWith is SignEnvelope with several signers (a trust document that rotates the root is
// signed by the old and the new root).
func SignEnvelopeWith(ctx context.Context, payloadType string, payload []byte, signers ...*Signer) ([]byte, error) {
	if payloadType == "" {
		return nil, fmt.Errorf("sign envelope: empty payload type")
	}
	if len(signers) == 0 || len(signers) > maxEnvelopeSignatures {
		return nil, fmt.Errorf("sign envelope: %d signers (want 1 to %d)", len(signers), maxEnvelopeSignatures)
	}
	// Refuse here rather than produce an envelope every reader will refuse. Base64 grows by 4/3.
	if base64.StdEncoding.EncodedLen(len(payload))+4096 > MaxEnvelopeSize {
		return nil, fmt.Errorf("sign envelope: payload of %d bytes: %w", len(payload), ErrTooLarge)
	}
	adapters := make([]ssldsse.Signer, 0, len(signers))
	seen := map[string]bool{}
	for _, s := range signers {
		if s == nil || seen[s.keyID] {
			continue
		}
		seen[s.keyID] = true
		adapters = append(adapters, &sigdsse.SignerAdapter{SignatureSigner: s.s, Pub: s.v.pub, PubKeyID: s.keyID})
	}
	es, err := ssldsse.NewEnvelopeSigner(adapters...)
	if err != nil {
		return nil, fmt.Errorf("sign envelope: %w", err)
	}
	env, err := es.SignPayload(ctx, payloadType, payload)
	if err != nil {
		return nil, fmt.Errorf("sign envelope %s: %w", payloadType, err)
	}
	out, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	return out, nil
}

// OpenEnvelope checks a DSSE envelope and returns its payload and the id of a key that signed it.
// It requires the expected payload type (a desired state is never read as a trust document), at
// least one valid signature by one of verifiers, and at most MaxEnvelopeSize bytes. Errors:
// ErrTooLarge, ErrMalformed, ErrPayloadType, ErrUnknownKey (no signature names a key we were given),
// ErrSignature (a signature names one but does not verify).
func OpenEnvelope(ctx context.Context, envelopeJSON []byte, payloadType string, verifiers ...*Verifier) (payload []byte, keyID string, err error) {
	payload, ids, err := OpenEnvelopeAll(ctx, envelopeJSON, payloadType, verifiers...)
	if err != nil {
		return nil, "", err
	}
	return payload, ids[0], nil
}

// OpenEnvelopeAll is OpenEnvelope returning the ids of every key among verifiers that signed (at
// least one), in envelope order. ota/trust needs them all: a new root counts only with the old one.
func OpenEnvelopeAll(ctx context.Context, envelopeJSON []byte, payloadType string, verifiers ...*Verifier) (payload []byte, keyIDs []string, err error) {
	env, err := ParseEnvelope(envelopeJSON)
	if err != nil {
		return nil, nil, err
	}
	if env.PayloadType != payloadType {
		return nil, nil, fmt.Errorf("open envelope: got %q, want %q: %w", env.PayloadType, payloadType, ErrPayloadType)
	}
	known := map[string]bool{}
	providers := make([]ssldsse.Verifier, 0, len(verifiers))
	for _, v := range verifiers {
		// A key given twice would be counted once by the DSSE verifier anyway; skipping it here also
		// keeps that library from printing its duplicate-key notice to stdout.
		if v == nil || known[v.keyID] {
			continue
		}
		known[v.keyID] = true
		providers = append(providers, &sigdsse.VerifierAdapter{SignatureVerifier: v.v, Pub: v.pub, PubKeyID: v.keyID})
	}
	named := false
	for _, s := range env.Signatures {
		// An empty keyid is allowed by DSSE (cosign attest-blob writes one) and may be any key.
		if s.KeyID == "" || known[s.KeyID] {
			named = true
		}
	}
	if len(providers) == 0 || !named {
		return nil, nil, fmt.Errorf("open %s envelope: %d signature(s), none by the %d key(s) given: %w",
			payloadType, len(env.Signatures), len(providers), ErrUnknownKey)
	}
	ev, err := ssldsse.NewEnvelopeVerifier(providers...)
	if err != nil {
		return nil, nil, fmt.Errorf("open envelope: %w", err)
	}
	accepted, body, err := ev.VerifyAndDecode(ctx, env)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("open envelope: %w", ctx.Err())
		}
		return nil, nil, fmt.Errorf("open %s envelope: %w: %v", payloadType, ErrSignature, err)
	}
	for _, a := range accepted {
		keyIDs = append(keyIDs, a.KeyID)
	}
	if len(keyIDs) == 0 {
		// VerifyAndDecode succeeds only at its threshold of one; this guards against a change there.
		return nil, nil, fmt.Errorf("open %s envelope: %w", payloadType, ErrSignature)
	}
	return body, keyIDs, nil
}

// ParseEnvelope decodes an envelope without checking any signature: for reading the payload type or
// the key ids before deciding which keys to verify with. Its payload is untrusted.
func ParseEnvelope(envelopeJSON []byte) (*ssldsse.Envelope, error) {
	if len(envelopeJSON) > MaxEnvelopeSize {
		return nil, fmt.Errorf("open envelope: %d bytes, limit %d: %w", len(envelopeJSON), MaxEnvelopeSize, ErrTooLarge)
	}
	var env ssldsse.Envelope
	if err := json.Unmarshal(envelopeJSON, &env); err != nil {
		return nil, fmt.Errorf("open envelope: %w: %v", ErrMalformed, err)
	}
	if env.PayloadType == "" {
		return nil, fmt.Errorf("open envelope: no payloadType: %w", ErrMalformed)
	}
	if len(env.Signatures) == 0 {
		return nil, fmt.Errorf("open envelope: no signatures: %w", ErrUnknownKey)
	}
	if len(env.Signatures) > maxEnvelopeSignatures {
		return nil, fmt.Errorf("open envelope: %d signatures, limit %d: %w", len(env.Signatures), maxEnvelopeSignatures, ErrTooLarge)
	}
	if _, err := env.DecodeB64Payload(); err != nil {
		return nil, fmt.Errorf("open envelope: payload: %w: %v", ErrMalformed, err)
	}
	for i, s := range env.Signatures {
		// The DSSE verifier gives up on the first undecodable signature; say which one it was.
		if _, err := base64.StdEncoding.DecodeString(s.Sig); err != nil {
			if _, err2 := base64.URLEncoding.DecodeString(s.Sig); err2 != nil {
				return nil, fmt.Errorf("open envelope: signature %d: %w: %v", i, ErrMalformed, errors.Join(err, err2))
			}
		}
	}
	return &env, nil
}

// UnverifiedPayload returns an envelope's payload type and decoded payload without checking any
// signature. Only for routing and diagnostics; never act on it.
func UnverifiedPayload(envelopeJSON []byte) (payloadType string, payload []byte, err error) {
	env, err := ParseEnvelope(envelopeJSON)
	if err != nil {
		return "", nil, err
	}
	payload, err = env.DecodeB64Payload()
	if err != nil {
		return "", nil, fmt.Errorf("open envelope: payload: %w: %v", ErrMalformed, err)
	}
	return env.PayloadType, payload, nil
}
