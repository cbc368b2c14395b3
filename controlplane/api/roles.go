package api

import (
	"errors"
	"maps"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/auth"
)

// routeRoles is the one table of who may call what: the minimum role for each route, keyed
// "METHOD gin-path". A route absent from it is admin-only (deny by default), so a route added
// without a rule is safe until it is listed; TestRoleMatrix fails for it. docs/OPERATIONS.md
// ("Roles") shows this table to operators: change both together.
//
// auth.Public routes take no token: they authenticate by other means (the login checks the pasted
// token; logout acts only on the cookie it is sent; an enrollment token redeems itself) or serve
// nothing private.
var routeRoles = map[string]auth.Role{
	"GET /healthz":                auth.Public,
	"GET /api/v1/openapi.json":    auth.Public,
	"GET /metrics":                auth.Viewer, // public with --metrics-public
	"POST /api/v1/session":        auth.Public,
	"GET /api/v1/session":         auth.Viewer,
	"POST /api/v1/session/logout": auth.Public,

	"GET /api/v1/audit":                 auth.Viewer,
	"GET /api/v1/cluster":               auth.Viewer,
	"GET /api/v1/drift":                 auth.Viewer,
	"GET /api/v1/devices":               auth.Viewer,
	"GET /api/v1/devices/:id":           auth.Viewer,
	"GET /api/v1/devices/:id/desired":   auth.Viewer,
	"GET /api/v1/devices/:id/telemetry": auth.Viewer,
	"GET /api/v1/groups":                auth.Viewer,
	"GET /api/v1/groups/:group":         auth.Viewer,
	"GET /api/v1/bundles":               auth.Viewer,
	"GET /api/v1/bundles/:id":           auth.Viewer,
	"GET /api/v1/rollouts":              auth.Viewer,
	"GET /api/v1/rollouts/:id":          auth.Viewer,
	"GET /api/v1/rollouts/:id/devices":  auth.Viewer,

	"PUT /api/v1/devices/:id/group":       auth.Operator,
	"PUT /api/v1/devices/:id/desired":     auth.Operator,
	"PUT /api/v1/groups/:group/desired":   auth.Operator,
	"POST /api/v1/groups/:group/rollback": auth.Operator,
	"POST /api/v1/feedback":               auth.Operator,
	"POST /api/v1/bundles":                auth.Operator,
	"PUT /api/v1/bundles/:id/stage":       auth.Operator, // production and archived need admin: see stageRole
	"POST /api/v1/rollouts":               auth.Operator,
	"POST /api/v1/rollouts/:id/pause":     auth.Operator,
	"POST /api/v1/rollouts/:id/resume":    auth.Operator,
	"POST /api/v1/rollouts/:id/abort":     auth.Operator,
	"POST /api/v1/rollouts/:id/approve":   auth.Operator,
	"POST /api/v1/rollouts/:id/rollback":  auth.Operator,

	"GET /api/v1/retrain":                auth.Viewer,
	"POST /api/v1/retrain":               auth.Operator,
	"POST /api/v1/retrain/:id/redeliver": auth.Operator,

	"POST /api/v1/tokens":       auth.Admin,
	"GET /api/v1/tokens":        auth.Admin,
	"DELETE /api/v1/tokens/:id": auth.Admin,

	// Routes of the console, enrollment and capture work (issue #10 and later), listed ahead so
	// that they get the documented role when they land.
	"PUT /api/v1/groups/:group":        auth.Admin, // group flags and capture policies
	"POST /api/v1/enrollments":         auth.Admin,
	"POST /api/v1/devices/:id/revoke":  auth.Admin,
	"POST /api/v1/enroll":              auth.Public, // the enrollment token authenticates the device
	"POST /api/v1/devices/:id/capture": auth.Operator,
	"GET /api/v1/datasets":             auth.Viewer,
	"GET /api/v1/datasets/:id":         auth.Viewer,
	// Captured samples can hold personal data: reading them is an operator's act, like capturing.
	"GET /api/v1/datasets/:id/samples": auth.Operator,
	"DELETE /api/v1/datasets/:id":      auth.Operator,
	"GET /api/v1/trust":                auth.Viewer, // public keys and fingerprints only
}

