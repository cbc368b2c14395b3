package sign

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

const testType = "application/vnd.edgefleet.test+json"

func TestEnvelopeRoundTrip(t *testing.T) {
	ctx := context.Background()
	payload := []byte(`{"generation":7}`)
	for _, alg := range []Algorithm{ECDSAP256, Ed25519} {
		t.Run(string(alg), func(t *testing.T) {
			s := mustKey(t, alg)
			env, err := SignEnvelope(ctx, s, testType, payload)
			if err != nil {
				t.Fatal(err)
			}
			// The wire shape is the standard DSSE envelope, readable by any DSSE tool.
			var raw struct {
				PayloadType string `json:"payloadType"`
				Payload     string `json:"payload"`
				Signatures  []struct {
					KeyID string `json:"keyid"`
					Sig   string `json:"sig"`
				} `json:"signatures"`
			}
			if err := json.Unmarshal(env, &raw); err != nil {
				t.Fatal(err)
			}
			if raw.PayloadType != testType || raw.Payload != base64.StdEncoding.EncodeToString(payload) ||
				len(raw.Signatures) != 1 || raw.Signatures[0].KeyID != s.KeyID() {
				t.Fatalf("unexpected envelope: %s", env)
			}
			got, id, err := OpenEnvelope(ctx, env, testType, mustKey(t, alg).Verifier(), s.Verifier())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) || id != s.KeyID() {
				t.Fatalf("OpenEnvelope = %q, %s", got, id)
			}
		})
	}
}

func TestEnvelopeRefusals(t *testing.T) {
	ctx := context.Background()
	s := mustKey(t, ECDSAP256)
	other := mustKey(t, ECDSAP256)
	payload := []byte(`{"generation":7}`)
	env, err := SignEnvelope(ctx, s, testType, payload)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(env, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		out, _ := json.Marshal(m)
		return out
	}
	sigs := func(m map[string]any) []any { return m["signatures"].([]any) }
	tests := []struct {
		name    string
		env     []byte
		typ     string
		vs      []*Verifier
		wantErr error
	}{
		{"wrong payload type", env, "application/vnd.edgefleet.trust+json", []*Verifier{s.Verifier()}, ErrPayloadType},
		{"payload type edited", edit(func(m map[string]any) { m["payloadType"] = "x" }), "x", []*Verifier{s.Verifier()}, ErrSignature},
		{"payload edited", edit(func(m map[string]any) {
			m["payload"] = base64.StdEncoding.EncodeToString([]byte(`{"generation":8}`))
		}), testType, []*Verifier{s.Verifier()}, ErrSignature},
		{"signed by another key", env, testType, []*Verifier{other.Verifier()}, ErrUnknownKey},
		{"keyid forged to ours", edit(func(m map[string]any) {
			sigs(m)[0].(map[string]any)["keyid"] = other.KeyID()
		}), testType, []*Verifier{other.Verifier()}, ErrSignature},
		{"no verifiers", env, testType, nil, ErrUnknownKey},
		{"no signatures", edit(func(m map[string]any) { m["signatures"] = []any{} }), testType, []*Verifier{s.Verifier()}, ErrUnknownKey},
		{"signature not base64", edit(func(m map[string]any) {
			sigs(m)[0].(map[string]any)["sig"] = "%%%"
		}), testType, []*Verifier{s.Verifier()}, ErrMalformed},
		{"too many signatures", edit(func(m map[string]any) {
			m["signatures"] = slices.Repeat(sigs(m), maxEnvelopeSignatures+1)
		}), testType, []*Verifier{s.Verifier()}, ErrTooLarge},
		{"not JSON", []byte("{"), testType, []*Verifier{s.Verifier()}, ErrMalformed},
		{"oversize", append(bytes.Clone(env), bytes.Repeat([]byte(" "), MaxEnvelopeSize)...), testType, []*Verifier{s.Verifier()}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := OpenEnvelope(ctx, tt.env, tt.typ, tt.vs...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("OpenEnvelope = %v, want %v", err, tt.wantErr)
			}
			if got != nil {
				t.Fatalf("payload returned with an error: %q", got)
			}
		})
	}
	if _, err := SignEnvelope(ctx, s, testType, bytes.Repeat([]byte("x"), MaxEnvelopeSize)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("signing an oversize payload: %v, want ErrTooLarge", err)
	}
}

func TestEnvelopeMultiSigner(t *testing.T) {
	ctx := context.Background()
	a, b, c := mustKey(t, ECDSAP256), mustKey(t, Ed25519), mustKey(t, ECDSAP256)
	env, err := SignEnvelopeWith(ctx, testType, []byte("p"), a, b, a)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(env), `"keyid"`); n != 2 {
		t.Fatalf("%d signatures, want 2 (a duplicate signer signs once)", n)
	}
	_, ids, err := OpenEnvelopeAll(ctx, env, testType, c.Verifier(), b.Verifier(), a.Verifier(), a.Verifier())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{a.KeyID(), b.KeyID()}; !slices.Equal(ids, want) {
		t.Fatalf("ids %v, want %v", ids, want)
	}
	_, ids, err = OpenEnvelopeAll(ctx, env, testType, b.Verifier())
	if err != nil || !slices.Equal(ids, []string{b.KeyID()}) {
		t.Fatalf("one of two keys known: %v, %v", ids, err)
	}
}

// TestEnvelopeEmptyKeyID: DSSE lets keyid be empty (cosign attest-blob writes it so); such a
// signature is tried against every key given.
func TestEnvelopeEmptyKeyID(t *testing.T) {
	ctx := context.Background()
	s := mustKey(t, ECDSAP256)
	env, _ := SignEnvelope(ctx, s, testType, []byte("p"))
	env = bytes.Replace(env, []byte(fmt.Sprintf(`"keyid":%q`, s.KeyID())), []byte(`"keyid":""`), 1)
	_, id, err := OpenEnvelope(ctx, env, testType, mustKey(t, ECDSAP256).Verifier(), s.Verifier())
	if err != nil || id != s.KeyID() {
		t.Fatalf("OpenEnvelope = %s, %v", id, err)
	}
}
