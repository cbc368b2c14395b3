package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/audit"
	"github.com/edgefleet/edgefleet/controlplane/auth"
	"github.com/edgefleet/edgefleet/controlplane/store"
)

const adminToken = "efa_test-bootstrap-admin"

// memAudit is the store-backed audit log, as the control plane wires it, on a memory store.
type memAudit struct{ st store.Store }

func (a memAudit) Record(ctx context.Context, e audit.Entry) error { return audit.Record(ctx, a.st, e) }
func (a memAudit) List(ctx context.Context, since time.Time, limit int) ([]audit.Entry, error) {
	return audit.List(ctx, a.st, since, limit)
}

// rig is an API with a token store and one token per role, plus a revoked one.
type rig struct {
	h       http.Handler
	tokens  *auth.Tokens
	audit   memAudit
	byRole  map[auth.Role]string
	revoked string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	ctx := context.Background()
	st := store.NewMemory()
	t.Cleanup(func() { st.Close() })
	r := &rig{tokens: auth.New(st, sha256.Sum256([]byte(adminToken))), audit: memAudit{st}, byRole: map[auth.Role]string{}}
	for _, role := range []auth.Role{auth.Viewer, auth.Operator, auth.Admin} {
		_, raw, err := r.tokens.Create(ctx, role.String()+"-token", role, "test")
		if err != nil {
			t.Fatal(err)
		}
		r.byRole[role] = raw
	}
	rec, raw, err := r.tokens.Create(ctx, "gone", auth.Admin, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.tokens.Revoke(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	r.revoked = raw
	// The handlers behind the routes get no registry, bundles or rollouts: this test is about who
	// gets past the role check, and a handler that then fails on a nil dependency (a 500 caught
	// by gin's recovery) has been let through. Keep the recovery's stack traces out of the log.
	gin.DefaultErrorWriter = io.Discard
	t.Cleanup(func() { gin.DefaultErrorWriter = nil })
	r.h = api.New(api.Config{Tokens: r.tokens, Audit: r.audit, Metrics: http.NotFoundHandler()})
	return r
}

func (r *rig) call(method, path, token, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	r.h.ServeHTTP(w, req)
	return w
}

// concrete fills a gin path's parameters.
func concrete(path string) string {
	return ginParam.ReplaceAllString(path, "x")
}

func isMutating(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// TestRoleMatrix walks every route gin registers: each must have a rule in the role table, and the
// rule must hold for each kind of caller. A new route without a rule fails here.
func TestRoleMatrix(t *testing.T) {
	r := newRig(t)
	table := api.RouteRoles()
	routes := engine(t).Routes()
	seen := 0
	for _, rt := range routes {
		if !described(rt.Path) {
			continue // console pages and assets: public HTML
		}
		key := rt.Method + " " + rt.Path
		need, ok := table[key]
		if !ok {
			t.Errorf("route %s has no rule in routeRoles (controlplane/api/roles.go): add one, and to docs/OPERATIONS.md \"Roles\"", key)
			continue
		}
		if isMutating(rt.Method) && need == auth.Viewer {
			t.Errorf("mutating route %s is open to viewers: a viewer only reads", key)
		}
		seen++
		path := concrete(rt.Path)
		t.Run(strings.ReplaceAll(key, "/", "_"), func(t *testing.T) {
			if need == auth.Public {
				if w := r.call(rt.Method, path, "", "{}"); w.Code == 401 || w.Code == 403 {
					t.Errorf("public route answered %d without a token: %s", w.Code, w.Body)
				}
				return
			}
			for _, c := range []struct{ what, token string }{
				{"no token", ""}, {"garbage token", "nope"}, {"forged token", auth.Prefix + "0000000000000000_" + strings.Repeat("0", 64)},
				{"revoked token", r.revoked}, {"bootstrap token with a typo", adminToken + "x"},
			} {
				if w := r.call(rt.Method, path, c.token, "{}"); w.Code != http.StatusUnauthorized {
					t.Errorf("%s: %d, want 401: %s", c.what, w.Code, w.Body)
				}
			}
			for role := auth.Viewer; role <= auth.Admin; role++ {
				w := r.call(rt.Method, path, r.byRole[role], "{}")
				denied := w.Code == http.StatusUnauthorized || w.Code == http.StatusForbidden
				switch {
				case role < need && w.Code != http.StatusForbidden:
					t.Errorf("%s (below %s): %d, want 403: %s", role, need, w.Code, w.Body)
				case role >= need && denied:
					t.Errorf("%s (at least %s): refused with %d: %s", role, need, w.Code, w.Body)
				}
			}
			if w := r.call(rt.Method, path, adminToken, "{}"); w.Code == 401 || w.Code == 403 {
				t.Errorf("bootstrap admin refused with %d: %s", w.Code, w.Body)
			}
		})
	}
	if seen < 25 {
		t.Errorf("only %d routes checked; is the engine built as the control plane builds it?", seen)
	}
}

// TestStageNeedsAdminForProduction: the stage route's rule depends on the body.
func TestStageNeedsAdminForProduction(t *testing.T) {
	r := newRig(t)
	for _, c := range []struct {
		role   auth.Role
		stage  string
		denied bool
	}{
		{auth.Viewer, "staging", true},
		{auth.Operator, "staging", false},
		{auth.Operator, "production", true},
		{auth.Operator, "archived", true},
		{auth.Admin, "production", false},
		{auth.Admin, "archived", false},
	} {
		w := r.call("PUT", "/api/v1/bundles/wake@1.0.0/stage", r.byRole[c.role], `{"stage":"`+c.stage+`"}`)
		if got := w.Code == http.StatusForbidden; got != c.denied {
			t.Errorf("%s setting %s: %d (denied=%v, want %v): %s", c.role, c.stage, w.Code, got, c.denied, w.Body)
		}
	}
}

// TestTokenRoutes: create, list, use, revoke through the API; the secret is in the create answer
// only.
func TestTokenRoutes(t *testing.T) {
	r := newRig(t)
	w := r.call("POST", "/api/v1/tokens", adminToken, `{"name":"ci-deployer","role":"operator"}`)
	if w.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	var created api.CreatedToken
	if err := json.Unmarshal(w.Body.Bytes(), &created); err != nil || created.ID == "" || !strings.HasPrefix(created.Token, auth.Prefix) || created.Role != auth.Operator {
		t.Fatalf("create answer %s: %v", w.Body, err)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q on the answer that carries the token", cc)
	}
	for _, bad := range []string{`{"name":"x","role":"root"}`, `{"name":"","role":"viewer"}`, `{"name":"x"}`} {
		if w := r.call("POST", "/api/v1/tokens", adminToken, bad); w.Code != http.StatusUnprocessableEntity {
			t.Errorf("create %s: %d, want 422: %s", bad, w.Code, w.Body)
		}
	}
	// The new token works with its role: it reads and may not manage tokens.
	if w := r.call("GET", "/api/v1/devices", created.Token, ""); w.Code == 401 || w.Code == 403 {
		t.Fatalf("new token refused: %d %s", w.Code, w.Body)
	}
	if w := r.call("GET", "/api/v1/tokens", created.Token, ""); w.Code != http.StatusForbidden {
		t.Fatalf("operator listing tokens: %d, want 403", w.Code)
	}
	w = r.call("GET", "/api/v1/tokens", adminToken, "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"ci-deployer"`) || strings.Contains(w.Body.String(), created.Token) ||
		strings.Contains(w.Body.String(), "hash") {
		t.Fatalf("list: %d %s", w.Code, w.Body)
	}
	if w := r.call("DELETE", "/api/v1/tokens/"+created.ID, adminToken, ""); w.Code != 200 {
		t.Fatalf("revoke: %d %s", w.Code, w.Body)
	}
	if w := r.call("GET", "/api/v1/devices", created.Token, ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d, want 401", w.Code)
	}
	if w := r.call("DELETE", "/api/v1/tokens/"+created.ID, adminToken, ""); w.Code != http.StatusNotFound {
		t.Fatalf("revoke twice: %d, want 404", w.Code)
	}
	// Nothing in the audit log carries a token.
	es, err := r.audit.List(context.Background(), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(es)
	for _, tok := range []string{created.Token, adminToken, r.revoked, r.byRole[auth.Admin]} {
		if strings.Contains(string(b), tok) {
			t.Errorf("the audit log holds a token: %s", b)
		}
	}
	if !strings.Contains(string(b), "token "+created.ID+" (ci-deployer, operator)") {
		t.Errorf("the audit log does not name the created token: %s", b)
	}
}

// TestAuditNamesActorAndDenials: a mutating call is recorded with the token's name, id and role;
// refused ones (401, 403) are recorded as denied.
func TestAuditNamesActorAndDenials(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	viewer, err := r.tokens.Authenticate(ctx, r.byRole[auth.Viewer])
	if err != nil {
		t.Fatal(err)
	}
	r.call("POST", "/api/v1/rollouts/r-1/pause", "", "{}")
	r.call("POST", "/api/v1/rollouts/r-1/pause", r.revoked, "{}")
	r.call("POST", "/api/v1/rollouts/r-1/pause", r.byRole[auth.Viewer], "{}")
	r.call("POST", "/api/v1/rollouts/r-1/pause", r.byRole[auth.Operator], "{}")
	r.call("GET", "/api/v1/devices/x", "", "") // reads are not audited
	es, err := r.audit.List(ctx, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 4 {
		t.Fatalf("%d entries, want 4: %+v", len(es), es)
	}
	want := []struct{ who, role, outcome, reason string }{
		{"unknown", "", "denied", "401 unauthorized"},
		{"unknown", "", "denied", "401 unauthorized"},
		{viewer.String(), "viewer", "denied", "403 forbidden"},
		{"operator-token (", "operator", "501", ""},
	}
	for i, w := range want {
		e := es[i]
		if !strings.HasPrefix(e.Who, w.who) || e.Role != w.role || e.Outcome != w.outcome || !strings.HasPrefix(e.Reason, w.reason) ||
			e.Action != "POST /api/v1/rollouts/:id/pause" {
			t.Errorf("entry %d = %+v, want who %q role %q outcome %q reason %q...", i, e, w.who, w.role, w.outcome, w.reason)
		}
	}
	if !strings.Contains(viewer.String(), viewer.ID) {
		t.Errorf("principal %q does not name the token id", viewer)
	}
}

// TestSessionCarriesRole: the console logs in with any token, the session has its role, and
// revoking the token ends the session.
func TestSessionCarriesRole(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	rec, raw, err := r.tokens.Create(ctx, "night-shift", auth.Operator, "test")
	if err != nil {
		t.Fatal(err)
	}
	w := r.call("POST", "/api/v1/session", "", `{"token":"`+raw+`"}`)
	if w.Code != http.StatusCreated || !strings.Contains(w.Body.String(), `"role":"operator"`) {
		t.Fatalf("login: %d %s", w.Code, w.Body)
	}
	var cookies []*http.Cookie
	var csrf string
	for _, c := range w.Result().Cookies() {
		cookies = append(cookies, c)
		if c.Name == api.CSRFCookie {
			csrf = c.Value
		}
	}
	withSession := func(method, path, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(api.CSRFHeader, csrf)
		for _, c := range cookies {
			req.AddCookie(c)
		}
		w := httptest.NewRecorder()
		r.h.ServeHTTP(w, req)
		return w
	}
	w = withSession("GET", "/api/v1/session", "")
	var me struct{ Principal, ID, Role string }
	if json.Unmarshal(w.Body.Bytes(), &me); w.Code != 200 || me.Role != "operator" || me.ID != rec.ID || !strings.HasPrefix(me.Principal, "night-shift") {
		t.Fatalf("whoami: %d %s", w.Code, w.Body)
	}
	if w := withSession("POST", "/api/v1/tokens", `{"name":"x","role":"admin"}`); w.Code != http.StatusForbidden {
		t.Fatalf("operator session creating a token: %d, want 403", w.Code)
	}
	if w := withSession("POST", "/api/v1/rollouts/r-1/pause", "{}"); w.Code == 401 || w.Code == 403 {
		t.Fatalf("operator session pausing: %d %s", w.Code, w.Body)
	}
	if _, err := r.tokens.Revoke(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if w := withSession("GET", "/api/v1/session", ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("session after its token was revoked: %d, want 401", w.Code)
	}
}

// TestMetricsPublic: /metrics takes a viewer token unless MetricsPublic (--metrics-public).
func TestMetricsPublic(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "edgefleet_up 1\n") })
	for _, c := range []struct {
		public      bool
		token, what string
		want        int
	}{
		{false, "", "no token", 401},
		{false, "viewer", "viewer token", 200},
		{true, "", "no token, public", 200},
	} {
		st := store.NewMemory()
		tk := auth.New(st, sha256.Sum256([]byte(adminToken)))
		h := api.New(api.Config{Tokens: tk, Metrics: metrics, MetricsPublic: c.public})
		req := httptest.NewRequest("GET", "/metrics", nil)
		if c.token != "" {
			_, raw, err := tk.Create(context.Background(), "prom", auth.Viewer, "test")
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+raw)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != c.want {
			t.Errorf("%s: %d, want %d", c.what, w.Code, c.want)
		}
		st.Close()
	}
}
