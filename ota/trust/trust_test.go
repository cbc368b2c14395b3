package trust

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/ota/sign"
)

type keys struct {
	root1, root2, stranger, relA, relB, ctl *sign.Signer
}

func newKeys(t *testing.T) keys {
	t.Helper()
	gen := func(alg sign.Algorithm) *sign.Signer {
		s, err := sign.GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Ed25519 for one root so both key types go through the rotation rules.
	return keys{gen(sign.ECDSAP256), gen(sign.Ed25519), gen(sign.ECDSAP256), gen(sign.ECDSAP256), gen(sign.ECDSAP256), gen(sign.ECDSAP256)}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func doc(version uint64, roots []*sign.Signer, release []*sign.Signer, revoked ...string) Document {
	d := Document{Version: version, IssuedAt: t0.Add(time.Duration(version) * time.Hour)}
	for _, r := range roots {
		d.Root = append(d.Root, KeyOf(r.Verifier()))
	}
	for _, r := range release {
		d.ReleaseKeys = append(d.ReleaseKeys, KeyOf(r.Verifier()))
	}
	d.Revoked = revoked
	return d
}

func mustSign(t *testing.T, d Document, signers ...*sign.Signer) []byte {
	t.Helper()
	env, err := Sign(context.Background(), d, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func ids(vs []*sign.Verifier) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.KeyID())
	}
	return out
}

// TestReleaseKeyRotation: v1 trusts release key A; v2 adds B and revokes A; from then on A's
// signatures are refused and B's accepted.
func TestReleaseKeyRotation(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t)
	st, err := NewStore(k.root1.Verifier())
	if err != nil {
		t.Fatal(err)
	}
	manifest := []byte(`{"name":"detector"}`)
	sigA, _ := sign.SignBlob(ctx, k.relA, manifest)
	sigB, _ := sign.SignBlob(ctx, k.relB, manifest)

	if _, err := sign.VerifyBlob(ctx, manifest, sigA, st.ReleaseVerifiers()...); !errors.Is(err, sign.ErrUnknownKey) {
		t.Fatalf("before any document: %v, want ErrUnknownKey", err)
	}
	if changed, err := st.Accept(ctx, mustSign(t, doc(1, []*sign.Signer{k.root1}, []*sign.Signer{k.relA}), k.root1)); err != nil || !changed {
		t.Fatalf("accept v1: %v, %v", changed, err)
	}
	if _, err := sign.VerifyBlob(ctx, manifest, sigA, st.ReleaseVerifiers()...); err != nil {
		t.Fatalf("A under v1: %v", err)
	}
	if _, err := sign.VerifyBlob(ctx, manifest, sigB, st.ReleaseVerifiers()...); !errors.Is(err, sign.ErrSignature) {
		t.Fatalf("B under v1: %v, want ErrSignature", err)
	}
	if _, err := st.Accept(ctx, mustSign(t, doc(2, []*sign.Signer{k.root1}, []*sign.Signer{k.relB}, k.relA.KeyID()), k.root1)); err != nil {
		t.Fatal(err)
	}
	if _, err := sign.VerifyBlob(ctx, manifest, sigA, st.ReleaseVerifiers()...); !errors.Is(err, sign.ErrSignature) {
		t.Fatalf("revoked A under v2: %v, want ErrSignature", err)
	}
	if !st.IsRevoked(k.relA.KeyID()) || st.IsRevoked(k.relB.KeyID()) {
		t.Fatal("IsRevoked wrong")
	}
	if id, err := sign.VerifyBlob(ctx, manifest, sigB, st.ReleaseVerifiers()...); err != nil || id != k.relB.KeyID() {
		t.Fatalf("B under v2: %s, %v", id, err)
	}
	if st.Version() != 2 || !st.IssuedAt().Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("version %d issued %v", st.Version(), st.IssuedAt())
	}
}

