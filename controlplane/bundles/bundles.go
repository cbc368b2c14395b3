// Package bundles is the control plane's model registry: it accepts bundle files only after
// verifying them (signature by a trusted release key, every digest, a schema for models), keeps
// them content-addressed on disk beside the store, records who uploaded what and when, the
// registry stage of each, and serves their blocks for transfer.
package bundles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/seal"
)

const bucket = "bundles"

// Registry stages.
const (
	StageStaging    = "staging"
	StageProduction = "production"
	StageArchived   = "archived"
)

// ValidStage reports whether s is a registry stage.
func ValidStage(s string) bool {
	return s == StageStaging || s == StageProduction || s == StageArchived
}

// Errors callers map to HTTP statuses.
var (
	ErrInvalid  = errors.New("bundle refused")
	ErrConflict = errors.New("bundle conflicts with one already registered")
	ErrNotFound = errors.New("bundle not found")
	ErrTooLarge = errors.New("bundle too large")
	ErrNoKeys   = errors.New("no trusted release keys")
)

// Record is one registered bundle.
type Record struct {
	ID         string    `json:"id"`
	Kind       string    `json:"kind"`
	Name       string    `json:"name"`
	Version    string    `json:"version"`
	Variant    string    `json:"variant,omitempty"`
	Parent     string    `json:"parent,omitempty"`
	Size       int64     `json:"size"`
	Stage      string    `json:"stage"`
	UploadedBy string    `json:"uploaded_by"`
	UploadedAt time.Time `json:"uploaded_at"`
	StageBy    string    `json:"stage_by,omitempty"`
	StageAt    time.Time `json:"stage_at,omitzero"`
	// Manifest is the exact signed manifest.
	Manifest json.RawMessage `json:"manifest"`
	// Encrypted: the payload is encrypted (manifest "encryption"); devices get its key wrapped for
	// them in their desired state.
	Encrypted bool `json:"encrypted,omitempty"`
}

// Ref is name@version, with the variant when there is one.
func (r Record) Ref() string {
	s := r.Name + "@" + r.Version
	if r.Variant != "" {
		s += ":" + r.Variant
	}
	return s
}

// Registry is the model registry.
type Registry struct {
	st        store.Store
	dir       string
	verifiers func() []bundle.Verifier
	maxBytes  int64
	log       *slog.Logger
	now       func() time.Time

	mu        sync.Mutex // serialises uploads (id and name@version checks)
	manifests sync.Map   // id -> *bundle.Manifest

	// identity opens the sealed content keys of encrypted bundles (SetIdentity); contents caches
	// them in memory only (id -> *age.X25519Identity).
	identity age.Identity
	contents sync.Map
}

// ErrNotRecipient: an encrypted bundle whose content key this control plane cannot open.
var ErrNotRecipient = errors.New("bundle encrypted to another key")

// DriftReferenceName is where the registry keeps the decrypted drift reference of an encrypted
// bundle, for the control plane's own drift scoring. Payload names never start with a dot, so block
// requests can never name it: it is not served.
const DriftReferenceName = ".drift-reference.json"

// SetIdentity gives the registry the control plane's age identity (DATA/encryption.key), which
// encrypted bundles' content keys are sealed to.
func (r *Registry) SetIdentity(id age.Identity) { r.identity = id }

// ContentKey opens the content key of an encrypted bundle. The key lives in memory only; what is
// stored and sent is always wrapped.
func (r *Registry) ContentKey(ctx context.Context, id string) (*age.X25519Identity, error) {
	if k, ok := r.contents.Load(id); ok {
		return k.(*age.X25519Identity), nil
	}
	m, err := r.Manifest(ctx, id)
	if err != nil {
		return nil, err
	}
	return r.openContent(id, m)
}

func (r *Registry) openContent(id string, m *bundle.Manifest) (*age.X25519Identity, error) {
	if r.identity == nil {
		return nil, fmt.Errorf("%w: %s is encrypted and this control plane has no encryption identity", ErrNotRecipient, m.Ref())
	}
	k, err := seal.Open(m, r.identity)
	if err != nil {
		return nil, fmt.Errorf("%w: %v; build it with --encrypt-to the recipient in this control plane's DATA/encryption.pub", ErrNotRecipient, err)
	}
	r.contents.Store(id, k)
	return k, nil
}

// New opens the registry that keeps files under dir. verifiers returns the release keys trusted now
// (they can change when a new trust document arrives).
func New(st store.Store, dir string, verifiers func() []bundle.Verifier, maxBytes int64, log *slog.Logger) (*Registry, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("create bundle folder: %w", err)
	}
	// Leftovers of uploads interrupted by a crash.
	if ents, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, e := range ents {
			os.RemoveAll(filepath.Join(dir, "tmp", e.Name()))
		}
	}
	if maxBytes <= 0 {
		maxBytes = 2 << 30
	}
	if log == nil {
		log = slog.Default()
	}
	return &Registry{st: st, dir: dir, verifiers: verifiers, maxBytes: maxBytes, log: log, now: time.Now}, nil
}

