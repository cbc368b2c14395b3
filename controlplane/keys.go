package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/bundles"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/seal"
	"github.com/edgefleet/edgefleet/ota/sign"
	"github.com/edgefleet/edgefleet/ota/trust"
)

// keySet is what the control plane signs with and trusts.
type keySet struct {
	control       *sign.Signer
	trust         *trust.Store
	trustEnvelope []byte
	// dataDir holds encryption.pub (the bundle encryption recipient); datasetRecipient is the age
	// recipient captured samples are encrypted to. Both are public, for GET /api/v1/trust.
	dataDir          string
	datasetRecipient func() string
}

func (k *keySet) releaseVerifiers() []bundle.Verifier {
	var out []bundle.Verifier
	for _, v := range k.trust.ReleaseVerifiers() {
		out = append(out, v)
	}
	return out
}

// Trust reports the public facts for GET /api/v1/trust: the control key, the release keys bundles
// are checked against and, with --trust-doc, the document's version, roots and revocations. Only
// public keys leave here.
func (k *keySet) Trust(context.Context) (api.TrustInfo, error) {
	info := api.TrustInfo{
		ControlKey:  api.TrustKey{ID: k.control.KeyID(), PublicKeyPEM: string(k.control.PublicKeyPEM())},
		Source:      "pinned",
		ReleaseKeys: []api.TrustKey{},
		ControlKeys: []api.TrustKey{},
	}
	for _, v := range k.trust.ReleaseVerifiers() {
		info.ReleaseKeys = append(info.ReleaseKeys, api.TrustKey{ID: v.KeyID(), PublicKeyPEM: string(v.PublicKeyPEM())})
	}
	for _, v := range k.trust.ControlVerifiers() {
		info.ControlKeys = append(info.ControlKeys, api.TrustKey{ID: v.KeyID(), PublicKeyPEM: string(v.PublicKeyPEM())})
	}
	if b, err := os.ReadFile(filepath.Join(k.dataDir, "encryption.pub")); err == nil {
		info.BundleRecipient = strings.TrimSpace(string(b))
	}
	if k.datasetRecipient != nil {
		info.DatasetRecipient = k.datasetRecipient()
	}
	if doc, ok := k.trust.Document(); ok {
		sum := sha256.Sum256(k.trustEnvelope)
		info.Source = "trust_document"
		info.Document = &api.TrustDocument{Version: doc.Version, IssuedAt: doc.IssuedAt, Root: k.trust.RootIDs(),
			Revoked: append([]string{}, doc.Revoked...), SHA256: hex.EncodeToString(sum[:])}
	}
	return info, nil
}

// loadKeys reads the control key (generating DATA/control.key and control.pub on first start) and
// the release keys from --trust files and folders or from a trust document.
func loadKeys(ctx context.Context, cfg Config) (*keySet, error) {
	ks := &keySet{dataDir: cfg.DataDir}
	path := cfg.ControlKey
	if path == "" {
		path = filepath.Join(cfg.DataDir, "control.key")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if _, err := sign.GenerateKeyFiles(path, filepath.Join(cfg.DataDir, "control.pub"), sign.ECDSAP256); err != nil {
				return nil, fmt.Errorf("generate control key: %w", err)
			}
		}
	}
	s, err := sign.LoadSigner(path)
	if err != nil {
		return nil, fmt.Errorf("control key: %w", err)
	}
	ks.control = s
	if cfg.ControlKey != "" {
		// Devices pinned by flag need the public half next to the data.
		if err := os.WriteFile(filepath.Join(cfg.DataDir, "control.pub"), s.PublicKeyPEM(), 0o644); err != nil {
			return nil, fmt.Errorf("write control.pub: %w", err)
		}
	}
	if cfg.TrustDoc != "" {
		env, err := os.ReadFile(cfg.TrustDoc)
		if err != nil {
			return nil, fmt.Errorf("read trust document: %w", err)
		}
		st, err := trust.Restore(ctx, env)
		if err != nil {
			return nil, fmt.Errorf("trust document %s: %w", cfg.TrustDoc, err)
		}
		ks.trust, ks.trustEnvelope = st, env
		return ks, nil
	}
	var release []*sign.Verifier
	for _, p := range cfg.TrustKeys {
		files := []string{p}
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			files, _ = filepath.Glob(filepath.Join(p, "*.pub"))
			if len(files) == 0 {
				return nil, fmt.Errorf("--trust %s: folder holds no .pub files", p)
			}
		}
		for _, f := range files {
			v, err := sign.LoadVerifier(f)
			if err != nil {
				return nil, fmt.Errorf("--trust %s: %w", f, err)
			}
			release = append(release, v)
		}
	}
	ks.trust = trust.NewPinned(release, []*sign.Verifier{s.Verifier()})
	return ks, nil
}

// loadEncryptionKey gives the registry the age identity that encrypted bundles' content keys are
// sealed to: --encryption-key, or DATA/encryption.key generated on first start with its recipient
// in DATA/encryption.pub (what `bundle build --encrypt-to` takes).
func loadEncryptionKey(cfg Config, breg *bundles.Registry, log *slog.Logger) error {
	path, pub := cfg.EncryptionKey, ""
	if path == "" {
		path, pub = filepath.Join(cfg.DataDir, "encryption.key"), filepath.Join(cfg.DataDir, "encryption.pub")
	}
	id, err := seal.LoadOrCreate(path, pub)
	if err != nil {
		return fmt.Errorf("encryption key: %w", err)
	}
	if cfg.EncryptionKey != "" {
		if err := os.WriteFile(filepath.Join(cfg.DataDir, "encryption.pub"), []byte(id.Recipient().String()+"\n"), 0o644); err != nil {
			return fmt.Errorf("write encryption.pub: %w", err)
		}
	}
	breg.SetIdentity(id)
	log.Debug("bundle encryption recipient", "recipient", id.Recipient().String())
	return nil
}
