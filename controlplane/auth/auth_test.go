package auth_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/auth"
	"github.com/edgefleet/edgefleet/controlplane/store"
)

const bootstrap = "efa_bootstrap-admin-token-for-tests"

func newTokens(t *testing.T) (*auth.Tokens, store.Store) {
	t.Helper()
	st := store.NewMemory()
	t.Cleanup(func() { st.Close() })
	return auth.New(st, sha256.Sum256([]byte(bootstrap))), st
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	tk, _ := newTokens(t)
	op, opRaw, err := tk.Create(ctx, "ci", auth.Operator, "admin")
	if err != nil {
		t.Fatal(err)
	}
	_, vRaw, err := tk.Create(ctx, "dash", auth.Viewer, "admin")
	if err != nil {
		t.Fatal(err)
	}
	// Same id, other secret: the id alone must not authenticate.
	forged := auth.Prefix + op.ID + "_" + strings.Repeat("0", 64)
	cases := []struct {
		name, token string
		want        auth.Principal
		err         error
	}{
		{"bootstrap admin", bootstrap, auth.Principal{ID: auth.BootstrapID, Name: "admin", Role: auth.Admin}, nil},
		{"operator", opRaw, auth.Principal{ID: op.ID, Name: "ci", Role: auth.Operator}, nil},
		{"viewer", vRaw, auth.Principal{Name: "dash", Role: auth.Viewer}, nil},
		{"empty", "", auth.Principal{}, auth.ErrInvalid},
		{"garbage", "hello", auth.Principal{}, auth.ErrInvalid},
		{"unknown id", auth.Prefix + "0000000000000000_" + strings.Repeat("a", 64), auth.Principal{}, auth.ErrInvalid},
		{"forged secret", forged, auth.Principal{}, auth.ErrInvalid},
		{"truncated", opRaw[:len(opRaw)-1], auth.Principal{}, auth.ErrInvalid},
		{"no secret", auth.Prefix + op.ID, auth.Principal{}, auth.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := tk.Authenticate(ctx, c.token)
			if !errors.Is(err, c.err) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if c.want.ID == "" {
				p.ID = "" // random
			}
			if p != c.want {
				t.Fatalf("principal = %+v, want %+v", p, c.want)
			}
		})
	}
}

func TestRevoke(t *testing.T) {
	ctx := context.Background()
	tk, _ := newTokens(t)
	rec, raw, err := tk.Create(ctx, "ci", auth.Admin, "admin")
	if err != nil {
		t.Fatal(err)
	}
	p, err := tk.Authenticate(ctx, raw)
	if err != nil || !tk.Active(ctx, p) {
		t.Fatalf("fresh token: %v active=%v", err, tk.Active(ctx, p))
	}
	if _, err := tk.Revoke(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Authenticate(ctx, raw); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("revoked token authenticates: %v", err)
	}
	if tk.Active(ctx, p) {
		t.Fatal("revoked principal still active")
	}
	if _, err := tk.Revoke(ctx, rec.ID); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("second revoke: %v, want ErrNotFound", err)
	}
	if _, err := tk.Revoke(ctx, auth.BootstrapID); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("revoking the bootstrap token: %v, want ErrNotFound", err)
	}
	if !tk.Active(ctx, auth.Principal{ID: auth.BootstrapID, Role: auth.Admin}) {
		t.Fatal("bootstrap admin not active")
	}
}

func TestCreateValidates(t *testing.T) {
	ctx := context.Background()
	tk, _ := newTokens(t)
	cases := []struct {
		name string
		role auth.Role
		err  error
	}{
		{"", auth.Viewer, auth.ErrName},
		{"  ", auth.Viewer, auth.ErrName},
		{strings.Repeat("n", 65), auth.Viewer, auth.ErrName},
		{"line\nbreak", auth.Viewer, auth.ErrName},
		{"ok", auth.Public, auth.ErrRole},
		{"ok", auth.Admin + 1, auth.ErrRole},
		{"ok", auth.Viewer, nil},
	}
	for _, c := range cases {
		if _, _, err := tk.Create(ctx, c.name, c.role, "admin"); !errors.Is(err, c.err) {
			t.Errorf("Create(%q, %v) = %v, want %v", c.name, c.role, err, c.err)
		}
	}
	ts, err := tk.List(ctx)
	if err != nil || len(ts) != 1 || ts[0].Name != "ok" || ts[0].Role != auth.Viewer || ts[0].CreatedBy != "admin" {
		t.Fatalf("List = %+v, %v", ts, err)
	}
}

func TestParseRole(t *testing.T) {
	for _, c := range []struct {
		in   string
		want auth.Role
		err  bool
	}{{"viewer", auth.Viewer, false}, {"Operator", auth.Operator, false}, {" admin ", auth.Admin, false},
		{"public", 0, true}, {"root", 0, true}, {"", 0, true}} {
		got, err := auth.ParseRole(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseRole(%q) = %v, %v", c.in, got, err)
		}
		if err != nil && !errors.Is(err, auth.ErrRole) {
			t.Errorf("ParseRole(%q) error %v is not ErrRole", c.in, err)
		}
	}
}

// TestStoredHashed: the token's secret never reaches the disk; only its SHA-256 does.
func TestStoredHashed(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "controlplane.db")
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	tk := auth.New(st, sha256.Sum256([]byte(bootstrap)))
	rec, raw, err := tk.Create(ctx, "ci", auth.Operator, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimPrefix(raw, auth.Prefix+rec.ID+"_")
	for _, s := range []string{raw, secret, bootstrap} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("the store file holds %q in clear", s)
		}
	}
	sum := sha256.Sum256([]byte(raw))
	if !bytes.Contains(b, []byte(hex.EncodeToString(sum[:]))) {
		t.Error("the store file does not hold the token's hash: is the record where the test thinks?")
	}
	// And it still authenticates after a reopen.
	st, err = store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if p, err := auth.New(st, [32]byte{}).Authenticate(ctx, raw); err != nil || p.Role != auth.Operator {
		t.Fatalf("after reopen: %+v, %v", p, err)
	}
}
