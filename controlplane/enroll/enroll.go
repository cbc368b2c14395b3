// Package enroll owns device enrollment on the control plane: enrollment tokens (stored hashed,
// with group, uses left, expiry and creator), their atomic redemption into per-device MQTT
// credentials (bcrypt hashes, never the password), the broker's credential check, revocation and
// the Mosquitto password and ACL files for sites that run Mosquitto. It knows no HTTP and no MQTT
// client: the API and the broker call it.
package enroll

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgefleet/edgefleet/controlplane/audit"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/store"
	wenroll "github.com/edgefleet/edgefleet/internal/enroll"
	"github.com/edgefleet/edgefleet/internal/wire"
)

// Buckets in the store.
const (
	TokensBucket      = "enrollments"
	CredentialsBucket = "device_credentials"
)

// Errors a caller maps to HTTP statuses.
var (
	ErrInvalidToken = errors.New("enrollment token not recognised")   // 401
	ErrExpired      = errors.New("enrollment token expired")          // 410
	ErrUsedUp       = errors.New("enrollment token has no uses left") // 410
	ErrEnrolled     = errors.New("device id already enrolled")        // 409
	ErrRevoked      = errors.New("device credentials revoked")        // 409 on enroll
	ErrNotEnrolled  = errors.New("device has no credentials")         // 404 on revoke
	ErrBadRequest   = errors.New("invalid enrollment request")        // 400
)

// Enrollment is a stored token, without its secret.
type Enrollment struct {
	ID         string    `json:"id"`
	SecretHash string    `json:"secret_sha256"` // hex SHA-256 of the 32-byte random secret
	Group      string    `json:"group,omitempty"`
	Uses       int       `json:"uses"`      // as created
	UsesLeft   int       `json:"uses_left"` // decremented by each redeem
	ExpiresAt  time.Time `json:"expires_at"`
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
}

