package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/internal/atomicfile"
	wenroll "github.com/edgefleet/edgefleet/internal/enroll"
	"github.com/edgefleet/edgefleet/ota/trust"
)

// CredentialsFile holds what enrollment gave this device (0600): its id, MQTT credentials, broker
// and prefix. It is written last, after the trust document, so its presence means enrolled.
const CredentialsFile = "credentials.json"

// Credentials are an enrolled device's identity at the broker.
type Credentials struct {
	Device     string    `json:"device"`
	Group      string    `json:"group,omitempty"`
	Username   string    `json:"username"`
	Password   string    `json:"password"`
	Broker     string    `json:"broker,omitempty"`
	Prefix     string    `json:"prefix,omitempty"`
	Enrollment string    `json:"enrollment"`
	EnrolledAt time.Time `json:"enrolled_at"`
	// Trusted says the trust document (DATA/trust.json) came with enrollment and was checked
	// against the token's root fingerprint: keys come from it, not from flags.
	Trusted bool `json:"trusted,omitempty"`
}

// ErrRootMismatch is returned when the trust document a control plane hands out is not signed by
// the root whose fingerprint the enrollment token carries.
var ErrRootMismatch = errors.New("trust document does not match the enrollment token's root key")

// LoadCredentials reads DATA/credentials.json; ok is false when the device is not enrolled.
func LoadCredentials(dataDir string) (Credentials, bool, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, CredentialsFile))
	if errors.Is(err, os.ErrNotExist) {
		return Credentials{}, false, nil
	}
	if err != nil {
		return Credentials{}, false, fmt.Errorf("read credentials: %w", err)
	}
	var c Credentials
	if err := json.Unmarshal(b, &c); err != nil || c.Device == "" {
		return Credentials{}, false, fmt.Errorf("credentials %s are corrupt: move the file away and enroll again with a new token", filepath.Join(dataDir, CredentialsFile))
	}
	return c, true, nil
}

// Enroll redeems token at the control plane it names and persists the answer in dataDir: the
// trust document (checked against the token's root fingerprint, refused loudly on mismatch) and
// the credentials. wantedID may be empty (the control plane assigns one). On a data folder that
// is already enrolled it does nothing and says so.
func Enroll(ctx context.Context, dataDir, token, wantedID string, log *slog.Logger) (Credentials, error) {
	if c, ok, err := LoadCredentials(dataDir); err != nil || ok {
		if ok {
			log.Info("already enrolled; --enroll ignored", "device", c.Device, "enrollment", c.Enrollment)
		}
		return c, err
	}
	tok, err := wenroll.Parse(token)
	if err != nil {
		return Credentials{}, fmt.Errorf("--enroll: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return Credentials{}, fmt.Errorf("create data folder: %w", err)
	}
	body, _ := json.Marshal(wenroll.Request{Token: token, Device: wantedID})
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(tok.URL, "/")+wenroll.Path, bytes.NewReader(body))
	if err != nil {
		return Credentials{}, fmt.Errorf("enroll: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Credentials{}, fmt.Errorf("enroll at %s: %w", tok.URL, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Credentials{}, fmt.Errorf("enroll at %s: read answer: %w", tok.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, Code string }
		if json.Unmarshal(rb, &e) == nil && e.Error != "" {
			return Credentials{}, fmt.Errorf("enrollment refused by %s (%d %s): %s", tok.URL, resp.StatusCode, e.Code, e.Error)
		}
		return Credentials{}, fmt.Errorf("enrollment refused by %s: HTTP %d", tok.URL, resp.StatusCode)
	}
	var ans wenroll.Response
	if err := json.Unmarshal(rb, &ans); err != nil {
		return Credentials{}, fmt.Errorf("enroll: answer is not JSON: %w", err)
	}
	if ans.Device == "" || ans.Password == "" || (wantedID != "" && ans.Device != wantedID) {
		return Credentials{}, fmt.Errorf("enroll: the control plane's answer is incomplete or for another device (%q)", ans.Device)
	}
	c := Credentials{Device: ans.Device, Group: ans.Group, Username: ans.Username, Password: ans.Password, Broker: ans.Broker,
		Prefix: ans.Prefix, Enrollment: tok.ID, EnrolledAt: time.Now().UTC()}
	if tok.RootSHA256 != "" {
		if len(ans.TrustDocument) == 0 {
			return Credentials{}, fmt.Errorf("%w: the token names root %s but the control plane sent no trust document", ErrRootMismatch, tok.RootSHA256[:12])
		}
		st, err := trust.NewStoreFromFingerprint(tok.RootSHA256)
		if err != nil {
			return Credentials{}, fmt.Errorf("enroll: %w", err)
		}
		if _, err := st.Accept(ctx, ans.TrustDocument); err != nil {
			log.Error("REFUSED the control plane's trust document: it is not signed by the root key the enrollment token names; nothing was saved",
				"root_sha256", tok.RootSHA256, "control_plane", tok.URL, "err", err)
			return Credentials{}, fmt.Errorf("%w (%v): nothing saved; check that the token comes from this control plane", ErrRootMismatch, err)
		}
		if err := atomicfile.WriteFile(filepath.Join(dataDir, trustFile), st.Envelope(), 0o600); err != nil {
			return Credentials{}, fmt.Errorf("persist trust document: %w", err)
		}
		c.Trusted = true
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(dataDir, CredentialsFile), b, 0o600); err != nil {
		return Credentials{}, fmt.Errorf("persist credentials: %w", err)
	}
	log.Info("enrolled", "device", c.Device, "group", c.Group, "broker", c.Broker, "trust_document", c.Trusted)
	return c, nil
}