// Upload verifies and registers the bundle read from r. created is false when the same bundle (same
// id) was already registered.
func (r *Registry) Upload(ctx context.Context, rd io.Reader, by string) (rec Record, created bool, err error) {
	keys := r.verifiers()
	if len(keys) == 0 {
		return Record{}, false, fmt.Errorf("%w: start the control plane with --trust release.pub (or --trust-doc) so uploads can be verified", ErrNoKeys)
	}
	tmp, err := os.MkdirTemp(filepath.Join(r.dir, "tmp"), "upload-")
	if err != nil {
		return Record{}, false, fmt.Errorf("create upload folder: %w", err)
	}
	defer os.RemoveAll(tmp)
	raw := filepath.Join(tmp, "bundle.tar")
	f, err := os.OpenFile(raw, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return Record{}, false, err
	}
	n, err := io.Copy(f, io.LimitReader(rd, r.maxBytes+1))
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		return Record{}, false, fmt.Errorf("receive bundle: %w", err)
	}
	if n > r.maxBytes {
		return Record{}, false, fmt.Errorf("%w: over %d bytes", ErrTooLarge, r.maxBytes)
	}
	in, err := os.Open(raw)
	if err != nil {
		return Record{}, false, err
	}
	b, err := bundle.ExtractTo(ctx, in, filepath.Join(tmp, "files"), keys, bundle.Limits{MaxTotalBytes: r.maxBytes})
	in.Close()
	if err != nil {
		if errors.Is(err, bundle.ErrTooLarge) {
			return Record{}, false, fmt.Errorf("%w: %v", ErrTooLarge, err)
		}
		return Record{}, false, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	m := b.Manifest
	if m.Kind == bundle.KindModel && (m.Schema == nil || len(m.Schema.Inputs) == 0 || m.FileByRole(bundle.RoleModel) == nil) {
		return Record{}, false, fmt.Errorf("%w: a model bundle needs a model file and an input/output schema", ErrInvalid)
	}
	rec = Record{ID: b.ID, Kind: string(m.Kind), Name: m.Name, Version: m.Version, Variant: m.Variant, Parent: m.Parent,
		Size: n, Stage: StageStaging, UploadedBy: by, UploadedAt: r.now().UTC(), Manifest: json.RawMessage(b.ManifestBytes),
		Encrypted: m.Encryption != nil}
	if m.Encryption != nil {
		// Refused now rather than at the first assignment: a bundle nobody here can open would
		// reach no device.
		k, err := r.openContent(b.ID, m)
		if err != nil {
			return Record{}, false, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if ref := m.FileByRole(bundle.RoleReference); ref != nil {
			// The control plane scores drift against the reference, so it keeps a plaintext copy
			// under a name block requests cannot reach.
			if _, _, err := seal.DecryptFile(filepath.Join(tmp, "files", ref.Path), filepath.Join(tmp, "files", DriftReferenceName), k); err != nil {
				return Record{}, false, fmt.Errorf("%w: decrypt the drift reference: %v", ErrInvalid, err)
			}
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	final := filepath.Join(r.dir, b.ID)
	old, oerr := r.Get(ctx, b.ID)
	if oerr == nil {
		if _, err := os.Stat(filepath.Join(final, "bundle.tar")); err == nil {
			return old, false, nil
		}
		// The record is in a store that replicas share (etcd) and came from another replica;
		// this one lacks the files: keep them, the record stands.
	}
	for _, o := range r.List(ctx) {
		if oerr != nil && o.Name == rec.Name && o.Version == rec.Version && o.Variant == rec.Variant {
			return Record{}, false, fmt.Errorf("%w: %s is already registered as %s with other content; publish a new version", ErrConflict, rec.Ref(), o.ID)
		}
	}
	// Files first, then the record: a crash in between leaves an unreferenced folder, never a
	// record without files.
	if err := os.WriteFile(filepath.Join(tmp, "files", bundle.ManifestName), b.ManifestBytes, 0o600); err != nil {
		return Record{}, false, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "files", bundle.SignatureName), b.Signature, 0o600); err != nil {
		return Record{}, false, err
	}
	if err := os.Rename(raw, filepath.Join(tmp, "files", "bundle.tar")); err != nil {
		return Record{}, false, err
	}
	os.RemoveAll(final)
	if err := os.Rename(filepath.Join(tmp, "files"), final); err != nil {
		return Record{}, false, fmt.Errorf("store bundle files: %w", err)
	}
	if oerr == nil {
		r.manifests.Store(b.ID, m)
		r.log.Info("bundle files stored for a bundle registered by another replica", "bundle", b.ID, "ref", old.Ref(), "by", by)
		return old, false, nil
	}
	err = r.st.Update(ctx, func(tx store.Tx) error { return store.PutJSON(tx, bucket, b.ID, rec) })
	if err != nil {
		return Record{}, false, fmt.Errorf("record bundle: %w", err)
	}
	r.manifests.Store(b.ID, m)
	r.log.Info("bundle registered", "bundle", b.ID, "ref", rec.Ref(), "by", by)
	return rec, true, nil
}

// Get returns a bundle by id, or by name@version[:variant].
func (r *Registry) Get(ctx context.Context, ref string) (Record, error) {
	var rec Record
	if len(ref) == 64 && !strings.Contains(ref, "@") {
		err := r.st.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, bucket, ref, &rec) })
		if errors.Is(err, store.ErrNotFound) {
			return Record{}, fmt.Errorf("%w: %s", ErrNotFound, ref)
		}
		return rec, err
	}
	name, rest, ok := strings.Cut(ref, "@")
	if !ok {
		return Record{}, fmt.Errorf("%w: %q is neither a bundle id nor name@version", ErrNotFound, ref)
	}
	version, variant, _ := strings.Cut(rest, ":")
	var match []Record
	for _, o := range r.List(ctx) {
		if o.Name == name && o.Version == version && (variant == "" || o.Variant == variant) {
			match = append(match, o)
		}
	}
	if len(match) == 0 {
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, ref)
	}
	// name@version names a model version; with several variants it stands for the default one,
	// and assignment picks, per device, the variant that device can run (controlplane/variants.go).
	return DefaultVariant(match), nil
}