// Credential is one device's MQTT account.
type Credential struct {
	Device string `json:"device"`
	// Hash is bcrypt of the password: what the embedded broker checks.
	Hash string `json:"bcrypt"`
	// MosquittoHash is the same password in Mosquitto's own password-file format (PBKDF2-SHA512,
	// "$7$"), computed at redeem, the only moment the clear password exists here.
	MosquittoHash string    `json:"mosquitto_hash"`
	Enrollment    string    `json:"enrollment"`
	Group         string    `json:"group,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	Revoked       bool      `json:"revoked,omitempty"`
	RevokedAt     time.Time `json:"revoked_at,omitzero"`
	RevokedBy     string    `json:"revoked_by,omitempty"`
}

// Config of the service.
type Config struct {
	Store store.Store
	// URL is the control plane's HTTP base URL as devices reach it (written into tokens).
	URL string
	// RootSHA256 is the trust root's fingerprint written into tokens ("" without a trust document).
	RootSHA256 string
	Logger     *slog.Logger
	// Changed, when set, is called after credentials change (enroll, revoke), e.g. to rewrite
	// the Mosquitto files.
	Changed func(context.Context)
	// Now is the clock (tests); time.Now when nil.
	Now func() time.Time
}

// Service issues, redeems and revokes.
type Service struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	verified map[string][32]byte // device -> SHA-256 of the password bcrypt last accepted
}

// New returns the service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, log: cfg.Logger, verified: map[string][32]byte{}}
}

// SetURL sets the control plane's URL written into new tokens (known once HTTP listens).
func (s *Service) SetURL(u string) {
	s.mu.Lock()
	s.cfg.URL = u
	s.mu.Unlock()
}

// PasswordCost is the bcrypt cost of device passwords. A slow hash protects guessable
// passwords; these are 32 random bytes, so the hash only has to be one-way, and a low cost keeps
// a fleet reconnecting after a restart from queueing on bcrypt: cost 6 is 16 times cheaper than
// the default 10 (BenchmarkCheck on 2 heavily shared cores: 7-24 ms per first check at cost 6,
// 207-288 ms at cost 10; about 5 µs once remembered).
const PasswordCost = 6

// MaxUses bounds one token, so a typo (uses: 1e9) does not make a fleet-wide standing credential.
const MaxUses = 100000

// Create stores a new enrollment and returns its token string. uses >= 1; expiresIn > 0.
func (s *Service) Create(ctx context.Context, group string, uses int, expiresIn time.Duration, by string) (string, Enrollment, error) {
	if group != "" {
		if err := fleet.CheckGroup(group); err != nil {
			return "", Enrollment{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
	}
	if uses < 1 || uses > MaxUses {
		return "", Enrollment{}, fmt.Errorf("%w: uses must be 1 to %d", ErrBadRequest, MaxUses)
	}
	if expiresIn <= 0 || expiresIn > 366*24*time.Hour {
		return "", Enrollment{}, fmt.Errorf("%w: expires_in must be a positive duration up to 8784h (e.g. \"24h\")", ErrBadRequest)
	}
	id, err := randomString(9)
	if err != nil {
		return "", Enrollment{}, err
	}
	secret, err := randomString(32)
	if err != nil {
		return "", Enrollment{}, err
	}
	now := s.cfg.Now().UTC()
	e := Enrollment{ID: "en-" + id, SecretHash: hashHex(secret), Group: group, Uses: uses, UsesLeft: uses,
		ExpiresAt: now.Add(expiresIn), CreatedBy: by, CreatedAt: now}
	if err := s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		return store.PutJSON(tx, TokensBucket, e.ID, e)
	}); err != nil {
		return "", Enrollment{}, fmt.Errorf("store enrollment: %w", err)
	}
	s.mu.Lock()
	u := s.cfg.URL
	s.mu.Unlock()
	tok := wenroll.Token{URL: u, ID: e.ID, Secret: secret, RootSHA256: s.cfg.RootSHA256}
	return tok.Encode(), e, nil
}

// Redeemed is what a successful redeem gives the device.
type Redeemed struct {
	Device, Group, Password string
}

// Redeem checks the token and, in one store transaction, takes one use and creates the device's
// credentials. wanted is the device id the device asks for ("" = assign one). Every outcome,
// refused or not, goes to the audit log; from is the caller's address.
func (s *Service) Redeem(ctx context.Context, token, wanted, from string) (Redeemed, error) {
	r, enID, err := s.redeem(ctx, token, wanted, from)
	if err != nil {
		// The refused attempt is recorded on its own: the redeem transaction was rolled back.
		who := "enrollment " + enID
		if enID == "" {
			who = "enrollment (unknown token)"
		}
		e := audit.Entry{At: s.cfg.Now().UTC(), Who: who, Action: "POST " + wenroll.Path, Target: wanted, From: from, Outcome: "refused", Reason: err.Error()}
		if aerr := audit.Record(context.WithoutCancel(ctx), s.cfg.Store, e); aerr != nil {
			s.log.Error("audit entry not recorded", "action", e.Action, "err", aerr)
		}
		s.log.Warn("enrollment refused", "enrollment", enID, "device", wanted, "from", from, "err", err)
		return Redeemed{}, err
	}
	s.log.Info("device enrolled", "enrollment", enID, "device", r.Device, "group", r.Group)
	if s.cfg.Changed != nil {
		s.cfg.Changed(ctx)
	}
	return r, nil
}

func (s *Service) redeem(ctx context.Context, token, wanted, from string) (Redeemed, string, error) {
	tok, err := wenroll.Parse(token)
	if err != nil {
		return Redeemed{}, "", fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if wanted != "" {
		if err := wire.CheckDeviceID(wanted); err != nil {
			return Redeemed{}, tok.ID, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
	}
	// The token is checked before hashing the new password: the route is public, and bcrypt's
	// cost must not be something anyone can make the control plane pay. The transaction below
	// checks again, atomically.
	if err := s.cfg.Store.View(ctx, func(tx store.Tx) error {
		_, err := s.usable(tx, tok)
		return err
	}); err != nil {
		return Redeemed{}, tok.ID, err
	}
	password, err := randomString(32)
	if err != nil {
		return Redeemed{}, tok.ID, err
	}
	bh, err := bcrypt.GenerateFromPassword([]byte(password), PasswordCost)
	if err != nil {
		return Redeemed{}, tok.ID, fmt.Errorf("hash device password: %w", err)
	}
	mh, err := MosquittoHash(password)
	if err != nil {
		return Redeemed{}, tok.ID, err
	}
	now := s.cfg.Now().UTC()
	var out Redeemed
	err = s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		e, err := s.usable(tx, tok)
		if err != nil {
			return err
		}
		dev := wanted
		if dev == "" {
			for range 8 {
				suffix, err := randomHex(5)
				if err != nil {
					return err
				}
				cand := "dev-" + suffix
				if _, err := tx.Get(CredentialsBucket, cand); errors.Is(err, store.ErrNotFound) {
					dev = cand
					break
				}
			}
			if dev == "" {
				return errors.New("could not assign a free device id")
			}
		}
		var old Credential
		switch err := store.GetJSON(tx, CredentialsBucket, dev, &old); {
		case err == nil && old.Revoked:
			return fmt.Errorf("%w: %s was revoked; enroll under another id", ErrRevoked, dev)
		case err == nil:
			return fmt.Errorf("%w: %s already has credentials (revoke them first, or pick another id)", ErrEnrolled, dev)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		e.UsesLeft--
		if err := store.PutJSON(tx, TokensBucket, e.ID, e); err != nil {
			return err
		}
		c := Credential{Device: dev, Hash: string(bh), MosquittoHash: mh, Enrollment: e.ID, Group: e.Group, CreatedAt: now}
		if err := store.PutJSON(tx, CredentialsBucket, dev, c); err != nil {
			return err
		}
		out = Redeemed{Device: dev, Group: e.Group, Password: password}
		return audit.Append(tx, audit.Entry{At: now, Who: "enrollment " + e.ID, Action: "POST " + wenroll.Path, Target: dev, From: from, Outcome: "enrolled",
			Reason: fmt.Sprintf("group %q, %d uses left", e.Group, e.UsesLeft)})
	})
	if err != nil {
		return Redeemed{}, tok.ID, err
	}
	s.mu.Lock()
	delete(s.verified, out.Device)
	s.mu.Unlock()
	return out, tok.ID, nil
}

// usable returns the token's enrollment if the secret matches, it has not expired and has uses
// left.
func (s *Service) usable(tx store.Tx, tok wenroll.Token) (Enrollment, error) {
	var e Enrollment
	if err := store.GetJSON(tx, TokensBucket, tok.ID, &e); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return e, ErrInvalidToken
		}
		return e, err
	}
	want := sha256.Sum256([]byte(tok.Secret))
	have, _ := hex.DecodeString(e.SecretHash)
	if subtle.ConstantTimeCompare(want[:], have) != 1 {
		return e, ErrInvalidToken
	}
	if !s.cfg.Now().Before(e.ExpiresAt) {
		return e, fmt.Errorf("%w at %s: ask the administrator for a new one", ErrExpired, e.ExpiresAt.Format(time.RFC3339))
	}
	if e.UsesLeft <= 0 {
		return e, fmt.Errorf("%w (it allowed %d): ask the administrator for a new one", ErrUsedUp, e.Uses)
	}
	return e, nil
}

// Revoke marks a device's credentials revoked; the caller disconnects its live session.
func (s *Service) Revoke(ctx context.Context, device, by string) error {
	now := s.cfg.Now().UTC()
	err := s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		var c Credential
		if err := store.GetJSON(tx, CredentialsBucket, device, &c); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				// A device that connected without credentials (before they were required) is
				// revoked too: a tombstone refuses it from now on.
				c = Credential{Device: device, CreatedAt: now}
			} else {
				return err
			}
		}
		if c.Revoked {
			return nil
		}
		c.Revoked, c.RevokedAt, c.RevokedBy = true, now, by
		c.Hash, c.MosquittoHash = "", ""
		return store.PutJSON(tx, CredentialsBucket, device, c)
	})
	if err != nil {
		return fmt.Errorf("revoke %s: %w", device, err)
	}
	s.mu.Lock()
	delete(s.verified, device)
	s.mu.Unlock()
	s.log.Info("device credentials revoked", "device", device, "by", by)
	if s.cfg.Changed != nil {
		s.cfg.Changed(ctx)
	}
	return nil
}

// Verdict is the credential check's answer.
type Verdict int

const (
	// NoCredentials: the device id has never enrolled (allowed only when credentials are not
	// required).
	NoCredentials Verdict = iota
	// Accepted: username = device id and the password matches unrevoked credentials.
	Accepted
	// Refused: wrong username or password, or revoked.
	Refused
)

// Check decides a CONNECT. A device id that has credentials must present them, whether or not
// credentials are required for everyone, so an enrolled id cannot be taken over by a client
// without its password, and a revoked one stays out.
func (s *Service) Check(ctx context.Context, device, username string, password []byte) Verdict {
	var c Credential
	err := s.cfg.Store.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, CredentialsBucket, device, &c) })
	switch {
	case errors.Is(err, store.ErrNotFound):
		return NoCredentials
	case err != nil:
		s.log.Error("credential lookup failed; refusing the connection", "device", device, "err", err)
		return Refused
	case c.Revoked || c.Hash == "" || username != device:
		return Refused
	}
	// bcrypt costs tens of milliseconds; a fleet reconnecting after a broker restart would pay it
	// per device, so a password bcrypt accepted once is remembered (as a hash) until revoked.
	sum := sha256.Sum256(password)
	s.mu.Lock()
	known, ok := s.verified[device]
	s.mu.Unlock()
	if ok && subtle.ConstantTimeCompare(known[:], sum[:]) == 1 {
		return Accepted
	}
	if bcrypt.CompareHashAndPassword([]byte(c.Hash), password) != nil {
		return Refused
	}
	s.mu.Lock()
	s.verified[device] = sum
	s.mu.Unlock()
	return Accepted
}

// Credentials lists every device's credentials, sorted by device id.
func (s *Service) Credentials(ctx context.Context) ([]Credential, error) {
	return ListCredentials(ctx, s.cfg.Store)
}

// ListCredentials reads every credential from st.
func ListCredentials(ctx context.Context, st store.Store) ([]Credential, error) {
	var out []Credential
	err := st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(CredentialsBucket, "", func(_ string, v []byte) error {
			var c Credential
			if err := jsonUnmarshal(v, &c); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out, err
}

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func hashHex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
