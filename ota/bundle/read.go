package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
)

// Default limits. The manifest limit allows about 4 GiB of payload at the default block size (each
// block digest costs 67 bytes of manifest); Build refuses a manifest over it, suggesting a larger
// block size.
const (
	DefaultMaxManifestBytes = 4 << 20
	DefaultMaxFiles         = 64
	DefaultMaxFileBytes     = 4 << 30
	DefaultMaxTotalBytes    = 8 << 30

	// A base64 DER ECDSA P-256 signature is about 96 bytes; anything near this is not a signature.
	maxSignatureBytes = 16 << 10
	// entryOverhead is what one tar entry may cost beyond its data: the 512-byte header, padding and
	// a PAX header for a long name. A stream far beyond payload+overhead is a bomb of headers.
	entryOverhead = 16 << 10
)

// Limits bound what a reader accepts. Each is checked on the sizes the tar headers and the manifest
// declare, and again on the bytes actually read, so neither a lying header nor a lying manifest
// makes a reader consume more. A zero field takes its default.
type Limits struct {
	MaxManifestBytes int64
	MaxFiles         int
	MaxFileBytes     int64
	MaxTotalBytes    int64
}

// DefaultLimits returns the limits a zero Limits stands for.
func DefaultLimits() Limits {
	return Limits{}.withDefaults()
}

func (l Limits) withDefaults() Limits {
	if l.MaxManifestBytes <= 0 {
		l.MaxManifestBytes = DefaultMaxManifestBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = DefaultMaxFileBytes
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = DefaultMaxTotalBytes
	}
	return l
}

// Bundle is what a reader learned from a bundle stream.
type Bundle struct {
	ID            string    // hex SHA-256 of ManifestBytes
	Manifest      *Manifest // parsed from ManifestBytes
	ManifestBytes []byte    // exactly as stored and signed
	Signature     []byte    // manifest.sig as stored (base64 text); nil when Inspect found none
	Dir           string    // where ExtractTo wrote the payloads; "" otherwise
}

// Path is where ExtractTo wrote the payload file called name.
func (b *Bundle) Path(name string) string { return filepath.Join(b.Dir, name) }

// ReadManifest reads only the first two entries, manifest.json and manifest.sig, and parses the
// manifest strictly. It does not verify the signature (VerifyManifest does), so its result must not
// be trusted; it serves to forward manifest and signature ahead of the payloads.
func ReadManifest(r io.Reader, limits Limits) (*Bundle, error) {
	s := newStream(context.Background(), r, limits)
	b, err := s.readHead(true)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if b.Manifest, err = ParseManifest(b.ManifestBytes); err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return b, nil
}

// Inspect returns the manifest and id of a bundle WITHOUT verifying anything, for display. A
// missing manifest.sig is tolerated (Signature is nil); the manifest must still parse.
func Inspect(r io.Reader) (*Bundle, error) {
	s := newStream(context.Background(), r, Limits{})
	b, err := s.readHead(false)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	if b.Manifest, err = ParseManifest(b.ManifestBytes); err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	return b, nil
}

// VerifyManifest checks sigText (the content of manifest.sig: a base64 signature) over the exact
// manifestBytes against each verifier until one accepts, and only then parses the manifest, so that
// unsigned bytes never reach the JSON decoder. With no verifiers it refuses (ErrSignature).
func VerifyManifest(ctx context.Context, manifestBytes, sigText []byte, verifiers []Verifier) (*Manifest, error) {
	if len(verifiers) == 0 {
		return nil, fmt.Errorf("verify %s: no trusted keys given: %w", SignatureName, ErrSignature)
	}
	text := bytes.TrimSpace(sigText)
	if len(text) == 0 {
		return nil, fmt.Errorf("verify %s: empty signature: %w", SignatureName, ErrSignature)
	}
	sig := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(sig, text)
	if err != nil {
		return nil, fmt.Errorf("verify %s: not base64: %v: %w", SignatureName, err, ErrSignature)
	}
	sig = sig[:n]
	ok := false
	for _, v := range verifiers {
		if err := v.Verify(ctx, manifestBytes, sig); err == nil {
			ok = true
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("verify %s: %w", SignatureName, err)
		}
	}
	if !ok {
		return nil, fmt.Errorf("verify %s: signature over %s (id %s) matches none of the %d trusted keys: %w", SignatureName, ManifestName, ID(manifestBytes), len(verifiers), ErrSignature)
	}
	m, err := ParseManifest(manifestBytes)
	if err != nil {
		return nil, fmt.Errorf("verify: signed manifest: %w", err)
	}
	return m, nil
}

