package dataset

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"

	"github.com/edgefleet/edgefleet/internal/atomicfile"
)

// LoadOrCreateIdentity reads an age X25519 identity from path, generating it (0600) on first use.
func LoadOrCreateIdentity(path string) (*age.X25519Identity, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return nil, fmt.Errorf("generate age identity: %w", err)
		}
		if err := atomicfile.WriteFile(path, []byte(id.String()+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("write age identity %s: %w", path, err)
		}
		return id, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read age identity: %w", err)
	}
	id, err := age.ParseX25519Identity(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("age identity %s is not an X25519 identity (AGE-SECRET-KEY-1...): %w", path, err)
	}
	return id, nil
}

// ParseRecipient parses an age X25519 public key (age1...).
func ParseRecipient(s string) (*age.X25519Recipient, error) {
	r, err := age.ParseX25519Recipient(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("age recipient %q: %w", s, err)
	}
	return r, nil
}

// Encrypt returns a writer whose bytes reach w encrypted to every recipient; Close finishes it.
func Encrypt(w io.Writer, to ...age.Recipient) (io.WriteCloser, error) {
	return age.Encrypt(w, to...)
}

// Decrypt returns the plaintext of an age stream for id.
func Decrypt(r io.Reader, id age.Identity) (io.Reader, error) {
	return age.Decrypt(r, id)
}
