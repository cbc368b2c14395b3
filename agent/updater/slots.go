package updater

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

// verifyDir checks a folder holding manifest.json, manifest.sig and the payload files: the
// signature by a trusted release key, the manifest's digest against the expected bundle id, and
// every file's size and SHA-256. Nothing is used before this passes.
func verifyDir(ctx context.Context, dir, id string, verifiers []bundle.Verifier) (*bundle.Manifest, error) {
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
	for _, f := range m.Files {
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
		if n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
			return nil, fmt.Errorf("file %s in %s does not match the signed manifest: %w", f.Path, dir, bundle.ErrDigest)
		}
	}
	return m, nil
}

// installSlot replaces slot's content with the verified download: hard links where the file
// system allows (no copy of a large model), copies otherwise. The slot folder is rebuilt from
// scratch, so repeating this after a crash gives the same result.
func installSlot(src, slot string, m *bundle.Manifest) error {
	tmp := slot + ".new"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	names := []string{bundle.ManifestName, bundle.SignatureName}
	for _, f := range m.Files {
		names = append(names, f.Path)
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
	return verifyDir(ctx, dir, id, verifiers)
}

// InstallSlot is installSlot for the runtime lifecycle.
func InstallSlot(src, slot string, m *bundle.Manifest) error { return installSlot(src, slot, m) }

// ReasonOf maps a download or verification error to its reason code and whether it is worth
// retrying.
func ReasonOf(err error) (reason string, transient bool) { return reasonOf(err) }
