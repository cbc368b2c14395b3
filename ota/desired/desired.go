// Package desired is the signed desired state of one device: for each model name, which bundle it
// should run and under which rollout, with a generation that only grows, an issue time and an
// expiry. The control plane signs it with its control key as a DSSE envelope; the agent checks it
// here before it acts on it (DESIGN.md "Trust"). Pure logic: no MQTT, no disk, no clock of its own.
package desired

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgefleet/edgefleet/ota/sign"
)

// PayloadType marks a desired state inside a DSSE envelope, so it is never read as anything else.
const PayloadType = "application/vnd.edgefleet.desired+json"

// DefaultTTL is how long a desired state may be accepted after it was issued.
const DefaultTTL = 7 * 24 * time.Hour

// Model is the assignment for one model name.
type Model struct {
	// Bundle is the bundle id: the hex SHA-256 of its manifest.json, so it also pins the manifest.
	Bundle  string `json:"bundle"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Variant string `json:"variant,omitempty"`
	Size    int64  `json:"size,omitempty"`
	Rollout string `json:"rollout,omitempty"`
	// Bake is how long the agent watches a new model before committing it.
	Bake Duration `json:"bake,omitempty"`
	// Carousel tells the device that the control plane broadcasts this bundle to its wave: listen
	// on the carousel first and pull only what it missed.
	Carousel bool `json:"carousel,omitempty"`
	// Key is set for an encrypted bundle: its content key wrapped (ota/seal) to Recipient, the
	// device's own age recipient. The signature proves who sent it; only the device can open it.
	Key       string `json:"key,omitempty"`
	Recipient string `json:"recipient,omitempty"`
}

// State is the document.
type State struct {
	Device     string           `json:"device"`
	Generation uint64           `json:"generation"`
	IssuedAt   time.Time        `json:"issued_at"`
	ExpiresAt  time.Time        `json:"expires_at"`
	Models     map[string]Model `json:"models"`
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// Sign encodes and signs a desired state.
func Sign(ctx context.Context, s *sign.Signer, st State) ([]byte, error) {
	if st.Models == nil {
		st.Models = map[string]Model{}
	}
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode desired state: %w", err)
	}
	return sign.SignEnvelope(ctx, s, PayloadType, payload)
}

// Errors a device reports when it refuses a desired state.
var (
	ErrReplay    = errors.New("desired state is older than the one already accepted (replay)")
	ErrConflict  = errors.New("desired state has the accepted generation but different content")
	ErrExpired   = errors.New("desired state has expired (freeze)")
	ErrDevice    = errors.New("desired state is for another device")
	ErrMalformed = errors.New("malformed desired state")
)

// Accepted is what a device remembers of the last desired state it accepted.
type Accepted struct {
	Generation uint64    `json:"generation"`
	Envelope   []byte    `json:"envelope,omitempty"`
	State      *State    `json:"state,omitempty"`
	NewestSeen time.Time `json:"newest_issued_at"` // latest issued-at ever accepted
}

// Verdict is the outcome of a check that did not fail.
type Verdict int

const (
	// Apply means: a new desired state, act on it.
	Apply Verdict = iota
	// Same means: the accepted one re-sent (as on every reconnect); ignore quietly.
	Same
)

// Check verifies envelope against the control keys and the device's history. now is the device
// clock; the effective time is the later of it and the newest issue time already accepted, since
// devices without a battery-backed clock boot in 1970 and must still refuse expired documents.
func Check(ctx context.Context, device string, envelope []byte, prev Accepted, now time.Time, control []*sign.Verifier) (State, Verdict, error) {
	if prev.Generation > 0 && bytes.Equal(envelope, prev.Envelope) {
		return *prev.State, Same, nil
	}
	payload, _, err := sign.OpenEnvelope(ctx, envelope, PayloadType, control...)
	if err != nil {
		return State{}, 0, fmt.Errorf("verify desired state: %w", err)
	}
	var st State
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return State{}, 0, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if st.Device != device {
		return State{}, 0, fmt.Errorf("%w: for %q, this is %q", ErrDevice, st.Device, device)
	}
	if st.Generation == 0 || st.ExpiresAt.IsZero() || st.IssuedAt.IsZero() || !st.ExpiresAt.After(st.IssuedAt) {
		return State{}, 0, fmt.Errorf("%w: generation, issued_at and a later expires_at are required", ErrMalformed)
	}
	for name, m := range st.Models {
		if name == "" || m.Bundle == "" || len(m.Bundle) != 64 {
			return State{}, 0, fmt.Errorf("%w: model %q needs a 64-hex bundle id", ErrMalformed, name)
		}
	}
	switch {
	case st.Generation < prev.Generation:
		return State{}, 0, fmt.Errorf("%w: generation %d, accepted %d", ErrReplay, st.Generation, prev.Generation)
	case st.Generation == prev.Generation:
		return State{}, 0, fmt.Errorf("%w: generation %d", ErrConflict, st.Generation)
	}
	eff := now
	if prev.NewestSeen.After(eff) {
		eff = prev.NewestSeen
	}
	if !eff.Before(st.ExpiresAt) {
		return State{}, 0, fmt.Errorf("%w: expired at %s, device time is %s", ErrExpired, st.ExpiresAt.UTC().Format(time.RFC3339), eff.UTC().Format(time.RFC3339))
	}
	return st, Apply, nil
}

// Accept returns the history after accepting st from envelope.
func Accept(prev Accepted, st State, envelope []byte) Accepted {
	n := Accepted{Generation: st.Generation, Envelope: bytes.Clone(envelope), State: &st, NewestSeen: prev.NewestSeen}
	if st.IssuedAt.After(n.NewestSeen) {
		n.NewestSeen = st.IssuedAt
	}
	return n
}