// Open reads a bundle stream once and verifies it: the signature over the manifest first, before
// any payload byte is read, then each payload's size, SHA-256 and block digests. Payloads are
// discarded; use ExtractTo to keep them.
func Open(ctx context.Context, r io.Reader, verifiers []Verifier, limits Limits) (*Bundle, error) {
	b, err := read(ctx, r, verifiers, limits, nil)
	if err != nil {
		return nil, fmt.Errorf("open bundle: %w", err)
	}
	return b, nil
}

// ExtractTo verifies a bundle stream as Open does and writes its payloads into dir (created if
// absent) under their flat names. Nothing is written outside dir: names are checked, and writes go
// through an os.Root. Each payload goes to a temporary file that is fsynced; only when every entry
// has been verified are they renamed into place and the folder fsynced. On any error the temporary
// files (and dir, if this call created it) are removed. A file of the same name in dir is replaced;
// callers that need a clean slot hand an empty folder.
func ExtractTo(ctx context.Context, r io.Reader, dir string, verifiers []Verifier, limits Limits) (b *Bundle, err error) {
	x, err := newExtractor(dir)
	if err != nil {
		return nil, fmt.Errorf("extract bundle to %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			x.abort()
		}
	}()
	b, err = read(ctx, r, verifiers, limits, x)
	if err != nil {
		return nil, fmt.Errorf("extract bundle to %s: %w", dir, err)
	}
	if err := x.commit(); err != nil {
		return nil, fmt.Errorf("extract bundle to %s: %w", dir, err)
	}
	b.Dir = dir
	return b, nil
}

func read(ctx context.Context, r io.Reader, verifiers []Verifier, limits Limits, x *extractor) (*Bundle, error) {
	s := newStream(ctx, r, limits)
	b, err := s.readHead(true)
	if err != nil {
		return nil, err
	}
	m, err := VerifyManifest(ctx, b.ManifestBytes, b.Signature, verifiers)
	if err != nil {
		return nil, err
	}
	b.Manifest = m
	if err := s.checkManifest(m); err != nil {
		return nil, err
	}
	if err := s.readPayloads(m, x); err != nil {
		return nil, err
	}
	return b, nil
}

// stream wraps the tar reader with the limits and the error mapping.
type stream struct {
	ctx    context.Context
	limits Limits
	cr     *countingReader
	tr     *tar.Reader
	buf    []byte
}

func newStream(ctx context.Context, r io.Reader, limits Limits) *stream {
	l := limits.withDefaults()
	// Until the manifest says how much to expect, the stream may hold at most everything the limits
	// allow.
	budget := l.MaxManifestBytes + maxSignatureBytes + l.MaxTotalBytes + int64(l.MaxFiles+3)*entryOverhead
	cr := &countingReader{r: r, limit: budget}
	return &stream{ctx: ctx, limits: l, cr: cr, tr: tar.NewReader(cr)}
}

// next returns the next entry header, refusing anything but a regular file with a safe name.
func (s *stream) next() (*tar.Header, error) {
	if err := s.ctx.Err(); err != nil {
		return nil, err
	}
	hdr, err := s.tr.Next()
	if err != nil {
		return nil, s.mapErr("read tar header", err)
	}
	switch hdr.Typeflag {
	case tar.TypeReg: // archive/tar already maps the old TypeRegA to TypeReg
	default:
		return nil, fmt.Errorf("entry %q: %s entry; only regular files are allowed: %w", hdr.Name, typeName(hdr.Typeflag), ErrEntryType)
	}
	if err := CheckName(hdr.Name); err != nil {
		return nil, fmt.Errorf("entry: %w", err)
	}
	if hdr.Size < 0 {
		return nil, fmt.Errorf("entry %q: negative size: %w", hdr.Name, ErrFormat)
	}
	return hdr, nil
}

