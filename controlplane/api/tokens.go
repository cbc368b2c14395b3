package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/auth"
)

// ctxAuditTarget lets a handler name what it acted on when the URL does not (a created token's id).
const ctxAuditTarget = "audit_target"

// tokenRoutes: API tokens with roles (admin only, by routeRoles). The secret is in the answer to
// POST and nowhere else: not in the store (a hash), the audit log or the logs.
func (h *handlers) tokenRoutes(v1 *gin.RouterGroup) {
	v1.POST("/tokens", h.createToken)
	v1.GET("/tokens", h.listTokens)
	v1.DELETE("/tokens/:id", h.revokeToken)
}

// CreatedToken is the answer to POST /api/v1/tokens.
type CreatedToken struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Role    auth.Role `json:"role"`
	Created time.Time `json:"created"`
	// Token is the bearer token, shown this once.
	Token string `json:"token"`
}

func (h *handlers) createToken(c *gin.Context) {
	var body struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		fail(c, http.StatusBadRequest, "bad_request", `body must be JSON {"name": "...", "role": "viewer|operator|admin"}: `+err.Error())
		return
	}
	role, err := auth.ParseRole(body.Role)
	if err != nil {
		fail(c, http.StatusUnprocessableEntity, "invalid_role", err.Error())
		return
	}
	rec, raw, err := h.tokens.Create(c.Request.Context(), body.Name, role, principal(c))
	switch {
	case errors.Is(err, auth.ErrName), errors.Is(err, auth.ErrRole):
		fail(c, http.StatusUnprocessableEntity, "invalid_token", err.Error())
		return
	case err != nil:
		fail(c, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	c.Set(ctxAuditTarget, "token "+rec.ID+" ("+rec.Name+", "+rec.Role.String()+")")
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, CreatedToken{ID: rec.ID, Name: rec.Name, Role: rec.Role, Created: rec.Created, Token: raw})
}

func (h *handlers) listTokens(c *gin.Context) {
	ts, err := h.tokens.List(c.Request.Context())
	if err != nil {
		fail(c, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	c.JSON(http.StatusOK, gin.H{"tokens": ts, "count": len(ts)})
}

func (h *handlers) revokeToken(c *gin.Context) {
	rec, err := h.tokens.Revoke(c.Request.Context(), c.Param("id"))
	switch {
	case errors.Is(err, auth.ErrNotFound):
		fail(c, http.StatusNotFound, "not_found", "no token "+c.Param("id")+" (the bootstrap admin token cannot be revoked here: replace DATA/admin.token and restart)")
		return
	case err != nil:
		fail(c, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	c.Set(ctxAuditTarget, "token "+rec.ID+" ("+rec.Name+", "+rec.Role.String()+")")
	c.JSON(http.StatusOK, gin.H{"revoked": rec})
}
