// Package sign owns signing and verification for edgefleet: key generation and loading, the
// detached signature that sits beside a bundle's manifest.json, and DSSE envelopes for signed
// documents (desired state, trust document).
//
// All cryptography comes from github.com/sigstore/sigstore (and the DSSE encoding it builds on), so
// that what we sign verifies with ordinary sigstore tooling:
//
//	cosign verify-blob --key release.pub --signature manifest.sig --insecure-ignore-tlog=true manifest.json
//
// and keys made by `cosign generate-key-pair` can sign here. Keys are ECDSA P-256 (the default, and
// what cosign generates) or Ed25519. A key is named by its Fingerprint: the hex SHA-256 of its PKIX
// DER encoding, used as the key id in DSSE signatures, trust documents and enrollment tokens.
//
// The package knows nothing of which keys to trust: that is ota/trust. It never logs key material
// or passwords.
package sign