// TestAcceptSequence runs one holder through a history of documents; each step states what the
// holder must make of it.
func TestAcceptSequence(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t)
	r1, r2 := []*sign.Signer{k.root1}, []*sign.Signer{k.root2}
	rel := []*sign.Signer{k.relA}
	v1 := mustSign(t, doc(1, r1, rel), k.root1)
	v3 := mustSign(t, doc(3, r1, []*sign.Signer{k.relA, k.relB}), k.root1)
	v3again := mustSign(t, doc(3, r1, []*sign.Signer{k.relA, k.relB}), k.root1) // same bytes signed anew
	v3other := mustSign(t, doc(3, r1, []*sign.Signer{k.relB}), k.root1)

	wrongType, _ := sign.SignEnvelope(ctx, k.root1, "application/vnd.edgefleet.desired+json", []byte(`{}`))
	notJSON, _ := sign.SignEnvelope(ctx, k.root1, PayloadType, []byte(`{"version":`))
	// Built by hand, because Sign refuses it: a release key listed under a trusted root's id.
	forged := doc(9, r1, rel)
	forged.ReleaseKeys[0].ID = k.root1.KeyID()
	forgedPayload, _ := json.Marshal(forged)
	forgedEnv, _ := sign.SignEnvelope(ctx, k.root1, PayloadType, forgedPayload)

	steps := []struct {
		name        string
		env         []byte
		wantChanged bool
		wantErr     error
		wantRoot    *sign.Signer
	}{
		{"v1", v1, true, nil, k.root1},
		{"jump v1 to v3", v3, true, nil, k.root1},
		{"v3 again, re-signed: quiet no-op", v3again, false, nil, k.root1},
		{"v3 with other content", v3other, false, ErrVersionConflict, k.root1},
		{"replay v1", v1, false, ErrRollback, k.root1},
		{"v4 signed by a stranger", mustSign(t, doc(4, r1, rel), k.stranger), false, ErrUntrustedRoot, k.root1},
		{"v4 naming the stranger as root, signed by it", mustSign(t, doc(4, []*sign.Signer{k.stranger}, rel), k.stranger), false, ErrUntrustedRoot, k.root1},
		{"wrong payload type", wrongType, false, sign.ErrPayloadType, k.root1},
		{"not JSON", notJSON, false, ErrInvalidDocument, k.root1},
		{"key id that is not its key's fingerprint", forgedEnv, false, ErrInvalidDocument, k.root1},
		{"garbage", []byte("nope"), false, sign.ErrMalformed, k.root1},
		{"rotation signed by the new root only", mustSign(t, doc(4, r2, rel), k.root2), false, ErrUntrustedRoot, k.root1},
		{"rotation signed by the old root only", mustSign(t, doc(4, r2, rel), k.root1), false, ErrRootRotation, k.root1},
		{"rotation signed by both", mustSign(t, doc(4, r2, rel), k.root1, k.root2), true, nil, k.root2},
		{"old root after rotation", mustSign(t, doc(5, r1, rel), k.root1), false, ErrUntrustedRoot, k.root2},
		{"new root after rotation", mustSign(t, doc(5, r2, rel), k.root2), true, nil, k.root2},
	}
	st, err := NewStore(k.root1.Verifier())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		changed, err := st.Accept(ctx, s.env)
		if !errors.Is(err, s.wantErr) || (err == nil) != (s.wantErr == nil) || changed != s.wantChanged {
			t.Fatalf("%s: Accept = %v, %v; want %v, %v", s.name, changed, err, s.wantChanged, s.wantErr)
		}
		if got := st.RootIDs(); !slices.Equal(got, []string{s.wantRoot.KeyID()}) {
			t.Fatalf("%s: roots %v, want %s", s.name, got, s.wantRoot.KeyID())
		}
	}
	if st.Version() != 5 {
		t.Fatalf("version %d, want 5", st.Version())
	}
}

func TestFingerprintMode(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t)
	st, err := NewStoreFromFingerprint(k.root1.KeyID())
	if err != nil {
		t.Fatal(err)
	}
	// A document carrying another root, self-signed, must not pass for the one in the token.
	if _, err := st.Accept(ctx, mustSign(t, doc(1, []*sign.Signer{k.stranger}, nil), k.stranger)); !errors.Is(err, ErrUntrustedRoot) {
		t.Fatalf("stranger's document: %v, want ErrUntrustedRoot", err)
	}
	if _, err := st.Accept(ctx, mustSign(t, doc(1, []*sign.Signer{k.root1}, []*sign.Signer{k.relA}), k.root1)); err != nil {
		t.Fatalf("root's document: %v", err)
	}
	if got := ids(st.ReleaseVerifiers()); !slices.Equal(got, []string{k.relA.KeyID()}) {
		t.Fatalf("release keys %v", got)
	}
	if _, err := NewStoreFromFingerprint("not-a-fingerprint"); err == nil {
		t.Fatal("bad fingerprint accepted")
	}
}

func TestPinned(t *testing.T) {
	k := newKeys(t)
	st := NewPinned([]*sign.Verifier{k.relA.Verifier()}, []*sign.Verifier{k.ctl.Verifier()})
	if _, err := st.Accept(context.Background(), mustSign(t, doc(1, []*sign.Signer{k.root1}, nil), k.root1)); !errors.Is(err, ErrPinned) {
		t.Fatalf("Accept on a pinned store: %v, want ErrPinned", err)
	}
	if !slices.Equal(ids(st.ReleaseVerifiers()), []string{k.relA.KeyID()}) || !slices.Equal(ids(st.ControlVerifiers()), []string{k.ctl.KeyID()}) {
		t.Fatal("pinned keys not returned")
	}
}

