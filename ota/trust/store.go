package trust

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/ota/sign"
)

// Store is what a holder of trust (agent, control plane) believes: the trusted root keys and the
// newest trust document accepted under them, or keys pinned by flag. Safe for concurrent use.
type Store struct {
	mu sync.RWMutex

	pinned        bool
	pinnedRelease []*sign.Verifier
	pinnedControl []*sign.Verifier
	rootIDs       map[string]bool           // root keys trusted now
	rootKeys      map[string]*sign.Verifier // public keys known for rootIDs; a fingerprint alone has none yet
	cur           *parsed                   // nil until a document is accepted
	payload       []byte
	envelope      []byte
	log           *slog.Logger
}

// NewStore trusts the given root public keys (e.g. `--root root.pub`) and holds no document yet:
// until one is accepted there are no release or control keys.
func NewStore(roots ...*sign.Verifier) (*Store, error) {
	s := newStore()
	for _, r := range roots {
		if r == nil {
			continue
		}
		s.rootIDs[r.KeyID()] = true
		s.rootKeys[r.KeyID()] = r
	}
	if len(s.rootIDs) == 0 {
		return nil, fmt.Errorf("new trust store: no root key")
	}
	return s, nil
}

// NewStoreFromFingerprint trusts roots known only by fingerprint (the hash in an enrollment token,
// as kubeadm's CA hash). The first document accepted must carry a root key with that fingerprint
// and be signed by it.
func NewStoreFromFingerprint(rootIDs ...string) (*Store, error) {
	s := newStore()
	for _, id := range rootIDs {
		if !sign.IsFingerprint(id) {
			return nil, fmt.Errorf("new trust store: root fingerprint %q is not 64 hex digits", id)
		}
		s.rootIDs[id] = true
	}
	if len(s.rootIDs) == 0 {
		return nil, fmt.Errorf("new trust store: no root fingerprint")
	}
	return s, nil
}

// NewPinned holds release and control keys given directly (`--trust a.pub --control-key c.pub`):
// the quick path, with no trust document and no rotation; Accept refuses with ErrPinned.
func NewPinned(release, control []*sign.Verifier) *Store {
	s := newStore()
	s.pinned = true
	s.pinnedRelease = slices.DeleteFunc(slices.Clone(release), func(v *sign.Verifier) bool { return v == nil })
	s.pinnedControl = slices.DeleteFunc(slices.Clone(control), func(v *sign.Verifier) bool { return v == nil })
	return s
}

// Restore rebuilds a Store from an envelope this holder accepted earlier and persisted (see
// Envelope). It trusts the document's own root keys, after checking that at least one of them
// signed it, so a root rotation accepted before a restart is not forgotten. Use it only for state
// this process wrote itself after Accept: it is not a way to learn trust from the network.
func Restore(ctx context.Context, envelope []byte) (*Store, error) {
	_, payload, err := sign.UnverifiedPayload(envelope)
	if err != nil {
		return nil, fmt.Errorf("restore trust: %w", err)
	}
	p, err := parseDocument(payload)
	if err != nil {
		return nil, fmt.Errorf("restore trust: %w", err)
	}
	roots := make([]*sign.Verifier, 0, len(p.root))
	for _, v := range p.root {
		roots = append(roots, v)
	}
	s, err := NewStore(roots...)
	if err != nil {
		return nil, fmt.Errorf("restore trust: %w", err)
	}
	if _, err := s.Accept(ctx, envelope); err != nil {
		return nil, fmt.Errorf("restore trust: %w", err)
	}
	return s, nil
}

func newStore() *Store {
	return &Store{
		rootIDs:  map[string]bool{},
		rootKeys: map[string]*sign.Verifier{},
		log:      slog.Default().With("component", "trust"),
	}
}

