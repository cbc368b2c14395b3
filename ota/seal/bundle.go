package seal

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"filippo.io/age"

	"github.com/edgefleet/edgefleet/ota/bundle"
)

// Content is the key material of one encrypted bundle while it is being built.
type Content struct {
	Identity   *age.X25519Identity
	Encryption *bundle.Encryption
}

// NewContent makes a fresh content identity for one bundle and seals it to the control plane's
// recipients (at least one).
func NewContent(controlPlane ...age.Recipient) (*Content, error) {
	if len(controlPlane) == 0 {
		return nil, fmt.Errorf("%w: no recipient to seal the content key to", ErrKey)
	}
	id, err := NewIdentity()
	if err != nil {
		return nil, err
	}
	sealed, err := Wrap(id, controlPlane...)
	if err != nil {
		return nil, err
	}
	return &Content{Identity: id, Encryption: &bundle.Encryption{
		Scheme: bundle.EncryptionAgeX25519, ContentRecipient: id.Recipient().String(), SealedKey: sealed,
	}}, nil
}

// EncryptFiles encrypts each payload into dir (one file per payload, 0600) and returns files that
// read the ciphertext. Encryption is randomised, so it happens once, here, before bundle.Build reads
// each file twice (hash, then write).
func (c *Content) EncryptFiles(files []bundle.File, dir string) ([]bundle.File, error) {
	out := make([]bundle.File, 0, len(files))
	for i, f := range files {
		path := filepath.Join(dir, fmt.Sprintf("payload-%d.age", i))
		if err := c.encryptFile(f, path); err != nil {
			return nil, fmt.Errorf("encrypt %s: %w", f.Path, err)
		}
		out = append(out, bundle.FileFromPath(f.Path, f.Role, path))
	}
	return out, nil
}

func (c *Content) encryptFile(f bundle.File, path string) error {
	var src io.ReadCloser
	var err error
	if f.Open != nil {
		src, err = f.Open()
	} else {
		src = io.NopCloser(bytes.NewReader(f.Bytes))
	}
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := Encrypt(dst, src, c.Identity.Recipient()); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// Open gets the content identity of an encrypted bundle from its manifest's sealed key, with the
// control plane's identity.
func Open(m *bundle.Manifest, controlPlane age.Identity) (*age.X25519Identity, error) {
	if m.Encryption == nil {
		return nil, fmt.Errorf("bundle %s is not encrypted", m.Ref())
	}
	id, err := Unwrap(m.Encryption.SealedKey, controlPlane, m.Encryption.ContentRecipient)
	if err != nil {
		return nil, fmt.Errorf("open the sealed content key of %s: %w", m.Ref(), err)
	}
	return id, nil
}

// DecryptFile decrypts the age file src into a new file dst (0600, fsynced) and returns the
// plaintext's size and SHA-256. On any error dst is removed: no partial plaintext is left behind.
func DecryptFile(src, dst string, content age.Identity) (size int64, sum string, err error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, "", err
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(dst)
		}
	}()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(out, h)}
	if err := Decrypt(cw, in, content); err != nil {
		return 0, "", fmt.Errorf("%s: %w", filepath.Base(src), err)
	}
	if err := out.Sync(); err != nil {
		return 0, "", err
	}
	if err := out.Close(); err != nil {
		return 0, "", err
	}
	return cw.n, hex.EncodeToString(h.Sum(nil)), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
