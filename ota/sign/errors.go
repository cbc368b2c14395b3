package sign

import "errors"

// Errors a caller decides on. They are wrapped with what was being done; test with errors.Is.
var (
	// ErrSignature: a signature does not verify (wrong key, tampered message, garbage bytes).
	ErrSignature = errors.New("signature does not verify")
	// ErrUnknownKey: nothing was signed by any of the keys offered (or none were offered).
	ErrUnknownKey = errors.New("no signature by a known key")
	// ErrUnsupportedKey: a key that is neither ECDSA P-256 nor Ed25519.
	ErrUnsupportedKey = errors.New("unsupported key type")
	// ErrPayloadType: a DSSE envelope carries another kind of document than the one expected.
	ErrPayloadType = errors.New("unexpected payload type")
	// ErrTooLarge: an envelope or signature file exceeds its size bound.
	ErrTooLarge = errors.New("too large")
	// ErrMalformed: input that does not parse (PEM, base64, JSON).
	ErrMalformed = errors.New("malformed")
)
