// Package bundle owns the edgefleet bundle file format: the manifest (its Go types, validation and
// canonical bytes, whose SHA-256 is the bundle id), the tar layout (manifest.json, manifest.sig,
// then flat payload files), building a bundle, and reading one back safely: signature first, then
// every size, file digest and block digest, under limits, with typed errors (ErrSignature,
// ErrDigest, ...) that callers decide on. It also gives block offsets and block verification for
// resumable transfer, and extraction into one folder that never writes outside it and leaves no
// partial files.
//
// What it must not do: no network, no ONNX Runtime (schema, opset and golden outputs are handed in
// by the caller, who reads them with internal/onnxrt), no key handling (signing and verification are
// the Signer and Verifier interfaces, implemented by ota/sign), no knowledge of the agent, the
// control plane, trust documents or rollouts. It imports only the standard library.
//
// Manifest.sig holds the base64 of the raw signature over the exact manifest.json bytes, as cosign
// writes it, so `cosign verify-blob --key release.pub --signature manifest.sig manifest.json` works
// on an unpacked bundle. Payload order in the tar is the manifest's order when built; readers accept
// any payload order (identity is the manifest, not the tar bytes) but refuse anything else out of
// place.
package bundle
