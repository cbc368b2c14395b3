// Package seal is bundle encryption with filippo.io/age (X25519): the identities of the control
// plane and of each device, the content key made per bundle, encrypting a bundle's payload files
// to it, and wrapping that key for one recipient. It calls age for every cryptographic step and
// adds none of its own. It knows files and strings, not MQTT or HTTP.
//
// The scheme (docs/ARCHITECTURE.md, "Bundle encryption"): `bundle build --encrypt-to R` makes a
// fresh content identity, encrypts every payload file to it, and seals the identity to R (the
// control plane's recipient) in the signed manifest. The control plane opens the seal and wraps
// the identity again, per device, to the recipient the device reported; the device unwraps it
// with its own identity and decrypts into its slot.
package seal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"

	"github.com/edgefleet/edgefleet/internal/atomicfile"
)

// ErrNotRecipient: the identity at hand is none of those a key or file was encrypted to.
var ErrNotRecipient = errors.New("not a recipient")

// ErrKey: a key, recipient or wrapped key is malformed.
var ErrKey = errors.New("malformed key")

// maxWrapped bounds what Unwrap decrypts: an age header and one identity string.
const maxWrapped = 16 << 10

// NewIdentity makes a fresh X25519 identity.
func NewIdentity() (*age.X25519Identity, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, fmt.Errorf("generate age identity: %w", err)
	}
	return id, nil
}

// ParseIdentity reads an AGE-SECRET-KEY-1... string.
func ParseIdentity(s string) (*age.X25519Identity, error) {
	id, err := age.ParseX25519Identity(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	return id, nil
}

// ParseRecipient reads an age1... string.
func ParseRecipient(s string) (*age.X25519Recipient, error) {
	r, err := age.ParseX25519Recipient(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	return r, nil
}

// ReadRecipient takes an age1... string, or the path of a file holding one (the first line that
// is not a comment), as `--encrypt-to` does.
func ReadRecipient(arg string) (*age.X25519Recipient, error) {
	if strings.HasPrefix(strings.TrimSpace(arg), "age1") {
		return ParseRecipient(arg)
	}
	b, err := os.ReadFile(arg)
	if err != nil {
		return nil, fmt.Errorf("read recipient: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return ParseRecipient(line)
		}
	}
	return nil, fmt.Errorf("%w: %s holds no age1... recipient", ErrKey, arg)
}

// LoadOrCreate reads the identity at path, or creates one there (0600, written atomically) with
// its recipient beside it in pubPath (0644) when pubPath is not empty. The private key never leaves
// the file; callers log the recipient only.
func LoadOrCreate(path, pubPath string) (*age.X25519Identity, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		var line string
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				line = l
				break
			}
		}
		id, err := ParseIdentity(line)
		if err != nil {
			return nil, fmt.Errorf("identity %s: %w", path, err)
		}
		if pubPath != "" {
			if _, err := os.Stat(pubPath); errors.Is(err, os.ErrNotExist) {
				if err := atomicfile.WriteFile(pubPath, []byte(id.Recipient().String()+"\n"), 0o644); err != nil {
					return nil, err
				}
			}
		}
		return id, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read identity: %w", err)
	}
	id, err := NewIdentity()
	if err != nil {
		return nil, err
	}
	text := "# age identity (filippo.io/age); recipient " + id.Recipient().String() + "\n" + id.String() + "\n"
	if err := atomicfile.WriteFile(path, []byte(text), 0o600); err != nil {
		return nil, fmt.Errorf("write identity: %w", err)
	}
	if pubPath != "" {
		if err := atomicfile.WriteFile(pubPath, []byte(id.Recipient().String()+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("write recipient: %w", err)
		}
	}
	return id, nil
}

// Encrypt streams src into dst as an age file for the recipients.
func Encrypt(dst io.Writer, src io.Reader, recipients ...age.Recipient) error {
	w, err := age.Encrypt(dst, recipients...)
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if _, err := io.Copy(w, src); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	return nil
}

// Decrypt streams the age file src into dst. A wrong identity is ErrNotRecipient; a ciphertext
// that was altered fails age's authentication (and is an error, never partial plaintext a caller
// should keep: callers write into a temporary file they discard on error).
func Decrypt(dst io.Writer, src io.Reader, id age.Identity) error {
	r, err := age.Decrypt(src, id)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return fmt.Errorf("decrypt: %w", ErrNotRecipient)
		}
		return fmt.Errorf("decrypt: %w", err)
	}
	if _, err := io.Copy(dst, r); err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	return nil
}

// Wrap encrypts a content identity to recipients and returns the age file as base64: the form it
// takes in a manifest's sealed_key and in a desired state's key.
func Wrap(content *age.X25519Identity, recipients ...age.Recipient) (string, error) {
	var buf bytes.Buffer
	if err := Encrypt(&buf, strings.NewReader(content.String()), recipients...); err != nil {
		return "", fmt.Errorf("wrap content key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

// Unwrap opens a key made by Wrap with id. It fails with ErrNotRecipient when id is not one of its
// recipients, and when want is not empty, also when the key is not the identity of that recipient
// (a valid key for another bundle).
func Unwrap(wrapped string, id age.Identity, want string) (*age.X25519Identity, error) {
	if wrapped == "" {
		return nil, fmt.Errorf("no key for this device: %w", ErrNotRecipient)
	}
	if len(wrapped) > maxWrapped {
		return nil, fmt.Errorf("%w: wrapped key of %d bytes", ErrKey, len(wrapped))
	}
	raw, err := base64.StdEncoding.DecodeString(wrapped)
	if err != nil {
		return nil, fmt.Errorf("%w: wrapped key is not base64", ErrKey)
	}
	var buf bytes.Buffer
	if err := Decrypt(&buf, bytes.NewReader(raw), id); err != nil {
		return nil, fmt.Errorf("unwrap content key: %w", err)
	}
	content, err := ParseIdentity(buf.String())
	if err != nil {
		return nil, fmt.Errorf("unwrap content key: %w", err)
	}
	if want != "" && content.Recipient().String() != want {
		return nil, fmt.Errorf("unwrap content key: the key opens %s, the bundle is encrypted to %s: %w", content.Recipient(), want, ErrNotRecipient)
	}
	return content, nil
}
