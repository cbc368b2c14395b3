package trust

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"os"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/ota/sign"
)

// Role names what a key is for; it is also the file name GenerateKeyFiles uses.
type Role string

const (
	RoleRelease Role = "release" // signs bundles (manifest.sig)
	RoleRoot    Role = "root"    // signs trust documents; kept offline
	RoleControl Role = "control" // signs desired states; held by the control plane
)

// ParseRole reads a --role flag; empty means release, the default of `controlplane keys generate`.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case "":
		return RoleRelease, nil
	case RoleRelease, RoleRoot, RoleControl:
		return r, nil
	}
	return "", fmt.Errorf("role %q: want release, root or control", s)
}

// GenerateKeyFiles writes DIR/ROLE.key (PKCS#8 PEM, 0600) and DIR/ROLE.pub (PKIX PEM), ECDSA P-256,
// for `controlplane keys generate --out DIR --role ROLE`. It creates DIR (0700) if needed and
// refuses to overwrite existing keys.
func GenerateKeyFiles(dir string, role Role) (keyPath, pubPath, keyID string, err error) {
	if _, err := ParseRole(string(role)); err != nil {
		return "", "", "", fmt.Errorf("generate key files: %w", err)
	}
	if role == "" {
		role = RoleRelease
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", "", fmt.Errorf("generate %s key: %w", role, err)
	}
	keyPath = filepath.Join(dir, string(role)+".key")
	pubPath = filepath.Join(dir, string(role)+".pub")
	keyID, err = sign.GenerateKeyFiles(keyPath, pubPath, sign.ECDSAP256)
	if err != nil {
		return "", "", "", fmt.Errorf("generate %s key: %w", role, err)
	}
	return keyPath, pubPath, keyID, nil
}

// Sign validates doc and wraps it in a DSSE envelope signed by every root signer given. During a
// root rotation pass the old and the new root, and list only the new one in doc.Root.
func Sign(ctx context.Context, doc Document, rootSigners ...*sign.Signer) ([]byte, error) {
	if len(rootSigners) == 0 {
		return nil, fmt.Errorf("sign trust document: no root key")
	}
	// Normalise what the JSON shows: UTC, whole seconds, [] rather than null.
	doc.IssuedAt = doc.IssuedAt.UTC().Truncate(time.Second)
	for _, l := range []*[]Key{&doc.Root, &doc.ReleaseKeys, &doc.ControlKeys} {
		if *l == nil {
			*l = []Key{}
		}
	}
	if doc.Revoked == nil {
		doc.Revoked = []string{}
	}
	if _, err := validate(doc); err != nil {
		return nil, fmt.Errorf("sign trust document v%d: %w", doc.Version, err)
	}
	payload, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode trust document: %w", err)
	}
	env, err := sign.SignEnvelopeWith(ctx, PayloadType, payload, rootSigners...)
	if err != nil {
		return nil, fmt.Errorf("sign trust document v%d: %w", doc.Version, err)
	}
	return env, nil
}

// Open checks an envelope against the given roots, with no version history: for tools and the
// control plane reading a trust.json it was handed. Holders that track versions use Store.
func Open(ctx context.Context, envelope []byte, roots ...*sign.Verifier) (Document, error) {
	payload, _, err := sign.OpenEnvelope(ctx, envelope, PayloadType, roots...)
	if err != nil {
		return Document{}, fmt.Errorf("open trust document: %w", err)
	}
	p, err := parseDocument(payload)
	if err != nil {
		return Document{}, fmt.Errorf("open trust document: %w", err)
	}
	return p.doc, nil
}

// SignFileOptions are the inputs of `controlplane trust sign`.
type SignFileOptions struct {
	Version  uint64
	IssuedAt time.Time // zero: now
	// RootKeys are private key files that sign: root.key, or during a rotation the old and new.
	RootKeys []string
	// RootPubs are the public key files listed as the root. Empty: the public halves of RootKeys.
	// To rotate from old to new: RootKeys {old.key, new.key}, RootPubs {new.pub}.
	RootPubs    []string
	ReleasePubs []string
	ControlPubs []string
	// Revoked are key ids, or public key files whose ids are revoked.
	Revoked []string
	Out     string // written atomically, 0644
}

// SignTrustFile builds, signs and writes a trust document for `controlplane trust sign`, and
// returns the document written.
func SignTrustFile(ctx context.Context, o SignFileOptions) (Document, error) {
	var signers []*sign.Signer
	for _, p := range o.RootKeys {
		s, err := sign.LoadSigner(p)
		if err != nil {
			return Document{}, fmt.Errorf("trust sign: root key: %w", err)
		}
		signers = append(signers, s)
	}
	doc := Document{Version: o.Version, IssuedAt: o.IssuedAt}
	if doc.IssuedAt.IsZero() {
		doc.IssuedAt = time.Now()
	}
	if len(o.RootPubs) == 0 {
		for _, s := range signers {
			doc.Root = append(doc.Root, KeyOf(s.Verifier()))
		}
	}
	for _, l := range []struct {
		paths []string
		dst   *[]Key
		role  string
	}{{o.RootPubs, &doc.Root, "root"}, {o.ReleasePubs, &doc.ReleaseKeys, "release"}, {o.ControlPubs, &doc.ControlKeys, "control"}} {
		for _, p := range l.paths {
			v, err := sign.LoadVerifier(p)
			if err != nil {
				return Document{}, fmt.Errorf("trust sign: %s key: %w", l.role, err)
			}
			*l.dst = append(*l.dst, KeyOf(v))
		}
	}
	for _, r := range o.Revoked {
		if sign.IsFingerprint(r) {
			doc.Revoked = append(doc.Revoked, r)
			continue
		}
		v, err := sign.LoadVerifier(r)
		if err != nil {
			return Document{}, fmt.Errorf("trust sign: revoked %q is neither a key id nor a public key file: %w", r, err)
		}
		doc.Revoked = append(doc.Revoked, v.KeyID())
	}
	env, err := Sign(ctx, doc, signers...)
	if err != nil {
		return Document{}, err
	}
	if err := atomicfile.WriteFile(o.Out, env, 0o644); err != nil {
		return Document{}, fmt.Errorf("trust sign: write %s: %w", o.Out, err)
	}
	_, payload, _ := sign.UnverifiedPayload(env)
	var written Document
	if err := json.Unmarshal(payload, &written); err != nil {
		return Document{}, fmt.Errorf("trust sign: re-read: %w", err)
	}
	return written, nil
}
