package controlplane_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/ota/sign"
	"github.com/edgefleet/edgefleet/ota/trust"
)

// TestConsoleTrustFacts checks GET /api/v1/trust, which the console's Keys & trust page shows:
// the control key's fingerprint, the release keys and, with a trust document, its version,
// roots and revocations; for a viewer, and with no private key material in the body.
func TestConsoleTrustFacts(t *testing.T) {
	dir := t.TempDir()
	for _, role := range []trust.Role{trust.RoleRoot, trust.RoleControl} {
		if _, _, _, err := trust.GenerateKeyFiles(dir, role); err != nil {
			t.Fatal(err)
		}
	}
	rel, old := fleettest.NewKeys(t), fleettest.NewKeys(t)
	vOld, err := sign.LoadVerifier(old.PubPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(dir, "trust-v3.json")
	if _, err := trust.SignTrustFile(context.Background(), trust.SignFileOptions{Version: 3, RootKeys: []string{filepath.Join(dir, "root.key")},
		ReleasePubs: []string{rel.PubPath}, ControlPubs: []string{filepath.Join(dir, "control.pub")}, Revoked: []string{vOld.KeyID()}, Out: doc}); err != nil {
		t.Fatal(err)
	}
	root, err := sign.LoadVerifier(filepath.Join(dir, "root.pub"))
	if err != nil {
		t.Fatal(err)
	}
	vRel, err := sign.LoadVerifier(rel.PubPath)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		opts    fleettest.CPOptions
		source  string
		version uint64
	}{
		{"pinned by --trust", fleettest.CPOptions{TrustKeys: []string{rel.PubPath}}, "pinned", 0},
		{"trust document", fleettest.CPOptions{TrustDoc: doc, ControlKey: filepath.Join(dir, "control.key")}, "trust_document", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := fleettest.StartControlPlane(t, tc.opts)
			control, err := sign.LoadVerifier(filepath.Join(cp.Cfg.DataDir, "control.pub"))
			if err != nil {
				t.Fatal(err)
			}
			var viewer struct{ Token string }
			if code, body := cp.Do("POST", "/api/v1/tokens", map[string]string{"name": "auditor", "role": "viewer"}, &viewer); code != 201 {
				t.Fatalf("viewer token: %d %s", code, body)
			}
			req, _ := http.NewRequest("GET", "http://"+cp.Info.HTTPAddr+"/api/v1/trust", nil)
			req.Header.Set("Authorization", "Bearer "+viewer.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body := string(raw)
			var info api.TrustInfo
			if resp.StatusCode != 200 || json.Unmarshal(raw, &info) != nil {
				t.Fatalf("GET /api/v1/trust as viewer: %d %s", resp.StatusCode, body)
			}
			if strings.Contains(body, "PRIVATE") {
				t.Fatalf("the trust facts carry private key material:\n%s", body)
			}
			if info.ControlKey.ID != control.KeyID() || info.Source != tc.source {
				t.Fatalf("control key %s source %s, want %s %s", info.ControlKey.ID, info.Source, control.KeyID(), tc.source)
			}
			if !strings.HasPrefix(info.BundleRecipient, "age1") || !strings.HasPrefix(info.DatasetRecipient, "age1") {
				t.Fatalf("encryption recipients %q %q, want age public keys", info.BundleRecipient, info.DatasetRecipient)
			}
			if !slices.ContainsFunc(info.ReleaseKeys, func(k api.TrustKey) bool { return k.ID == vRel.KeyID() }) {
				t.Fatalf("release keys %+v lack %s", info.ReleaseKeys, vRel.KeyID())
			}
			if tc.version == 0 {
				if info.Document != nil {
					t.Fatalf("pinned keys but a document: %+v", info.Document)
				}
				return
			}
			d := info.Document
			if d == nil || d.Version != tc.version || !slices.Equal(d.Root, []string{root.KeyID()}) || !slices.Equal(d.Revoked, []string{vOld.KeyID()}) || len(d.SHA256) != 64 {
				t.Fatalf("document %+v, want version %d root %s revoked %s", d, tc.version, root.KeyID(), vOld.KeyID())
			}
		})
	}
}
