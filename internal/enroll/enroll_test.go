package enroll

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestTokenRoundTripAndRefusals(t *testing.T) {
	good := Token{URL: "https://cp.example:8080", ID: "en-1", Secret: "s3cr3t", RootSHA256: strings.Repeat("0f", 32)}
	got, err := Parse(good.Encode())
	if err != nil || got != good {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if _, err := Parse("  " + Token{URL: "http://127.0.0.1:8080", ID: "x", Secret: "y"}.Encode() + "\n"); err != nil {
		t.Errorf("token without root, with blanks around it: %v", err)
	}
	raw := func(s string) string { return Prefix + base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for name, s := range map[string]string{
		"no prefix":      strings.TrimPrefix(good.Encode(), Prefix),
		"not base64":     Prefix + "!!!",
		"not JSON":       raw("hello"),
		"unknown field":  raw(`{"url":"http://a","id":"x","secret":"y","extra":1}`),
		"ftp URL":        raw(`{"url":"ftp://a","id":"x","secret":"y"}`),
		"no host":        raw(`{"url":"http://","id":"x","secret":"y"}`),
		"no secret":      raw(`{"url":"http://a","id":"x"}`),
		"short root":     raw(`{"url":"http://a","id":"x","secret":"y","root_sha256":"abcd"}`),
		"uppercase root": raw(`{"url":"http://a","id":"x","secret":"y","root_sha256":"` + strings.Repeat("AB", 32) + `"}`),
	} {
		if _, err := Parse(s); !errors.Is(err, ErrToken) {
			t.Errorf("%s: %v, want ErrToken", name, err)
		}
	}
}