// Accept applies a trust document envelope. It returns true when the document became the current
// one, and false with a nil error for the document already held (the retained copy re-sent on every
// reconnect). Rules:
//   - version must exceed the current one (a device that was offline may jump from N to N+2);
//     lower is ErrRollback, equal with other content is ErrVersionConflict;
//   - at least one currently trusted root must have signed (ErrUntrustedRoot);
//   - every root key the document lists that is not trusted yet must have signed too
//     (ErrRootRotation): a new root is taken only from the old root together with the new one;
//   - the document must be well formed (ErrInvalidDocument, sign.ErrMalformed, sign.ErrTooLarge).
func (s *Store) Accept(ctx context.Context, envelope []byte) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pinned {
		return false, fmt.Errorf("accept trust document: %w", ErrPinned)
	}
	typ, payload, err := sign.UnverifiedPayload(envelope)
	if err != nil {
		return false, fmt.Errorf("accept trust document: %w", err)
	}
	if typ != PayloadType {
		return false, fmt.Errorf("accept trust document: payload type %q: %w", typ, sign.ErrPayloadType)
	}
	// The payload is read before its signatures are checked, to learn its version and root keys;
	// nothing from it is kept unless the checks below pass.
	p, err := parseDocument(payload)
	if err != nil {
		return false, fmt.Errorf("accept trust document: %w", err)
	}
	if s.cur != nil {
		switch v, have := p.doc.Version, s.cur.doc.Version; {
		case v == have && bytes.Equal(payload, s.payload):
			return false, nil
		case v == have:
			return false, fmt.Errorf("accept trust document v%d: %w", v, ErrVersionConflict)
		case v < have:
			return false, fmt.Errorf("accept trust document v%d, holding v%d: %w", v, have, ErrRollback)
		}
	}

	// Candidate keys: the trusted roots we hold keys for, the document's copies of trusted roots we
	// know only by fingerprint (validate checked each id is its key's fingerprint), and the
	// document's new roots, which must prove they agree by signing.
	candidates := map[string]*sign.Verifier{}
	for id, v := range s.rootKeys {
		candidates[id] = v
	}
	for id, v := range p.root {
		if _, ok := candidates[id]; !ok {
			candidates[id] = v
		}
	}
	vs := make([]*sign.Verifier, 0, len(candidates))
	for _, v := range candidates {
		vs = append(vs, v)
	}
	_, signedBy, err := sign.OpenEnvelopeAll(ctx, envelope, PayloadType, vs...)
	if err != nil {
		if errors.Is(err, sign.ErrSignature) || errors.Is(err, sign.ErrUnknownKey) {
			return false, fmt.Errorf("accept trust document v%d: %w: %w", p.doc.Version, ErrUntrustedRoot, err)
		}
		return false, fmt.Errorf("accept trust document v%d: %w", p.doc.Version, err)
	}
	signed := map[string]bool{}
	byTrusted := false
	for _, id := range signedBy {
		signed[id] = true
		if s.rootIDs[id] {
			byTrusted = true
		}
	}
	if !byTrusted {
		return false, fmt.Errorf("accept trust document v%d: signed only by %s: %w", p.doc.Version, shortIDs(signedBy), ErrUntrustedRoot)
	}
	var newRoots []string
	for id := range p.root {
		if s.rootIDs[id] {
			continue
		}
		if !signed[id] {
			return false, fmt.Errorf("accept trust document v%d: root %s: %w", p.doc.Version, short(id), ErrRootRotation)
		}
		newRoots = append(newRoots, id)
	}

	from := uint64(0)
	if s.cur != nil {
		from = s.cur.doc.Version
	}
	if s.cur != nil && p.doc.IssuedAt.Before(s.cur.doc.IssuedAt) {
		// Not refused: the version decides order, and the root signed it. But an agent takes "now"
		// from issued-at, so a clock that went backwards on the signing machine is worth a line.
		s.log.Warn("trust document issued before the one it replaces", "from", from, "to", p.doc.Version)
	}
	s.cur, s.payload, s.envelope = p, payload, bytes.Clone(envelope)
	s.rootIDs, s.rootKeys = map[string]bool{}, map[string]*sign.Verifier{}
	for id, v := range p.root {
		s.rootIDs[id] = true
		s.rootKeys[id] = v
	}
	s.log.Info("trust document accepted", "from", from, "to", p.doc.Version,
		"release_keys", len(p.release), "control_keys", len(p.control), "revoked", len(p.revoked),
		"new_roots", len(newRoots), "signed_by", shortIDs(signedBy))
	return true, nil
}

// ReleaseVerifiers are the keys that may sign bundles now (revoked ones excluded).
func (s *Store) ReleaseVerifiers() []*sign.Verifier {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.pinned {
		return slices.Clone(s.pinnedRelease)
	}
	if s.cur == nil {
		return nil
	}
	return slices.Clone(s.cur.release)
}

// ControlVerifiers are the keys that may sign desired states now (revoked ones excluded).
func (s *Store) ControlVerifiers() []*sign.Verifier {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.pinned {
		return slices.Clone(s.pinnedControl)
	}
	if s.cur == nil {
		return nil
	}
	return slices.Clone(s.cur.control)
}

// IsRevoked reports whether the current document revokes keyID. A caller that found a signature by
// some key outside ReleaseVerifiers uses it to say "revoked" rather than "unknown".
func (s *Store) IsRevoked(keyID string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur != nil && s.cur.revoked[keyID]
}

// Version of the current document; 0 when none (or pinned).
func (s *Store) Version() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cur == nil {
		return 0
	}
	return s.cur.doc.Version
}

// IssuedAt of the current document; zero when none. Agents take "now" as the later of their clock
// and this.
func (s *Store) IssuedAt() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cur == nil {
		return time.Time{}
	}
	return s.cur.doc.IssuedAt
}

// Envelope is the accepted envelope, byte for byte: what the control plane republishes retained and
// what an agent persists for Restore. Nil when none.
func (s *Store) Envelope() []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return bytes.Clone(s.envelope)
}

// Document is a copy of the accepted document; false when none.
func (s *Store) Document() (Document, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cur == nil {
		return Document{}, false
	}
	d := s.cur.doc
	d.Root = slices.Clone(d.Root)
	d.ReleaseKeys = slices.Clone(d.ReleaseKeys)
	d.ControlKeys = slices.Clone(d.ControlKeys)
	d.Revoked = slices.Clone(d.Revoked)
	return d, true
}

// RootIDs are the fingerprints of the roots trusted now, sorted.
func (s *Store) RootIDs() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := make([]string, 0, len(s.rootIDs))
	for id := range s.rootIDs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Pinned reports whether the keys were given by flag (no trust document).
func (s *Store) Pinned() bool { return s.pinned }

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func shortIDs(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = short(id)
	}
	return out
}
