package spool

import (
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// The record layout is an on-disk format that outlives agent upgrades: a change must be a new
// version, not a silent edit. testdata/record-v1.golden pins version 1.
func TestRecordGolden(t *testing.T) {
	e := Entry{
		FirstSeq: 7, LastSeq: 12,
		Seqs:        []Range{{7, 7}, {9, 10}, {12, 12}},
		Kind:        "latency/model-a@3",
		Body:        []byte("histogram-bytes"),
		WindowStart: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		WindowEnd:   time.Date(2025, 3, 1, 12, 4, 0, 0, time.UTC),
	}
	got := hex.EncodeToString(encode(&e)) + "\n"
	const path = "testdata/record-v1.golden"
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("record encoding changed:\n got %s\nwant %s", got, want)
	}
	raw, _ := hex.DecodeString(strings.TrimSpace(string(want)))
	back, err := decode(7, raw, true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, e) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, e)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := encode(&Entry{FirstSeq: 3, LastSeq: 3, Seqs: []Range{{3, 3}}, Kind: "k", Body: []byte("b")})
	cases := []struct {
		name string
		key  uint64
		rec  []byte
	}{
		{"empty", 3, nil},
		{"short", 3, good[:3]},
		{"wrong key", 4, good},
		{"bit flip", 3, func() []byte { b := append([]byte(nil), good...); b[2] ^= 1; return b }()},
		{"no ranges", 3, encode(&Entry{Kind: "k"})},
		{"overlapping ranges", 3, encode(&Entry{Seqs: []Range{{3, 5}, {5, 6}}})},
	}
	for _, tc := range cases {
		if _, err := decode(tc.key, tc.rec, true); !errors.Is(err, errRecord) {
			t.Errorf("%s: %v, want errRecord", tc.name, err)
		}
	}
}
