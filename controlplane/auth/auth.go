// Package auth owns the control plane's API tokens and roles: who a bearer token stands for
// (a Principal) and what that principal may do (a Role). Tokens are created at random, shown
// once, and kept only as SHA-256 hashes in the store (bucket "tokens"); a revoked token is gone
// from the store, so the next request with it fails. The bootstrap admin token
// (DATA/admin.token or EDGEFLEET_ADMIN_TOKEN) is never stored: only its hash is held in memory.
//
// The package knows nothing of HTTP: the API maps routes to minimum roles and calls
// Authenticate; it must not log or return a token's secret after Create.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/store"
)

// Bucket holds one record per token, keyed by the token's id.
const Bucket = "tokens"

// Role is what a principal may do; a higher role may do everything a lower one may.
type Role int

// The roles, weakest first. Public is no role at all: the route needs no token (a table entry,
// never a principal's role).
const (
	Public Role = iota
	Viewer
	Operator
	Admin
)

func (r Role) String() string {
	switch r {
	case Public:
		return "public"
	case Viewer:
		return "viewer"
	case Operator:
		return "operator"
	case Admin:
		return "admin"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// ParseRole reads viewer, operator or admin.
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "viewer":
		return Viewer, nil
	case "operator":
		return Operator, nil
	case "admin":
		return Admin, nil
	}
	return 0, fmt.Errorf("%w: %q (use viewer, operator or admin)", ErrRole, s)
}

// MarshalText writes the role's name, so JSON carries "operator", not 2.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a role's name.
func (r *Role) UnmarshalText(b []byte) error {
	v, err := ParseRole(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Errors callers decide on.
var (
	ErrInvalid  = errors.New("invalid token")
	ErrNotFound = errors.New("no such token")
	ErrRole     = errors.New("unknown role")
	ErrName     = errors.New("invalid token name")
)

// Principal is who a request stands for. ID is the token's id ("admin" for the bootstrap token).
type Principal struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// BootstrapID is the id of the bootstrap admin token, which is not in the store.
const BootstrapID = "admin"

// String is how audit records and "by" fields name the principal: never the secret.
func (p Principal) String() string {
	if p.ID == BootstrapID || p.ID == "" || p.Name == p.ID {
		return p.Name
	}
	return p.Name + " (" + p.ID + ")"
}

// Can reports whether the principal's role is at least min.
func (p Principal) Can(min Role) bool { return p.Role >= min }

// Token is a stored token, without its secret.
type Token struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// record is what the store holds: the token and the hex SHA-256 of the whole token string. The
// token carries 256 random bits, so a fast hash is as good as a slow one here (no dictionary to
// try). The hash never leaves this package.
type record struct {
	Token
	Hash string `json:"hash"`
}

// Prefix starts every token this package makes; id and secret follow, separated by "_".
const Prefix = "eft_"

// Tokens authenticates bearer tokens and manages the stored ones.
type Tokens struct {
	st        store.Store
	bootstrap [32]byte
	hasAdmin  bool
	now       func() time.Time
}

// New serves tokens from st; adminHash is the SHA-256 of the bootstrap admin token (the zero
// value disables it).
func New(st store.Store, adminHash [32]byte) *Tokens {
	return &Tokens{st: st, bootstrap: adminHash, hasAdmin: adminHash != [32]byte{}, now: time.Now}
}

const maxName = 64

// Create makes a token with a role, stores its hash, and returns the record and the token string,
// which exists nowhere else afterwards.
func (t *Tokens) Create(ctx context.Context, name string, role Role, by string) (Token, string, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > maxName || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return Token{}, "", fmt.Errorf("%w: give a name of 1 to %d printable characters (who or what uses the token)", ErrName, maxName)
	}
	if role < Viewer || role > Admin {
		return Token{}, "", fmt.Errorf("%w: %v", ErrRole, role)
	}
	idb, secret := make([]byte, 8), make([]byte, 32)
	rand.Read(idb) // crypto/rand never fails short (it panics instead)
	rand.Read(secret)
	id := hex.EncodeToString(idb)
	raw := Prefix + id + "_" + hex.EncodeToString(secret)
	sum := sha256.Sum256([]byte(raw))
	rec := record{Token{ID: id, Name: name, Role: role, Created: t.now().UTC(), CreatedBy: by}, hex.EncodeToString(sum[:])}
	err := t.st.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Get(Bucket, id); err == nil {
			return fmt.Errorf("token id %s exists already", id) // 64 random bits: never in practice
		}
		return store.PutJSON(tx, Bucket, id, rec)
	})
	if err != nil {
		return Token{}, "", fmt.Errorf("save token %s: %w", name, err)
	}
	return rec.Token, raw, nil
}

// List returns the stored tokens, oldest first, without hashes.
func (t *Tokens) List(ctx context.Context) ([]Token, error) {
	out := []Token{}
	err := t.st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(Bucket, "", func(_ string, v []byte) error {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode token record: %w", err)
			}
			out = append(out, rec.Token)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Revoke deletes a token; requests with it fail from then on.
func (t *Tokens) Revoke(ctx context.Context, id string) (Token, error) {
	var rec record
	err := t.st.Update(ctx, func(tx store.Tx) error {
		if err := store.GetJSON(tx, Bucket, id, &rec); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return ErrNotFound
			}
			return err
		}
		return tx.Delete(Bucket, id)
	})
	if err != nil {
		return Token{}, fmt.Errorf("revoke token %s: %w", id, err)
	}
	return rec.Token, nil
}

// Authenticate returns who the token stands for, or ErrInvalid. The comparison of hashes is
// constant-time; the lookup is by the token's id, which is not secret.
func (t *Tokens) Authenticate(ctx context.Context, raw string) (Principal, error) {
	sum := sha256.Sum256([]byte(raw))
	if t.hasAdmin && subtle.ConstantTimeCompare(sum[:], t.bootstrap[:]) == 1 {
		return Principal{ID: BootstrapID, Name: "admin", Role: Admin}, nil
	}
	rest, ok := strings.CutPrefix(raw, Prefix)
	if !ok {
		return Principal{}, ErrInvalid
	}
	id, _, ok := strings.Cut(rest, "_")
	if !ok || id == "" {
		return Principal{}, ErrInvalid
	}
	rec, err := t.get(ctx, id)
	if err != nil {
		return Principal{}, err
	}
	want, err := hex.DecodeString(rec.Hash)
	if err != nil || subtle.ConstantTimeCompare(sum[:], want) != 1 {
		return Principal{}, ErrInvalid
	}
	return Principal{ID: rec.ID, Name: rec.Name, Role: rec.Role}, nil
}

// Active reports whether the principal's token still exists: a console session made with a
// token ends when the token is revoked.
func (t *Tokens) Active(ctx context.Context, p Principal) bool {
	if p.ID == BootstrapID {
		return t.hasAdmin
	}
	_, err := t.get(ctx, p.ID)
	return err == nil
}

func (t *Tokens) get(ctx context.Context, id string) (record, error) {
	var rec record
	err := t.st.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, Bucket, id, &rec) })
	if errors.Is(err, store.ErrNotFound) {
		return record{}, ErrInvalid
	}
	if err != nil {
		return record{}, fmt.Errorf("look up token: %w", err)
	}
	return rec, nil
}
