package updater

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"filippo.io/age"

	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/seal"
)

// verifyDir checks a folder holding manifest.json, manifest.sig and the payload files: the
// signature by a trusted release key, the manifest's digest against the expected bundle id, and
// every file's size and SHA-256. Nothing is used before this passes. A slot of an encrypted bundle
// holds plaintext, checked against the digests recorded when it was decrypted (plainFile): the
// signed manifest's digests are of the ciphertext, and the ciphertext was verified before.
func verifyDir(ctx context.Context, dir, id string, verifiers []bundle.Verifier, slot bool) (*bundle.Manifest, error) {
	mb, err := os.ReadFile(filepath.Join(dir, bundle.ManifestName))
	if err != nil {
		return nil, err
	}
	sig, err := os.ReadFile(filepath.Join(dir, bundle.SignatureName))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(mb)
	if hex.EncodeToString(sum[:]) != id {
		return nil, fmt.Errorf("%w: manifest in %s is not bundle %s", ErrMismatch, dir, id)
	}
	m, err := bundle.VerifyManifest(ctx, mb, sig, verifiers)
	if err != nil {
		return nil, err
	}
	want := map[string]plainEntry{}
	for _, f := range m.Files {
		want[f.Path] = plainEntry{Size: f.Size, SHA256: f.SHA256}
	}
	if slot && m.Encryption != nil {
		b, err := os.ReadFile(filepath.Join(dir, plainFile))
		if err != nil {
			return nil, err
		}
		want = map[string]plainEntry{}
		if err := json.Unmarshal(b, &want); err != nil {
			return nil, fmt.Errorf("%s in %s: %v: %w", plainFile, dir, err, bundle.ErrDigest)
		}
	}
	for _, f := range m.Files {
		w, ok := want[f.Path]
		if !ok {
			return nil, fmt.Errorf("file %s in %s has no recorded digest: %w", f.Path, dir, bundle.ErrDigest)
		}
		fh, err := os.Open(filepath.Join(dir, f.Path))
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		n, err := io.Copy(h, fh)
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f.Path, err)
		}
		if n != w.Size || hex.EncodeToString(h.Sum(nil)) != w.SHA256 {
			return nil, fmt.Errorf("file %s in %s does not match the signed manifest: %w", f.Path, dir, bundle.ErrDigest)
		}
	}
	return m, nil
}

// plainFile, in the slot of an encrypted bundle, lists each payload's plaintext size and SHA-256 as
// computed while decrypting, so that a slot can be checked again at start (a disk can rot). Its
// name starts with a dot, which no payload name may.
const plainFile = ".plaintext.json"

type plainEntry struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// installSlot replaces slot's content with the verified download: hard links where the file
// system allows (no copy of a large model), copies otherwise. An encrypted bundle is decrypted
// instead, streaming from the download into the new slot folder, the only place its plaintext is
// ever written. The slot folder is rebuilt from scratch, so repeating this after a crash gives the
// same result.
func installSlot(src, slot string, m *bundle.Manifest, content age.Identity) error {
	tmp := slot + ".new"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	names := []string{bundle.ManifestName, bundle.SignatureName}
	if m.Encryption != nil {
		if content == nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("bundle %s is encrypted and no key was given", m.Ref())
		}
		plain := map[string]plainEntry{}
		for _, f := range m.Files {
			n, sum, err := seal.DecryptFile(filepath.Join(src, f.Path), filepath.Join(tmp, f.Path), content)
			if err != nil {
				os.RemoveAll(tmp)
				return fmt.Errorf("decrypt %s: %w", f.Path, err)
			}
			plain[f.Path] = plainEntry{Size: n, SHA256: sum}
		}
		b, _ := json.Marshal(plain)
		if err := atomicfile.WriteFile(filepath.Join(tmp, plainFile), b, 0o600); err != nil {
			return err
		}
	} else {
		for _, f := range m.Files {
			names = append(names, f.Path)
		}
	}
	for _, n := range names {
		if err := linkOrCopy(filepath.Join(src, n), filepath.Join(tmp, n)); err != nil {
			return err
		}
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return err
	}
	if err := os.RemoveAll(slot); err != nil {
		return err
	}
	if err := os.Rename(tmp, slot); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(slot))
}

func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// VerifyDir is verifyDir for the runtime lifecycle (agent/runtimeup), which installs agent
// binaries through the same checks as models.
func VerifyDir(ctx context.Context, dir, id string, verifiers []bundle.Verifier) (*bundle.Manifest, error) {
	// Runtime bundles are never encrypted, so the plaintext-slot flag does not apply.
	return verifyDir(ctx, dir, id, verifiers, false)
}

// InstallSlot is installSlot for the runtime lifecycle.
func InstallSlot(src, slot string, m *bundle.Manifest) error { return installSlot(src, slot, m, nil) }

// ReasonOf maps a download or verification error to its reason code and whether it is worth
// retrying.
func ReasonOf(err error) (reason string, transient bool) { return reasonOf(err) }