// RouteRoles returns a copy of the route table (for tests and documentation).
func RouteRoles() map[string]auth.Role { return maps.Clone(routeRoles) }

// requiredRole is the minimum role for a route; admin for one not in the table.
func requiredRole(method, fullPath string) auth.Role {
	if r, ok := routeRoles[method+" "+fullPath]; ok {
		return r
	}
	return auth.Admin
}

// stageRole is the minimum role for moving a bundle to a stage: operators stage bundles;
// promoting to production, or archiving (which takes a bundle out of use), is an admin's call.
// Any other value is left to the registry, which refuses it as an unknown stage.
func stageRole(stage string) auth.Role {
	switch stage {
	case "production", "archived":
		return auth.Admin
	}
	return auth.Operator
}

// auth is the middleware on every non-public route: it finds who the request stands for (the
// console's session cookie, else the bearer token) and checks that principal's role against the
// route's rule. Refusals are 401 (no or a bad credential) or 403 (too weak a role) and are
// marked for the audit log.
func (h *handlers) auth(c *gin.Context) {
	need := requiredRole(c.Request.Method, c.FullPath())
	if need == auth.Public {
		c.Next()
		return
	}
	p, handled, ok := h.cookieAuth(c)
	if handled && !ok {
		return
	}
	if !handled {
		if p, ok = h.bearer(c); !ok {
			return
		}
	}
	setPrincipal(c, p)
	if !p.Can(need) {
		h.deny(c, http.StatusForbidden, "forbidden", "this needs the "+need.String()+" role; "+p.String()+" is "+p.Role.String())
		return
	}
	c.Next()
}

// bearer authenticates the Authorization header.
func (h *handlers) bearer(c *gin.Context) (auth.Principal, bool) {
	tok, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(tok) == "" {
		c.Header("WWW-Authenticate", `Bearer realm="edgefleet"`)
		h.deny(c, http.StatusUnauthorized, "unauthorized", "missing bearer token: send 'Authorization: Bearer TOKEN' (the admin token is in DATA/admin.token)")
		return auth.Principal{}, false
	}
	p, err := h.tokens.Authenticate(c.Request.Context(), strings.TrimSpace(tok))
	switch {
	case errors.Is(err, auth.ErrInvalid):
		c.Header("WWW-Authenticate", `Bearer realm="edgefleet", error="invalid_token"`)
		h.deny(c, http.StatusUnauthorized, "unauthorized", "invalid token (revoked, or not one of this control plane's)")
		return auth.Principal{}, false
	case err != nil:
		fail(c, http.StatusServiceUnavailable, "unavailable", "could not check the token: "+err.Error())
		return auth.Principal{}, false
	}
	return p, true
}

// requireRole is for rules that depend on the request body (a route's table entry is the
// least any call needs): it answers 403 and returns false when the caller's role is below min.
func (h *handlers) requireRole(c *gin.Context, min auth.Role, what string) bool {
	p, _ := c.Get(ctxPrincipal)
	pr, _ := p.(auth.Principal)
	if pr.Can(min) {
		return true
	}
	h.deny(c, http.StatusForbidden, "forbidden", what+" needs the "+min.String()+" role; "+pr.String()+" is "+pr.Role.String())
	return false
}

// deny answers a refusal and marks it for the audit log (outcome "denied").
func (h *handlers) deny(c *gin.Context, status int, code, msg string) {
	c.Set(ctxDenied, code+": "+msg)
	fail(c, status, code, msg)
}

const (
	ctxPrincipal = "principal_struct"
	ctxDenied    = "denied"
)

// setPrincipal records who the request stands for: the display name ("principal", which
// handlers record as the actor), the token id and the role. Never the token itself.
func setPrincipal(c *gin.Context, p auth.Principal) {
	c.Set(ctxPrincipal, p)
	c.Set("principal", p.String())
	c.Set("principal_id", p.ID)
	c.Set("role", p.Role.String())
}
