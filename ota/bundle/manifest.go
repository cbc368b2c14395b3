package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// FormatVersion is the only manifest format this package writes and reads.
const FormatVersion = 1

// Names of the first two tar entries.
const (
	ManifestName  = "manifest.json"
	SignatureName = "manifest.sig"
)

// Block sizes. 64 KiB keeps a resumed transfer cheap on a flaky link while the digest list stays
// small: a 1 GiB model has 16384 blocks, about 1.1 MB of manifest.
const (
	DefaultBlockSize = 64 << 10
	MinBlockSize     = 4 << 10
	MaxBlockSize     = 1 << 20
)

// Kind says what a bundle carries.
type Kind string

const (
	KindModel   Kind = "model"   // an ONNX model with its pre/post graphs, reference and golden data
	KindRuntime Kind = "runtime" // a new agent binary or ONNX Runtime library
)

// RuntimeName is the name runtime bundles are built and assigned under: the desired state keys
// bundles by name, so the agent (and rollouts, gates, group rollback) find its own update there
// like any model's. Model bundles may not use it.
const RuntimeName = "edgefleet-agent"

// Payload names of a runtime bundle: the agent binary and the optional ONNX Runtime library.
const (
	RuntimeAgentFile  = "agent"
	RuntimeORTLibFile = "libonnxruntime.so"
)

// Role says what a payload file is for; the agent finds files by role, not by name.
type Role string

const (
	RoleModel     Role = "model"
	RolePre       Role = "pre"
	RolePost      Role = "post"
	RoleReference Role = "reference"
	RoleGolden    Role = "golden"
	RoleLabels    Role = "labels"
	RoleRuntime   Role = "runtime"
)

// Manifest describes a bundle. Its exact serialized bytes are what is signed and hashed into the
// bundle id, so it is written once by Build and never re-encoded by readers.
//
// Forward compatibility: ParseManifest rejects unknown fields, so a manifest that was tampered with
// or written by a newer builder is noticed instead of half-understood (an agent silently ignoring a
// new "requirements" field could run a model on hardware it was never meant for). The rules that
// follow from that:
//   - a change that old readers may ignore is still a new field, so it ships in a reader (agent)
//     release first and builders emit it only once the fleet runs that release (min_agent_version
//     states that on the manifest itself);
//   - a change that old readers must not ignore bumps format_version, and readers refuse versions
//     newer than theirs with an error that says to upgrade;
//   - free-form facts go in provenance.extra or quantization.extra, which are open maps.
type Manifest struct {
	FormatVersion   int           `json:"format_version"`
	Kind            Kind          `json:"kind"`
	Name            string        `json:"name"`
	Version         string        `json:"version"`
	Variant         string        `json:"variant,omitempty"`
	Parent          string        `json:"parent,omitempty"`
	CreatedAt       time.Time     `json:"created_at"`
	BlockSize       int64         `json:"block_size"`
	Files           []FileEntry   `json:"files"`
	Schema          *Schema       `json:"schema,omitempty"`
	ONNX            *ONNXInfo     `json:"onnx,omitempty"`
	Requirements    Requirements  `json:"requirements"`
	Provenance      Provenance    `json:"provenance"`
	Quantization    *Quantization `json:"quantization,omitempty"`
	EmbeddingOutput string        `json:"embedding_output,omitempty"`
	// Encryption, when present, says that every payload file is encrypted (sizes and digests
	// above are of the ciphertext) and how to get the key. Readers that predate it refuse the
	// unknown field, which is what they must do: they could not install such a bundle.
	Encryption *Encryption `json:"encryption,omitempty"`
}

// EncryptionAgeX25519 is the only encryption scheme: each payload file is an age file
// (filippo.io/age, X25519 recipient) encrypted to one content key made for this bundle.
const EncryptionAgeX25519 = "age-x25519"

// Encryption describes an encrypted bundle. The content identity (the private half of
// ContentRecipient) travels sealed: SealedKey is an age file, base64, that only the control
// plane's identity opens; the control plane re-wraps it for each device it assigns the bundle to.
// Everything here is public: a device that holds the manifest learns nothing it can decrypt with.
type Encryption struct {
	Scheme           string `json:"scheme"`
	ContentRecipient string `json:"content_recipient"`
	SealedKey        string `json:"sealed_key"`
}