func (s *stream) mapErr(doing string, err error) error {
	switch {
	case errors.Is(err, ErrTooLarge), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", doing, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s: stream ended early after %d bytes: %w", doing, s.cr.n, ErrTruncated)
	case errors.Is(err, io.EOF):
		return err // end of archive; callers decide
	case errors.Is(err, tar.ErrHeader), errors.Is(err, tar.ErrInsecurePath):
		return fmt.Errorf("%s at byte %d: %v: %w", doing, s.cr.n, err, ErrFormat)
	default:
		// Other errors come from the underlying reader (a network or disk error): kept as they are so
		// that a caller can tell them from a bad bundle and retry.
		return fmt.Errorf("%s: %w", doing, err)
	}
}

// readAll reads the current entry's data, at most max bytes, and checks it matched the header.
func (s *stream) readAll(hdr *tar.Header, max int64) ([]byte, error) {
	if hdr.Size > max {
		return nil, fmt.Errorf("entry %q: declares %d bytes, limit %d: %w", hdr.Name, hdr.Size, max, ErrTooLarge)
	}
	data, err := io.ReadAll(io.LimitReader(s.tr, hdr.Size))
	if err != nil {
		return nil, s.mapErr(fmt.Sprintf("read %q", hdr.Name), err)
	}
	if int64(len(data)) != hdr.Size {
		return nil, fmt.Errorf("read %q: %d of %d bytes: %w", hdr.Name, len(data), hdr.Size, ErrTruncated)
	}
	return data, nil
}

// readHead reads manifest.json and manifest.sig, which must be the first two entries.
func (s *stream) readHead(needSig bool) (*Bundle, error) {
	hdr, err := s.next()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("no entries: empty stream or not a tar: %w", ErrFormat)
	}
	if err != nil {
		return nil, err
	}
	if hdr.Name != ManifestName {
		return nil, fmt.Errorf("first entry is %q, want %s: %w", hdr.Name, ManifestName, ErrFormat)
	}
	mb, err := s.readAll(hdr, s.limits.MaxManifestBytes)
	if err != nil {
		return nil, err
	}
	b := &Bundle{ID: ID(mb), ManifestBytes: mb}

	hdr, err = s.next()
	switch {
	case errors.Is(err, io.EOF):
		if needSig {
			return nil, fmt.Errorf("no %s after %s: unsigned bundle: %w", SignatureName, ManifestName, ErrSignature)
		}
		return b, nil
	case err != nil:
		return nil, err
	case hdr.Name == ManifestName:
		return nil, fmt.Errorf("second entry is %s again: %w", ManifestName, ErrDuplicate)
	case hdr.Name != SignatureName:
		if needSig {
			return nil, fmt.Errorf("second entry is %q, want %s: unsigned bundle: %w", hdr.Name, SignatureName, ErrSignature)
		}
		return b, nil // Inspect: stop before payloads in either case
	}
	if b.Signature, err = s.readAll(hdr, maxSignatureBytes); err != nil {
		return nil, err
	}
	return b, nil
}

// checkManifest refuses a manifest that declares more than the limits allow, before any payload is
// read, and narrows the stream budget to what this manifest accounts for.
func (s *stream) checkManifest(m *Manifest) error {
	l := s.limits
	if len(m.Files) > l.MaxFiles {
		return fmt.Errorf("manifest lists %d files, limit %d: %w", len(m.Files), l.MaxFiles, ErrTooLarge)
	}
	var total int64
	for _, f := range m.Files {
		if f.Size > l.MaxFileBytes {
			return fmt.Errorf("manifest declares %q of %d bytes, limit %d: %w", f.Path, f.Size, l.MaxFileBytes, ErrTooLarge)
		}
		total += f.Size
		if total > l.MaxTotalBytes {
			return fmt.Errorf("manifest declares at least %d bytes of payload, limit %d: %w", total, l.MaxTotalBytes, ErrTooLarge)
		}
	}
	budget := s.cr.n + total + int64(len(m.Files)+2)*entryOverhead
	s.cr.limit = min(s.cr.limit, budget)
	return nil
}