// DefaultVariant is the variant a bare name@version stands for: the unnamed or "fp32" one (the
// reference the others were derived from), else the oldest upload.
func DefaultVariant(vs []Record) Record {
	best := vs[0]
	for _, v := range vs[1:] {
		if rank(v) < rank(best) || (rank(v) == rank(best) && v.UploadedAt.Before(best.UploadedAt)) {
			best = v
		}
	}
	return best
}

func rank(r Record) int {
	if r.Variant == "" || r.Variant == "fp32" {
		return 0
	}
	return 1
}

// Variants returns every bundle of the same kind, name and version as rec (rec included).
func (r *Registry) Variants(ctx context.Context, rec Record) []Record {
	var out []Record
	for _, o := range r.List(ctx) {
		if o.Name == rec.Name && o.Version == rec.Version && o.Kind == rec.Kind {
			out = append(out, o)
		}
	}
	if len(out) == 0 {
		out = []Record{rec}
	}
	return out
}

// List returns every bundle, newest first.
func (r *Registry) List(ctx context.Context) []Record {
	var out []Record
	r.st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucket, "", func(_ string, v []byte) error {
			var rec Record
			if json.Unmarshal(v, &rec) == nil {
				out = append(out, rec)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].UploadedAt.After(out[j].UploadedAt) })
	return out
}

// SetStage moves a bundle to a registry stage.
func (r *Registry) SetStage(ctx context.Context, id, stage, by string) (Record, error) {
	if !ValidStage(stage) {
		return Record{}, fmt.Errorf("%w: stage %q: use staging, production or archived", ErrInvalid, stage)
	}
	var rec Record
	err := r.st.Update(ctx, func(tx store.Tx) error {
		if err := store.GetJSON(tx, bucket, id, &rec); err != nil {
			return err
		}
		rec.Stage, rec.StageBy, rec.StageAt = stage, by, r.now().UTC()
		return store.PutJSON(tx, bucket, id, rec)
	})
	if errors.Is(err, store.ErrNotFound) {
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return rec, err
}

// Manifest returns the parsed manifest of a registered bundle.
func (r *Registry) Manifest(ctx context.Context, id string) (*bundle.Manifest, error) {
	if m, ok := r.manifests.Load(id); ok {
		return m.(*bundle.Manifest), nil
	}
	rec, err := r.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	m, err := bundle.ParseManifest(rec.Manifest)
	if err != nil {
		return nil, err
	}
	r.manifests.Store(id, m)
	return m, nil
}

// Head returns the manifest and signature files.
func (r *Registry) Head(id string) (manifest, sig []byte, err error) {
	if len(id) != 64 || strings.ContainsAny(id, "./") {
		return nil, nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	manifest, err = os.ReadFile(filepath.Join(r.dir, id, bundle.ManifestName))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	sig, err = os.ReadFile(filepath.Join(r.dir, id, bundle.SignatureName))
	return manifest, sig, err
}

// ReadBlock reads block idx of a payload file.
func (r *Registry) ReadBlock(ctx context.Context, id, file string, idx int64) ([]byte, error) {
	m, err := r.Manifest(ctx, id)
	if err != nil {
		return nil, err
	}
	off, n, err := m.Block(file, idx) // also proves file is a listed payload (no path games)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(r.dir, id, file))
	if err != nil {
		return nil, fmt.Errorf("open %s of bundle %s: %w", file, id, err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("read block %d of %s: %w", idx, file, err)
	}
	return buf, nil
}

// File opens the original bundle file for download.
func (r *Registry) File(id string) (*os.File, error) {
	if len(id) != 64 || strings.ContainsAny(id, "./") {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return os.Open(filepath.Join(r.dir, id, "bundle.tar"))
}