// TestRestore: a holder that rotated roots and restarted must still trust the new root only.
func TestRestore(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t)
	st, _ := NewStore(k.root1.Verifier())
	if _, err := st.Accept(ctx, mustSign(t, doc(2, []*sign.Signer{k.root2}, nil), k.root1, k.root2)); err != nil {
		t.Fatal(err)
	}
	back, err := Restore(ctx, st.Envelope())
	if err != nil {
		t.Fatal(err)
	}
	if back.Version() != 2 || !slices.Equal(back.RootIDs(), []string{k.root2.KeyID()}) {
		t.Fatalf("restored v%d roots %v", back.Version(), back.RootIDs())
	}
	if _, err := back.Accept(ctx, mustSign(t, doc(3, []*sign.Signer{k.root1}, nil), k.root1)); !errors.Is(err, ErrUntrustedRoot) {
		t.Fatalf("old root after restore: %v", err)
	}
	// A document not signed by any of its own roots is not state we wrote.
	if _, err := Restore(ctx, mustSign(t, doc(2, []*sign.Signer{k.root2}, nil), k.stranger)); !errors.Is(err, ErrUntrustedRoot) {
		t.Fatalf("restore of a self-inconsistent document: %v", err)
	}
}

func TestSignRefusesContradictions(t *testing.T) {
	k := newKeys(t)
	tests := []struct {
		name string
		d    Document
	}{
		{"revoked and listed", doc(1, []*sign.Signer{k.root1}, []*sign.Signer{k.relA}, k.relA.KeyID())},
		{"version 0", doc(0, []*sign.Signer{k.root1}, nil)},
		{"no root", doc(1, nil, nil)},
		{"key twice", doc(1, []*sign.Signer{k.root1}, []*sign.Signer{k.relA, k.relA})},
		{"revoked id not a fingerprint", doc(1, []*sign.Signer{k.root1}, nil, "A")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Sign(context.Background(), tt.d, k.root1); !errors.Is(err, ErrInvalidDocument) {
				t.Fatalf("Sign = %v, want ErrInvalidDocument", err)
			}
		})
	}
}

// TestCLIFlow is what `controlplane keys generate` and `controlplane trust sign` do, end to end,
// including a root rotation done from files.
func TestCLIFlow(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	paths := map[Role][2]string{}
	for _, r := range []Role{RoleRoot, RoleRelease, RoleControl} {
		key, pub, id, err := GenerateKeyFiles(dir, r)
		if err != nil || !sign.IsFingerprint(id) {
			t.Fatalf("GenerateKeyFiles(%s): %s, %v", r, id, err)
		}
		paths[r] = [2]string{key, pub}
	}
	if _, _, _, err := GenerateKeyFiles(dir, RoleRoot); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second root key in the same folder: %v, want ErrExist", err)
	}
	if _, _, _, err := GenerateKeyFiles(dir, "admin"); err == nil {
		t.Fatal("unknown role accepted")
	}
	out := filepath.Join(dir, "trust.json")
	d, err := SignTrustFile(ctx, SignFileOptions{Version: 1, RootKeys: []string{paths[RoleRoot][0]},
		ReleasePubs: []string{paths[RoleRelease][1]}, ControlPubs: []string{paths[RoleControl][1]}, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != 1 || len(d.Root) != 1 || len(d.ReleaseKeys) != 1 || len(d.ControlKeys) != 1 {
		t.Fatalf("written document: %+v", d)
	}
	env, _ := os.ReadFile(out)
	rootPub, _ := sign.LoadVerifier(paths[RoleRoot][1])
	if _, err := Open(ctx, env, rootPub); err != nil {
		t.Fatal(err)
	}
	// The payload's field names are a wire format agents of other versions read.
	_, payload, _ := sign.UnverifiedPayload(env)
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(payload, &fields)
	for _, f := range []string{"version", "issued_at", "root", "release_keys", "control_keys", "revoked"} {
		if _, ok := fields[f]; !ok {
			t.Errorf("payload lacks %q: %s", f, payload)
		}
	}
	st, _ := NewStore(rootPub)
	if _, err := st.Accept(ctx, env); err != nil {
		t.Fatal(err)
	}

	// Rotate the root from files, revoking the release key by its .pub.
	newRootKey, newRootPub, _, err := GenerateKeyFiles(filepath.Join(dir, "new"), RoleRoot)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := SignTrustFile(ctx, SignFileOptions{Version: 2, RootKeys: []string{paths[RoleRoot][0], newRootKey},
		RootPubs: []string{newRootPub}, ControlPubs: []string{paths[RoleControl][1]},
		Revoked: []string{paths[RoleRelease][1]}, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	env2, _ := os.ReadFile(out)
	if _, err := st.Accept(ctx, env2); err != nil {
		t.Fatalf("rotation from files: %v", err)
	}
	if !st.IsRevoked(d.ReleaseKeys[0].ID) || st.RootIDs()[0] != d2.Root[0].ID {
		t.Fatal("rotation from files not applied")
	}
}