// maxSealedKey bounds the sealed key: an age header per recipient (about 200 bytes) and the
// identity; a few control-plane recipients fit many times over.
const maxSealedKey = 16 << 10

var ageRecipientRE = regexp.MustCompile(`^age1[02-9ac-hj-np-z]{58}$`)

func (e *Encryption) validate() error {
	if e.Scheme != EncryptionAgeX25519 {
		return fmt.Errorf("encryption.scheme %q: this reader understands %q: %w", e.Scheme, EncryptionAgeX25519, ErrFormat)
	}
	if !ageRecipientRE.MatchString(e.ContentRecipient) {
		return fmt.Errorf("encryption.content_recipient %q is not an age X25519 recipient (age1...): %w", e.ContentRecipient, ErrFormat)
	}
	if e.SealedKey == "" || len(e.SealedKey) > maxSealedKey {
		return fmt.Errorf("encryption.sealed_key: want 1 to %d characters of base64: %w", maxSealedKey, ErrFormat)
	}
	if _, err := base64.StdEncoding.DecodeString(e.SealedKey); err != nil {
		return fmt.Errorf("encryption.sealed_key is not base64: %w", ErrFormat)
	}
	return nil
}

// FileEntry is one payload file: its flat name in the tar, its role, size, SHA-256 and the SHA-256
// of each block of BlockSize bytes (the last one may be shorter; an empty file has no blocks).
type FileEntry struct {
	Path   string   `json:"path"`
	Role   Role     `json:"role"`
	Size   int64    `json:"size"`
	SHA256 string   `json:"sha256"`
	Blocks []string `json:"blocks"`
}

// Schema is the model's input/output signature as read from the ONNX graph.
type Schema struct {
	Inputs  []Tensor `json:"inputs"`
	Outputs []Tensor `json:"outputs"`
}

// Tensor describes one model input or output. Datatype uses the Open Inference Protocol names
// (FP32, INT64, ...) so the agent's inference API and the manifest agree; -1 in Shape is a dynamic
// dimension, whose symbolic name (if any) is in DimNames at the same index.
type Tensor struct {
	Name     string   `json:"name"`
	Datatype string   `json:"datatype"`
	Shape    []int64  `json:"shape"`
	DimNames []string `json:"dim_names,omitempty"`
}

// ONNXInfo holds facts read from the model's ModelProto.
type ONNXInfo struct {
	Opset     int64 `json:"opset"`
	IRVersion int64 `json:"ir_version"`
}

// Requirements are what a device must offer to run the bundle; the agent checks them before
// unpacking.
type Requirements struct {
	Arch               []string `json:"arch,omitempty"`
	ExecutionProviders []string `json:"execution_providers,omitempty"`
	MinORTVersion      string   `json:"min_ort_version,omitempty"`
	MinOpset           int64    `json:"min_opset,omitempty"`
	MinAgentVersion    string   `json:"min_agent_version,omitempty"`
	PeakMemoryBytes    int64    `json:"peak_memory_bytes,omitempty"`
}

// Provenance records where the model came from; Extra holds free-form key=value facts.
type Provenance struct {
	CodeRevision string            `json:"code_revision,omitempty"`
	DatasetIDs   []string          `json:"dataset_ids,omitempty"`
	ParamsDigest string            `json:"params_digest,omitempty"`
	Extra        map[string]string `json:"extra,omitempty"`
}

// Quantization records how a quantized variant was derived from its parent. The quantization
// issue owns the meaning of these fields; it adds fields here (see the forward-compatibility note on
// Manifest) or puts facts in Extra.
type Quantization struct {
	Method     string            `json:"method"`
	SizeBefore int64             `json:"size_before,omitempty"`
	SizeAfter  int64             `json:"size_after,omitempty"`
	Agreement  float64           `json:"agreement,omitempty"` // fraction of golden inputs on which the variant agrees with its parent
	Extra      map[string]string `json:"extra,omitempty"`
}

// Datatypes are the Open Inference Protocol tensor datatypes (plus BF16, as Triton has it).
var Datatypes = []string{"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16", "FP32", "FP64", "BYTES"}

