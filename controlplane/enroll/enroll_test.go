package enroll

import (
	"context"
	"crypto/pbkdf2"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/audit"
	"github.com/edgefleet/edgefleet/controlplane/store"
	wenroll "github.com/edgefleet/edgefleet/internal/enroll"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newService(t testing.TB) (*Service, *clock, store.Store) {
	st := store.NewMemory()
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	fp := strings.Repeat("ab", 32)
	return New(Config{Store: st, URL: "http://cp.example:8080", RootSHA256: fp, Now: c.now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}), c, st
}

// TestRedeem: each way a redeem can go, in order, against one service.
func TestRedeem(t *testing.T) {
	ctx := context.Background()
	s, clk, st := newService(t)
	single, _, err := s.Create(ctx, "line-a", 1, time.Hour, "admin")
	if err != nil {
		t.Fatal(err)
	}
	multi, _, _ := s.Create(ctx, "", 2, time.Hour, "admin")
	short, _, _ := s.Create(ctx, "", 5, time.Minute, "admin")
	tok, err := wenroll.Parse(single)
	if err != nil || tok.URL != "http://cp.example:8080" || tok.RootSHA256 != strings.Repeat("ab", 32) {
		t.Fatalf("token %+v %v", tok, err)
	}
	forged := wenroll.Token{URL: tok.URL, ID: tok.ID, Secret: "not-the-secret"}.Encode()

	cases := []struct {
		name    string
		token   string
		device  string
		advance time.Duration
		want    error
	}{
		{"single-use token", single, "dev-a", 0, nil},
		{"single-use token again", single, "dev-b", 0, ErrUsedUp},
		{"forged secret", forged, "dev-b", 0, ErrInvalidToken},
		{"not a token", "hello", "dev-b", 0, ErrInvalidToken},
		{"id already enrolled", multi, "dev-a", 0, ErrEnrolled},
		{"bad device id", multi, "Dev_A", 0, ErrBadRequest},
		{"assigned id", multi, "", 0, nil},
		{"second use", multi, "dev-c", 0, nil},
		{"multi used up", multi, "dev-d", 0, ErrUsedUp},
		{"expired", short, "dev-e", 2 * time.Minute, ErrExpired},
	}
	for _, c := range cases {
		clk.t = clk.t.Add(c.advance)
		r, err := s.Redeem(ctx, c.token, c.device, "127.0.0.1")
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
			continue
		}
		if err == nil {
			if c.device != "" && r.Device != c.device || r.Device == "" || len(r.Password) < 40 {
				t.Errorf("%s: %+v", c.name, r)
			}
			if got := s.Check(ctx, r.Device, r.Device, []byte(r.Password)); got != Accepted {
				t.Errorf("%s: own credentials: %v", c.name, got)
			}
		}
	}
	// The group travels with the credential; the failures are audited.
	creds, _ := s.Credentials(ctx)
	groups := map[string]string{}
	for _, c := range creds {
		groups[c.Device] = c.Group
	}
	if g, ok := groups["dev-a"]; len(creds) != 3 || !ok || g != "line-a" {
		t.Fatalf("credentials %+v", creds)
	}
	es, _ := audit.List(ctx, st, time.Time{}, 0)
	var refused, enrolled int
	for _, e := range es {
		switch e.Outcome {
		case "refused":
			refused++
		case "enrolled":
			enrolled++
		}
	}
	if refused != 7 || enrolled != 3 {
		t.Errorf("audit: %d refused, %d enrolled, want 7 and 3", refused, enrolled)
	}
}