func (s *stream) readPayloads(m *Manifest, x *extractor) error {
	seen := make(map[string]bool, len(m.Files))
	var total int64
	for {
		hdr, err := s.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		name := hdr.Name
		switch {
		case name == ManifestName || name == SignatureName:
			return fmt.Errorf("entry %q appears again after the head: %w", name, ErrDuplicate)
		case seen[name]:
			return fmt.Errorf("entry %q appears twice: %w", name, ErrDuplicate)
		}
		e := m.File(name)
		if e == nil {
			return fmt.Errorf("entry %q is not listed in the manifest: %w", name, ErrUnlisted)
		}
		seen[name] = true
		if hdr.Size > s.limits.MaxFileBytes {
			return fmt.Errorf("entry %q declares %d bytes, limit %d: %w", name, hdr.Size, s.limits.MaxFileBytes, ErrTooLarge)
		}
		if total += hdr.Size; total > s.limits.MaxTotalBytes {
			return fmt.Errorf("entries declare more than %d bytes, limit %d: %w", total, s.limits.MaxTotalBytes, ErrTooLarge)
		}
		if hdr.Size != e.Size {
			return fmt.Errorf("entry %q: tar says %d bytes, manifest says %d: %w", name, hdr.Size, e.Size, ErrSize)
		}
		if err := s.readPayload(m, e, x); err != nil {
			return err
		}
	}
	var missing []string
	for _, f := range m.Files {
		if !seen[f.Path] {
			missing = append(missing, f.Path)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("listed in the manifest but absent: %s: %w", strings.Join(missing, ", "), ErrMissing)
	}
	return nil
}

func (s *stream) readPayload(m *Manifest, e *FileEntry, x *extractor) error {
	d := newDigester(e.Path, m.BlockSize, e.Blocks, e.Size)
	defer d.close()
	var w io.Writer = d
	if x != nil {
		f, err := x.begin(e.Path)
		if err != nil {
			return err
		}
		w = io.MultiWriter(d, f)
	}
	if s.buf == nil {
		s.buf = make([]byte, 256<<10)
	}
	n, err := io.CopyBuffer(w, &ctxReader{ctx: s.ctx, r: io.LimitReader(s.tr, e.Size)}, s.buf)
	if err != nil {
		if errors.Is(err, ErrDigest) || errors.Is(err, ErrSize) {
			return err
		}
		return s.mapErr(fmt.Sprintf("read %q", e.Path), err)
	}
	if n != e.Size {
		return fmt.Errorf("read %q: %d of %d bytes: %w", e.Path, n, e.Size, ErrTruncated)
	}
	sum, err := d.finish()
	if err != nil {
		return err
	}
	if sum != e.SHA256 {
		return fmt.Errorf("file %q: sha256 %s, manifest says %s: %w", e.Path, sum, e.SHA256, ErrDigest)
	}
	if x != nil {
		if err := x.end(); err != nil {
			return err
		}
	}
	return nil
}

// countingReader counts the bytes of the raw stream and refuses to read past limit, which catches
// what no single declared size shows (huge PAX headers, endless tiny entries).
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= c.limit {
		return 0, fmt.Errorf("stream exceeds %d bytes, more than its manifest and limits account for: %w", c.limit, ErrTooLarge)
	}
	if int64(len(p)) > c.limit-c.n {
		p = p[:c.limit-c.n]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func typeName(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeDir:
		return "folder"
	case tar.TypeFifo:
		return "fifo"
	case tar.TypeXGlobalHeader:
		return "PAX global header"
	case tar.TypeGNUSparse:
		return "sparse file"
	default:
		return fmt.Sprintf("type %q", t)
	}
}