var (
	// semverRE is the expression semver.org publishes, without a "v" prefix.
	semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
	// nameRE bounds model names and variants: they appear in MQTT payloads, URLs and folder names.
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	// fileNameRE is the allowed set for payload names, checked after the specific unsafe cases so
	// that those get their own message.
	fileNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$`)
	hexRE      = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidSemver reports whether s is a semantic version (semver.org 2.0.0, no "v" prefix).
func ValidSemver(s string) bool { return len(s) <= 128 && semverRE.MatchString(s) }

// ParseRef splits "name@version" and validates both halves.
func ParseRef(ref string) (name, version string, err error) {
	name, version, ok := strings.Cut(ref, "@")
	if !ok {
		return "", "", fmt.Errorf("parse %q: want name@version: %w", ref, ErrFormat)
	}
	if !nameRE.MatchString(name) {
		return "", "", fmt.Errorf("parse %q: name %q must match %s: %w", ref, name, nameRE, ErrFormat)
	}
	if !ValidSemver(version) {
		return "", "", fmt.Errorf("parse %q: version %q is not a semantic version (e.g. 1.2.0): %w", ref, version, ErrFormat)
	}
	return name, version, nil
}

// CheckName reports whether name is acceptable as a flat payload file name, and why not. The
// specific cases come first so that the error says what was wrong.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name: %w", ErrUnsafePath)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("name %q holds a NUL byte: %w", name, ErrUnsafePath)
	case !utf8.ValidString(name):
		return fmt.Errorf("name %q is not valid UTF-8: %w", name, ErrUnsafePath)
	case strings.HasPrefix(name, "/") || (len(name) >= 2 && name[1] == ':'):
		return fmt.Errorf("name %q is absolute: %w", name, ErrUnsafePath)
	case strings.Contains(name, "\\"):
		return fmt.Errorf("name %q holds a backslash: %w", name, ErrUnsafePath)
	case name == "." || name == ".." || strings.HasPrefix(name, "../") || strings.HasSuffix(name, "/..") || strings.Contains(name, "/../"):
		return fmt.Errorf("name %q climbs out with \"..\": %w", name, ErrUnsafePath)
	case strings.Contains(name, "/"):
		return fmt.Errorf("name %q is not flat (payload names hold no folders): %w", name, ErrUnsafePath)
	case !fileNameRE.MatchString(name):
		return fmt.Errorf("name %q must match %s: %w", name, fileNameRE, ErrUnsafePath)
	}
	return nil
}

// NumBlocks is the number of blocks of a file of the given size.
func NumBlocks(size, blockSize int64) int64 {
	if size <= 0 || blockSize <= 0 {
		return 0
	}
	return (size + blockSize - 1) / blockSize
}

// File returns the entry for path, or nil.
func (m *Manifest) File(path string) *FileEntry {
	for i := range m.Files {
		if m.Files[i].Path == path {
			return &m.Files[i]
		}
	}
	return nil
}

// FileByRole returns the first entry with the given role, or nil.
func (m *Manifest) FileByRole(role Role) *FileEntry {
	for i := range m.Files {
		if m.Files[i].Role == role {
			return &m.Files[i]
		}
	}
	return nil
}

// TotalSize is the sum of the payload sizes.
func (m *Manifest) TotalSize() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Ref is "name@version".
func (m *Manifest) Ref() string { return m.Name + "@" + m.Version }

// Validate checks every field of the manifest; the error wraps ErrFormat, ErrUnsafePath or
// ErrDuplicate and names the field.
func (m *Manifest) Validate() error {
	if m.FormatVersion != FormatVersion {
		return fmt.Errorf("format_version %d: this reader understands %d: %w", m.FormatVersion, FormatVersion, ErrFormat)
	}
	if m.Kind != KindModel && m.Kind != KindRuntime {
		return fmt.Errorf("kind %q: want %q or %q: %w", m.Kind, KindModel, KindRuntime, ErrFormat)
	}
	if !nameRE.MatchString(m.Name) {
		return fmt.Errorf("name %q must match %s: %w", m.Name, nameRE, ErrFormat)
	}
	if !ValidSemver(m.Version) {
		return fmt.Errorf("version %q is not a semantic version (e.g. 1.2.0): %w", m.Version, ErrFormat)
	}
	if m.Variant != "" && !nameRE.MatchString(m.Variant) {
		return fmt.Errorf("variant %q must match %s: %w", m.Variant, nameRE, ErrFormat)
	}
	if m.Parent != "" {
		if _, _, err := ParseRef(m.Parent); err != nil {
			return fmt.Errorf("parent: %w", err)
		}
	}
	if m.CreatedAt.IsZero() {
		return fmt.Errorf("created_at missing: %w", ErrFormat)
	}
	if m.BlockSize < MinBlockSize || m.BlockSize > MaxBlockSize {
		return fmt.Errorf("block_size %d: want %d to %d: %w", m.BlockSize, MinBlockSize, MaxBlockSize, ErrFormat)
	}
	if err := m.validateFiles(); err != nil {
		return err
	}
	if m.Schema != nil {
		if err := m.Schema.validate(); err != nil {
			return err
		}
	}
	if m.EmbeddingOutput != "" {
		if m.Schema == nil || !hasTensor(m.Schema.Outputs, m.EmbeddingOutput) {
			return fmt.Errorf("embedding_output %q is not an output of the schema: %w", m.EmbeddingOutput, ErrFormat)
		}
	}
	if m.ONNX != nil && (m.ONNX.Opset < 0 || m.ONNX.IRVersion < 0) {
		return fmt.Errorf("onnx: negative opset or ir_version: %w", ErrFormat)
	}
	r := m.Requirements
	if r.MinORTVersion != "" && !ValidSemver(r.MinORTVersion) {
		return fmt.Errorf("requirements.min_ort_version %q is not a semantic version: %w", r.MinORTVersion, ErrFormat)
	}
	if r.MinAgentVersion != "" && !ValidSemver(r.MinAgentVersion) {
		return fmt.Errorf("requirements.min_agent_version %q is not a semantic version: %w", r.MinAgentVersion, ErrFormat)
	}
	if r.MinOpset < 0 || r.PeakMemoryBytes < 0 {
		return fmt.Errorf("requirements: negative min_opset or peak_memory_bytes: %w", ErrFormat)
	}
	if m.Encryption != nil {
		if err := m.Encryption.validate(); err != nil {
			return err
		}
	}
	if q := m.Quantization; q != nil && (q.Method == "" || q.SizeBefore < 0 || q.SizeAfter < 0 || q.Agreement < 0 || q.Agreement > 1) {
		return fmt.Errorf("quantization: method required, sizes >= 0, agreement in [0,1]: %w", ErrFormat)
	}
	return nil
}

func (m *Manifest) validateFiles() error {
	if len(m.Files) == 0 {
		return fmt.Errorf("files: none listed: %w", ErrFormat)
	}
	seen := make(map[string]string, len(m.Files))
	roles := make(map[Role]int)
	for i, f := range m.Files {
		if err := CheckName(f.Path); err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
		if f.Path == ManifestName || f.Path == SignatureName {
			return fmt.Errorf("files[%d]: name %q is reserved: %w", i, f.Path, ErrDuplicate)
		}
		// Case-folded, because two names differing only in case collide on the case-insensitive
		// file systems of developer machines.
		key := strings.ToLower(f.Path)
		if prev, ok := seen[key]; ok {
			return fmt.Errorf("files[%d]: %q listed twice (as %q before): %w", i, f.Path, prev, ErrDuplicate)
		}
		seen[key] = f.Path
		switch f.Role {
		case RoleModel, RolePre, RolePost, RoleReference, RoleGolden, RoleLabels, RoleRuntime:
		default:
			return fmt.Errorf("files[%d] %q: role %q unknown: %w", i, f.Path, f.Role, ErrFormat)
		}
		roles[f.Role]++
		if f.Size < 0 {
			return fmt.Errorf("files[%d] %q: negative size %d: %w", i, f.Path, f.Size, ErrFormat)
		}
		if !hexRE.MatchString(f.SHA256) {
			return fmt.Errorf("files[%d] %q: sha256 %q is not 64 lowercase hex digits: %w", i, f.Path, f.SHA256, ErrFormat)
		}
		if want := NumBlocks(f.Size, m.BlockSize); int64(len(f.Blocks)) != want {
			return fmt.Errorf("files[%d] %q: %d block digests, want %d for size %d and block_size %d: %w", i, f.Path, len(f.Blocks), want, f.Size, m.BlockSize, ErrFormat)
		}
		for j, b := range f.Blocks {
			if !hexRE.MatchString(b) {
				return fmt.Errorf("files[%d] %q: blocks[%d] %q is not 64 lowercase hex digits: %w", i, f.Path, j, b, ErrFormat)
			}
		}
	}
	for _, r := range []Role{RoleModel, RolePre, RolePost} {
		if roles[r] > 1 {
			return fmt.Errorf("files: %d files with role %q, at most one allowed: %w", roles[r], r, ErrDuplicate)
		}
	}
	switch m.Kind {
	case KindModel:
		if roles[RoleModel] != 1 {
			return fmt.Errorf("files: kind model needs one file with role model: %w", ErrFormat)
		}
		if roles[RoleRuntime] != 0 {
			return fmt.Errorf("files: kind model carries no role runtime: %w", ErrFormat)
		}
	case KindRuntime:
		if roles[RoleRuntime] == 0 {
			return fmt.Errorf("files: kind runtime needs at least one file with role runtime: %w", ErrFormat)
		}
	}
	return nil
}

func (s *Schema) validate() error {
	for _, part := range []struct {
		what string
		ts   []Tensor
	}{{"inputs", s.Inputs}, {"outputs", s.Outputs}} {
		names := make(map[string]bool, len(part.ts))
		for i, t := range part.ts {
			if t.Name == "" {
				return fmt.Errorf("schema.%s[%d]: empty name: %w", part.what, i, ErrFormat)
			}
			if names[t.Name] {
				return fmt.Errorf("schema.%s[%d]: name %q twice: %w", part.what, i, t.Name, ErrFormat)
			}
			names[t.Name] = true
			if !validDatatype(t.Datatype) {
				return fmt.Errorf("schema.%s %q: datatype %q, want one of %v: %w", part.what, t.Name, t.Datatype, Datatypes, ErrFormat)
			}
			for _, d := range t.Shape {
				if d < -1 {
					return fmt.Errorf("schema.%s %q: dimension %d, want >= 0 or -1 for dynamic: %w", part.what, t.Name, d, ErrFormat)
				}
			}
			if len(t.DimNames) != 0 && len(t.DimNames) != len(t.Shape) {
				return fmt.Errorf("schema.%s %q: %d dim_names for %d dimensions: %w", part.what, t.Name, len(t.DimNames), len(t.Shape), ErrFormat)
			}
		}
	}
	return nil
}

func validDatatype(s string) bool {
	for _, d := range Datatypes {
		if s == d {
			return true
		}
	}
	return false
}

func hasTensor(ts []Tensor, name string) bool {
	for _, t := range ts {
		if t.Name == name {
			return true
		}
	}
	return false
}

// ID returns the bundle id of the given manifest bytes: lowercase hex SHA-256.
func ID(manifestBytes []byte) string {
	sum := sha256.Sum256(manifestBytes)
	return hex.EncodeToString(sum[:])
}

// ParseManifest decodes and validates manifest bytes strictly: unknown fields, trailing data and
// a format_version newer than FormatVersion are refused (ErrFormat). It does not check the
// signature; see VerifyManifest.
func ParseManifest(b []byte) (*Manifest, error) {
	// format_version is read alone first so that a newer manifest gets "upgrade" rather than a
	// confusing unknown-field error.
	var head struct {
		FormatVersion *int `json:"format_version"`
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&head); err != nil {
		return nil, fmt.Errorf("decode %s: %v: %w", ManifestName, err, ErrFormat)
	}
	switch {
	case head.FormatVersion == nil:
		return nil, fmt.Errorf("decode %s: format_version missing: %w", ManifestName, ErrFormat)
	case *head.FormatVersion > FormatVersion:
		return nil, fmt.Errorf("decode %s: format_version %d is newer than this reader's %d; upgrade the agent or CLI: %w", ManifestName, *head.FormatVersion, FormatVersion, ErrFormat)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode %s: %v: %w", ManifestName, err, ErrFormat)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode %s: data after the JSON object: %w", ManifestName, ErrFormat)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("validate %s: %w", ManifestName, err)
	}
	return &m, nil
}

// Marshal returns the canonical bytes of m: compact JSON with object keys sorted at every level, no
// trailing newline. Compact because block digests dominate the size; sorted so that the same
// manifest always gives the same bytes, hence the same id, whatever the field order in Go.
func (m *Manifest) Marshal() ([]byte, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	// Round-trip through generic values: encoding/json writes map keys sorted, and UseNumber keeps
	// each number's text exactly.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("canonicalize manifest: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("canonicalize manifest: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
