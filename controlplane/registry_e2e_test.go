package controlplane_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/edgefleet/edgefleet/internal/fleettest"
)

// TestModelRegistryAPI: uploads are verified (signature, digests), duplicates of name@version with
// other content conflict, and lineage and stages are kept.
func TestModelRegistryAPI(t *testing.T) {
	fleettest.Models(t)
	k := fleettest.NewKeys(t)
	stranger := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	v1, id1 := fleettest.BuildBundle(t, k, "hello_deepa.onnx", "wake", "1.0.0")
	foreign, _ := fleettest.BuildBundle(t, stranger, "hello_deepa.onnx", "wake", "1.0.0")
	other, _ := fleettest.BuildBundle(t, k, "ocr_cls.onnx", "wake", "1.0.0") // same name@version, other content

	raw, _ := os.ReadFile(v1)
	tampered := bytes.Clone(raw)
	tampered[len(tampered)-2000] ^= 0xff // a byte inside the last payload
	truncated := raw[:len(raw)/2]
	cases := []struct {
		name string
		body []byte
		code int
	}{
		{"signed by an untrusted key", mustRead(t, foreign), 422},
		{"tampered payload byte", tampered, 422},
		{"truncated", truncated, 422},
		{"not a bundle", []byte("hello"), 422},
		{"good", raw, 201},
		{"same bundle again", raw, 200},
		{"same name@version, other content", mustRead(t, other), 409},
	}
	for _, c := range cases {
		code, body := cp.Do("POST", "/api/v1/bundles", bytes.NewReader(c.body), nil)
		if code != c.code {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.code)
		}
	}
	v2, id2 := fleettest.RebuildWith(t, k, v1, "1.1.0", nil)
	_ = v2
	cp.Push(v2)
	var view struct {
		ID      string
		Stage   string
		Lineage struct {
			Children []string
		}
	}
	if code, body := cp.Do("GET", "/api/v1/bundles/wake@1.0.0", nil, &view); code != 200 || view.ID != id1 || view.Stage != "staging" {
		t.Fatalf("get by ref: %d %s", code, body)
	}
	if code, _ := cp.Do("PUT", "/api/v1/bundles/"+id1+"/stage", map[string]string{"stage": "production"}, &view); code != 200 || view.Stage != "production" {
		t.Fatalf("set stage: %d %+v", code, view)
	}
	if code, _ := cp.Do("PUT", "/api/v1/bundles/"+id1+"/stage", map[string]string{"stage": "gold"}, nil); code != 422 {
		t.Fatalf("invalid stage: %d", code)
	}
	if code, _ := cp.Do("GET", "/api/v1/bundles/nope@9.9.9", nil, nil); code != 404 {
		t.Fatalf("unknown bundle: %d", code)
	}
	var list struct{ Count int }
	cp.Do("GET", "/api/v1/bundles", nil, &list)
	if list.Count != 2 {
		t.Fatalf("registry holds %d bundles, want 2", list.Count)
	}
	if code, body := cp.Do("PUT", "/api/v1/devices/ghost/desired", map[string]string{"bundle": id2}, nil); code != 404 {
		t.Fatalf("assign to unknown device: %d %s", code, body)
	}
	if code, body := cp.Do("PUT", "/api/v1/groups/g/desired", map[string]string{"bundle": "nope@1.0.0"}, nil); code != 422 {
		t.Fatalf("assign unknown bundle: %d %s", code, body)
	}
	// Every mutating call, refused or not, is in the audit log with who, what, from where, outcome.
	var log struct {
		Entries []struct{ Who, Action, Target, From, Outcome string }
	}
	if code, _ := cp.Do("GET", "/api/v1/audit", nil, &log); code != 200 {
		t.Fatalf("audit: %d", code)
	}
	outcomes := map[string]int{}
	for _, e := range log.Entries {
		if e.Who != "admin" || e.From == "" || e.Action == "" {
			t.Fatalf("audit entry lacks who/from/action: %+v", e)
		}
		outcomes[e.Action+" "+e.Outcome]++
	}
	if outcomes["POST /api/v1/bundles 422"] != 4 || outcomes["POST /api/v1/bundles 409"] != 1 || outcomes["PUT /api/v1/bundles/:id/stage 200"] != 1 {
		t.Fatalf("audit outcomes: %v", outcomes)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
