// Package enroll is the wire contract of device enrollment, shared by the control plane (which
// issues and redeems tokens) and the agent (which redeems one): the token string and the redeem
// request and answer of POST /api/v1/enroll. It holds no secrets and keeps no state.
package enroll

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Prefix starts every token string; the number is the format version.
const Prefix = "ef1."

// Path is where a token is redeemed, relative to the control plane's URL.
const Path = "/api/v1/enroll"

// Token is what an enrollment token carries. The secret proves the holder may enroll; the root
// fingerprint lets the device check the trust document it receives, as kubeadm's join token
// carries its CA hash.
type Token struct {
	URL    string `json:"url"`    // the control plane's HTTP(S) base URL
	ID     string `json:"id"`     // the enrollment's id (not secret)
	Secret string `json:"secret"` // base64url, 32 random bytes
	// RootSHA256 is the fingerprint (hex SHA-256 of the DER public key, as sign.KeyID) of the
	// root key that signs trust documents; empty when the control plane runs without one.
	RootSHA256 string `json:"root_sha256,omitempty"`
}

// ErrToken is returned for a string that is not a well-formed token.
var ErrToken = errors.New("malformed enrollment token")

// Encode gives the token string: "ef1." + base64url(JSON).
func (t Token) Encode() string {
	b, _ := json.Marshal(t)
	return Prefix + base64.RawURLEncoding.EncodeToString(b)
}

// Parse reads a token string and checks its shape (not the secret: only the control plane can).
func Parse(s string) (Token, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), Prefix)
	if !ok {
		return Token{}, fmt.Errorf("%w: it must start with %q", ErrToken, Prefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrToken, err)
	}
	var t Token
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrToken, err)
	}
	u, err := url.Parse(t.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Token{}, fmt.Errorf("%w: control plane URL %q is not http(s)://host", ErrToken, t.URL)
	}
	if t.ID == "" || t.Secret == "" {
		return Token{}, fmt.Errorf("%w: id or secret missing", ErrToken)
	}
	if t.RootSHA256 != "" && !isHex64(t.RootSHA256) {
		return Token{}, fmt.Errorf("%w: root fingerprint is not 64 hex digits", ErrToken)
	}
	return t, nil
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Request is the body of POST /api/v1/enroll.
type Request struct {
	Token string `json:"token"`
	// Device is the id the device wants; empty lets the control plane assign one.
	Device string `json:"device,omitempty"`
}

// Response is the answer of a successful redeem: everything the device needs to join.
type Response struct {
	Device string `json:"device"`
	Group  string `json:"group,omitempty"`
	// Username and Password are the device's MQTT credentials (username = device id = client id).
	Username string `json:"username"`
	Password string `json:"password"`
	Broker   string `json:"broker,omitempty"` // the broker URL(s) as the control plane knows them
	Prefix   string `json:"prefix"`
	// ControlKey is the PEM public key that signs desired states; TrustDocument the root-signed
	// trust document (DSSE envelope), absent when the control plane has none.
	ControlKey    string          `json:"control_key"`
	TrustDocument json.RawMessage `json:"trust_document,omitempty"`
}
