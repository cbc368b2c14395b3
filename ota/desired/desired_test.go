package desired

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/ota/sign"
)

func TestCheck(t *testing.T) {
	ctx := context.Background()
	control, _ := sign.GenerateKey(sign.ECDSAP256)
	other, _ := sign.GenerateKey(sign.ECDSAP256)
	keys := []*sign.Verifier{control.Verifier()}
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	bundle := strings.Repeat("ab", 32)
	mk := func(s *sign.Signer, gen uint64, issued time.Time, ttl time.Duration, device string, models map[string]Model) []byte {
		if models == nil {
			models = map[string]Model{"wake": {Bundle: bundle, Name: "wake", Version: "1.0.0"}}
		}
		env, err := Sign(ctx, s, State{Device: device, Generation: gen, IssuedAt: issued, ExpiresAt: issued.Add(ttl), Models: models})
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	g5 := mk(control, 5, t0, DefaultTTL, "dev-1", nil)
	st5, v, err := Check(ctx, "dev-1", g5, Accepted{}, t0, keys)
	if err != nil || v != Apply {
		t.Fatalf("first: %v %v", v, err)
	}
	acc := Accept(Accepted{}, st5, g5)

	cases := []struct {
		name    string
		env     []byte
		now     time.Time
		want    error
		verdict Verdict
	}{
		{"same bytes re-sent on reconnect", g5, t0, nil, Same},
		{"newer generation", mk(control, 6, t0.Add(time.Hour), DefaultTTL, "dev-1", nil), t0, nil, Apply},
		{"older generation (replay)", mk(control, 4, t0, DefaultTTL, "dev-1", nil), t0, ErrReplay, 0},
		{"same generation other bytes", mk(control, 5, t0.Add(time.Second), DefaultTTL, "dev-1", nil), t0, ErrConflict, 0},
		{"signed by another key", mk(other, 9, t0, DefaultTTL, "dev-1", nil), t0, sign.ErrUnknownKey, 0},
		{"expired by device clock", mk(control, 7, t0, time.Hour, "dev-1", nil), t0.Add(2 * time.Hour), ErrExpired, 0},
		// The device booted in 1970 but has accepted a document issued at t0: still expired.
		{"expired though the clock is in 1970", mk(control, 7, t0.Add(-2*time.Hour), time.Hour, "dev-1", nil), time.Unix(0, 0), ErrExpired, 0},
		{"for another device", mk(control, 8, t0, DefaultTTL, "dev-2", nil), t0, ErrDevice, 0},
		{"bad bundle id", mk(control, 8, t0, DefaultTTL, "dev-1", map[string]Model{"x": {Bundle: "short"}}), t0, ErrMalformed, 0},
		{"garbage", []byte("{not an envelope"), t0, sign.ErrMalformed, 0},
		{"unsigned", []byte(`{"payloadType":"` + PayloadType + `","payload":"e30=","signatures":[]}`), t0, sign.ErrUnknownKey, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, v, err := Check(ctx, "dev-1", c.env, acc, c.now, keys)
			if c.want == nil {
				if err != nil || v != c.verdict {
					t.Fatalf("verdict %v err %v, want %v", v, err, c.verdict)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	if err := d.UnmarshalJSON([]byte(`"1m30s"`)); err != nil || time.Duration(d) != 90*time.Second {
		t.Fatal(d, err)
	}
	for _, bad := range []string{`"-1s"`, `"soon"`, `30`} {
		if err := d.UnmarshalJSON([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
