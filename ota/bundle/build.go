package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Signer signs the exact manifest bytes. It returns the raw signature (ASN.1 DER for ECDSA, 64
// bytes for Ed25519), as sigstore's signature.Signer does; the bundle stores it base64-encoded in
// manifest.sig, which is what `cosign verify-blob --signature` reads.
type Signer interface {
	Sign(ctx context.Context, msg []byte) ([]byte, error)
}

// Verifier checks a raw signature (decoded from manifest.sig) over msg, returning nil only when it
// holds.
type Verifier interface {
	Verify(ctx context.Context, msg, sig []byte) error
}

// File is one payload to put in a bundle. Give its content as Bytes, or as Open, which Build calls
// twice (once to hash, once to write: the manifest, holding the digests, precedes the payloads in
// the tar), so that a model of any size never has to sit in memory.
type File struct {
	Path  string
	Role  Role
	Bytes []byte
	Open  func() (io.ReadCloser, error)
}

// FileFromPath is a File read from disk on demand.
func FileFromPath(name string, role Role, path string) File {
	return File{Path: name, Role: role, Open: func() (io.ReadCloser, error) { return os.Open(path) }}
}

func (f File) open() (io.ReadCloser, error) {
	switch {
	case f.Open != nil:
		return f.Open()
	default:
		return io.NopCloser(bytes.NewReader(f.Bytes)), nil
	}
}

// BuildInput is everything a manifest holds except what Build computes (format_version, sizes and
// digests). A zero CreatedAt means now; a zero BlockSize means DefaultBlockSize.
type BuildInput struct {
	Kind            Kind
	Name            string
	Version         string
	Variant         string
	Parent          string
	CreatedAt       time.Time
	BlockSize       int64
	Schema          *Schema
	ONNX            *ONNXInfo
	Requirements    Requirements
	Provenance      Provenance
	Quantization    *Quantization
	EmbeddingOutput string
	// Encryption is set when Files are already encrypted (see ota/seal): the manifest then lists
	// the ciphertext and says how to get the key.
	Encryption *Encryption
	Files      []File
}

// Build hashes the files, writes the canonical manifest, signs it and writes the bundle tar to w:
// manifest.json, manifest.sig, then the payloads in the order given. It returns the bundle id and
// the exact manifest bytes.
func Build(ctx context.Context, in BuildInput, signer Signer, w io.Writer) (id string, manifestBytes []byte, err error) {
	if signer == nil {
		return "", nil, fmt.Errorf("build bundle: no signer: %w", ErrSignature)
	}
	m := &Manifest{
		FormatVersion:   FormatVersion,
		Kind:            in.Kind,
		Name:            in.Name,
		Version:         in.Version,
		Variant:         in.Variant,
		Parent:          in.Parent,
		CreatedAt:       in.CreatedAt.UTC().Truncate(time.Second),
		BlockSize:       in.BlockSize,
		Schema:          in.Schema,
		ONNX:            in.ONNX,
		Requirements:    in.Requirements,
		Provenance:      in.Provenance,
		Quantization:    in.Quantization,
		EmbeddingOutput: in.EmbeddingOutput,
		Encryption:      in.Encryption,
	}
	if in.CreatedAt.IsZero() {
		m.CreatedAt = time.Now().UTC().Truncate(time.Second)
	}
	if m.BlockSize == 0 {
		m.BlockSize = DefaultBlockSize
	}
	if m.BlockSize < MinBlockSize || m.BlockSize > MaxBlockSize {
		return "", nil, fmt.Errorf("build bundle: block size %d: want %d to %d: %w", m.BlockSize, MinBlockSize, MaxBlockSize, ErrFormat)
	}
	for _, f := range in.Files {
		if err := CheckName(f.Path); err != nil {
			return "", nil, fmt.Errorf("build bundle: %w", err)
		}
		e, err := hashFile(ctx, f, m.BlockSize)
		if err != nil {
			return "", nil, fmt.Errorf("build bundle: %w", err)
		}
		m.Files = append(m.Files, e)
	}
	if err := m.Validate(); err != nil {
		return "", nil, fmt.Errorf("build bundle: %w", err)
	}
	mb, err := m.Marshal()
	if err != nil {
		return "", nil, fmt.Errorf("build bundle: %w", err)
	}
	if int64(len(mb)) > DefaultMaxManifestBytes {
		return "", nil, fmt.Errorf("build bundle: manifest is %d bytes, over the %d readers accept by default; raise the block size (now %d): %w", len(mb), DefaultMaxManifestBytes, m.BlockSize, ErrTooLarge)
	}
	// Parsing our own output proves that readers will accept it before anything is signed.
	if _, err := ParseManifest(mb); err != nil {
		return "", nil, fmt.Errorf("build bundle: own manifest does not parse back: %w", err)
	}
	sig, err := signer.Sign(ctx, mb)
	if err != nil {
		return "", nil, fmt.Errorf("build bundle: sign manifest: %w", err)
	}
	if len(sig) == 0 {
		return "", nil, fmt.Errorf("build bundle: signer returned an empty signature: %w", ErrSignature)
	}
	sigText := []byte(base64.StdEncoding.EncodeToString(sig))

	tw := tar.NewWriter(w)
	if err := writeEntry(tw, ManifestName, m.CreatedAt, bytes.NewReader(mb), int64(len(mb))); err != nil {
		return "", nil, fmt.Errorf("build bundle: %w", err)
	}
	if err := writeEntry(tw, SignatureName, m.CreatedAt, bytes.NewReader(sigText), int64(len(sigText))); err != nil {
		return "", nil, fmt.Errorf("build bundle: %w", err)
	}
	for i, f := range in.Files {
		if err := writePayload(ctx, tw, f, m.Files[i], m); err != nil {
			return "", nil, fmt.Errorf("build bundle: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return "", nil, fmt.Errorf("build bundle: finish tar: %w", err)
	}
	return ID(mb), mb, nil
}

func hashFile(ctx context.Context, f File, blockSize int64) (FileEntry, error) {
	rc, err := f.open()
	if err != nil {
		return FileEntry{}, fmt.Errorf("open %q: %w", f.Path, err)
	}
	defer rc.Close()
	// The size is not known before reading; assume large so that big models hash in parallel.
	d := newDigester(f.Path, blockSize, nil, parallelMin)
	defer d.close()
	if _, err := copyCtx(ctx, d, rc); err != nil {
		return FileEntry{}, fmt.Errorf("hash %q: %w", f.Path, err)
	}
	sum, err := d.finish()
	if err != nil {
		return FileEntry{}, fmt.Errorf("hash %q: %w", f.Path, err)
	}
	blocks := d.blocks
	if blocks == nil {
		blocks = []string{} // "blocks": [] rather than null for an empty file
	}
	return FileEntry{Path: f.Path, Role: f.Role, Size: d.n, SHA256: sum, Blocks: blocks}, nil
}

func writePayload(ctx context.Context, tw *tar.Writer, f File, e FileEntry, m *Manifest) error {
	rc, err := f.open()
	if err != nil {
		return fmt.Errorf("open %q: %w", f.Path, err)
	}
	defer rc.Close()
	// Hash again while writing: a file that changed between the two passes would otherwise yield a
	// bundle whose signed manifest does not match its payload.
	d := newDigester(e.Path, m.BlockSize, e.Blocks, e.Size)
	defer d.close()
	r := io.TeeReader(io.LimitReader(rc, e.Size+1), d)
	if err := writeEntry(tw, e.Path, m.CreatedAt, &ctxReader{ctx: ctx, r: r}, e.Size); err != nil {
		if errors.Is(err, tar.ErrWriteTooLong) || errors.Is(err, ErrDigest) {
			return fmt.Errorf("%q changed while building: %w", e.Path, err)
		}
		return err
	}
	sum, err := d.finish()
	if err == nil && (sum != e.SHA256 || d.n != e.Size) {
		err = fmt.Errorf("sha256 %s, first pass said %s: %w", sum, e.SHA256, ErrDigest)
	}
	if err != nil {
		return fmt.Errorf("%q changed while building: %w", e.Path, err)
	}
	return nil
}

func writeEntry(tw *tar.Writer, name string, mtime time.Time, r io.Reader, size int64) error {
	// Fixed owner, mode and time: the tar carries no facts about the build machine.
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  mtime,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %q header: %w", name, err)
	}
	n, err := io.Copy(tw, r)
	if err != nil {
		return fmt.Errorf("write %q: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("write %q: %d bytes, expected %d (changed while building?): %w", name, n, size, ErrSize)
	}
	return nil
}

// ctxReader makes a long copy stop when its context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func copyCtx(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	return io.Copy(w, &ctxReader{ctx: ctx, r: r})
}
