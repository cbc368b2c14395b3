// Package trust owns the root-signed trust document (DESIGN.md "Trust"): which release keys may
// sign bundles and which control keys may sign desired states, and how a holder of trust (agent or
// control plane) moves from one version of that list to the next.
//
// An offline root key signs a versioned document listing the root, release and control keys and
// the revoked key ids, wrapped in a DSSE envelope (ota/sign). A Store starts from a pinned root (a
// public key, or a fingerprint learned from an enrollment token) and accepts any higher version
// signed by a root it trusts; a document that brings a new root counts only when the old root and
// every new one have signed it. A Store can also be pinned to keys given by flag, with no document.
//
// The package does no I/O of its own besides the helpers for the operator CLI (GenerateKeyFiles,
// SignTrustFile); persisting the accepted envelope is the caller's job (Store.Envelope, Restore).
package trust

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgefleet/edgefleet/ota/sign"
)

// PayloadType is the DSSE payload type of a trust document.
const PayloadType = "application/vnd.edgefleet.trust+json"

// Errors a caller decides on; test with errors.Is.
var (
	// ErrRollback: a version lower than the one held (a replay of an old document).
	ErrRollback = errors.New("trust document older than the one accepted")
	// ErrVersionConflict: the version held, with different content. Two documents with one version
	// means the root signed twice or something is forging; either way a person must look.
	ErrVersionConflict = errors.New("trust document with the accepted version but different content")
	// ErrUntrustedRoot: not signed by a root key the holder trusts.
	ErrUntrustedRoot = errors.New("trust document not signed by a trusted root")
	// ErrRootRotation: a new root key is listed but has not signed the document.
	ErrRootRotation = errors.New("new root key has not signed the trust document")
	// ErrInvalidDocument: a document that parses but breaks a rule (ids, versions, contradictions).
	ErrInvalidDocument = errors.New("invalid trust document")
	// ErrPinned: the holder was given its keys by flag and takes no documents.
	ErrPinned = errors.New("trust is pinned by configuration")
)

// Key is a public key with its id (sign.Fingerprint of the key).
type Key struct {
	ID           string `json:"id"`
	PublicKeyPEM string `json:"public_key_pem"`
}

// Document is the signed content. Root carries the root public keys themselves, not only their
// fingerprints, so that a device that learned just a fingerprint at enrollment can check the first
// document it receives.
type Document struct {
	Version     uint64    `json:"version"`
	IssuedAt    time.Time `json:"issued_at"`
	Root        []Key     `json:"root"`
	ReleaseKeys []Key     `json:"release_keys"`
	ControlKeys []Key     `json:"control_keys"`
	Revoked     []string  `json:"revoked"`
}

// KeyOf describes a verifier as a document Key.
func KeyOf(v *sign.Verifier) Key {
	return Key{ID: v.KeyID(), PublicKeyPEM: string(v.PublicKeyPEM())}
}

// parsed is a validated document with its keys loaded.
type parsed struct {
	doc     Document
	root    map[string]*sign.Verifier
	release []*sign.Verifier
	control []*sign.Verifier
	revoked map[string]bool
}

// parseDocument decodes and validates a payload. Every key id must be the fingerprint of the key it
// names: otherwise a document could pass off any key under a trusted root's id.
func parseDocument(payload []byte) (*parsed, error) {
	var d Document
	if err := json.Unmarshal(payload, &d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidDocument, err)
	}
	return validate(d)
}

func validate(d Document) (*parsed, error) {
	if d.Version == 0 {
		return nil, fmt.Errorf("%w: version must be at least 1", ErrInvalidDocument)
	}
	if d.IssuedAt.IsZero() {
		return nil, fmt.Errorf("%w: no issued_at", ErrInvalidDocument)
	}
	if len(d.Root) == 0 {
		return nil, fmt.Errorf("%w: no root key", ErrInvalidDocument)
	}
	p := &parsed{doc: d, root: map[string]*sign.Verifier{}, revoked: map[string]bool{}}
	for _, id := range d.Revoked {
		if !sign.IsFingerprint(id) {
			return nil, fmt.Errorf("%w: revoked id %q is not a key fingerprint", ErrInvalidDocument, id)
		}
		p.revoked[id] = true
	}
	load := func(role string, keys []Key) ([]*sign.Verifier, error) {
		seen := map[string]bool{}
		var out []*sign.Verifier
		for i, k := range keys {
			v, err := sign.ParseVerifier([]byte(k.PublicKeyPEM))
			if err != nil {
				return nil, fmt.Errorf("%w: %s key %d: %w", ErrInvalidDocument, role, i, err)
			}
			if v.KeyID() != k.ID {
				return nil, fmt.Errorf("%w: %s key %d: id %q is not its fingerprint %s", ErrInvalidDocument, role, i, k.ID, v.KeyID())
			}
			if seen[k.ID] {
				return nil, fmt.Errorf("%w: %s key %s listed twice", ErrInvalidDocument, role, k.ID)
			}
			// Listing a key as both valid and revoked is a mistake of whoever wrote the document;
			// refusing it beats guessing which half was meant.
			if p.revoked[k.ID] {
				return nil, fmt.Errorf("%w: %s key %s is also revoked", ErrInvalidDocument, role, k.ID)
			}
			seen[k.ID] = true
			out = append(out, v)
		}
		return out, nil
	}
	roots, err := load("root", d.Root)
	if err != nil {
		return nil, err
	}
	for _, v := range roots {
		p.root[v.KeyID()] = v
	}
	if p.release, err = load("release", d.ReleaseKeys); err != nil {
		return nil, err
	}
	if p.control, err = load("control", d.ControlKeys); err != nil {
		return nil, err
	}
	return p, nil
}