func TestCheckAndRevoke(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newService(t)
	tok, _, _ := s.Create(ctx, "", 2, time.Hour, "admin")
	a, _ := s.Redeem(ctx, tok, "dev-a", "")
	b, _ := s.Redeem(ctx, tok, "dev-b", "")
	cases := []struct {
		name, id, user, pass string
		want                 Verdict
	}{
		{"own", "dev-a", "dev-a", a.Password, Accepted},
		{"own again (cached)", "dev-a", "dev-a", a.Password, Accepted},
		{"wrong password", "dev-a", "dev-a", "guess", Refused},
		{"B's password as A", "dev-a", "dev-a", b.Password, Refused},
		{"username not the client id", "dev-a", "dev-b", a.Password, Refused},
		{"A's credentials under B's id", "dev-b", "dev-a", a.Password, Refused},
		{"no password for an enrolled id", "dev-a", "", "", Refused},
		{"never enrolled", "dev-z", "", "", NoCredentials},
	}
	for _, c := range cases {
		if got := s.Check(ctx, c.id, c.user, []byte(c.pass)); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if err := s.Revoke(ctx, "dev-a", "admin"); err != nil {
		t.Fatal(err)
	}
	if got := s.Check(ctx, "dev-a", "dev-a", []byte(a.Password)); got != Refused {
		t.Errorf("revoked device: %v", got)
	}
	if _, err := s.Redeem(ctx, tok, "dev-a", ""); !errors.Is(err, ErrRevoked) && !errors.Is(err, ErrUsedUp) {
		t.Errorf("re-enroll of a revoked id: %v", err)
	}
	if err := s.Revoke(ctx, "dev-z", "admin"); err != nil {
		t.Fatal(err)
	}
	if got := s.Check(ctx, "dev-z", "", nil); got != Refused {
		t.Errorf("revoked never-enrolled id: %v", got)
	}
}

// TestMosquittoHash: the entry has Mosquitto's "$7$" shape and re-derives from the password with
// the standard PBKDF2 (the real-broker check is in controlplane's enrollment e2e test).
func TestMosquittoHash(t *testing.T) {
	h, err := MosquittoHash("secret")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(h, "$")
	if len(parts) != 5 || parts[1] != "7" || parts[2] != "101" {
		t.Fatalf("hash %q", h)
	}
	salt, _ := base64.StdEncoding.DecodeString(parts[3])
	want, _ := base64.StdEncoding.DecodeString(parts[4])
	got, _ := pbkdf2.Key(sha512.New, "secret", salt, 101, 64)
	if len(salt) != 12 || string(got) != string(want) {
		t.Fatal("hash does not re-derive")
	}
}

// TestMosquittoACLMatchesShippedConfig: the ACL the generator writes grants exactly what the
// example in packaging/mosquitto/mosquitto.conf documents (and TestShippedConfigRuns tests).
func TestMosquittoACLMatchesShippedConfig(t *testing.T) {
	conf, err := os.ReadFile(filepath.Join("..", "..", "packaging", "mosquitto", "mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, l := range strings.Split(string(conf), "\n") {
		f := strings.Fields(strings.TrimPrefix(l, "#"))
		if len(f) == 3 && (f[0] == "pattern" || f[0] == "topic") {
			documented[strings.Join(f, " ")] = true
		}
	}
	generated := map[string]bool{}
	for _, l := range strings.Split(MosquittoACL(MosquittoOptions{}), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && (f[0] == "pattern" || f[0] == "topic") {
			generated[strings.Join(f, " ")] = true
		}
	}
	if len(generated) < 10 || !maps.Equal(documented, generated) {
		t.Errorf("generated ACL differs from the shipped config's example:\ngenerated %v\ndocumented %v", generated, documented)
	}
}

// BenchmarkCheck: one CONNECT's credential check, the first after a restart (bcrypt) and later
// ones (remembered).
func BenchmarkCheck(b *testing.B) {
	ctx := context.Background()
	s, _, _ := newService(b)
	tok, _, _ := s.Create(ctx, "", 1, time.Hour, "admin")
	r, err := s.Redeem(ctx, tok, "dev-a", "")
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		forget bool
	}{{"first", true}, {"remembered", false}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if c.forget {
					s.mu.Lock()
					clear(s.verified)
					s.mu.Unlock()
				}
				if s.Check(ctx, "dev-a", "dev-a", []byte(r.Password)) != Accepted {
					b.Fatal("refused")
				}
			}
		})
	}
}
