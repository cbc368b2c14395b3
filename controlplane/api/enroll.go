package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/enroll"
	wenroll "github.com/edgefleet/edgefleet/internal/enroll"
	"github.com/edgefleet/edgefleet/internal/wire"
)

// Enrollment issues and redeems device enrollment tokens and revokes device credentials
// (controlplane/enroll, with the answer completed by the control plane's wiring).
type Enrollment interface {
	Create(ctx context.Context, group string, uses int, expiresIn time.Duration, by string) (string, enroll.Enrollment, error)
	Redeem(ctx context.Context, req wenroll.Request, from string) (wenroll.Response, error)
	Revoke(ctx context.Context, device, by string) error
}

// enrollRoutes: creating tokens and revoking are admin calls inside the token group; redeeming is
// public, authenticated by the enrollment token in the body (a device has no API token).
func (h *handlers) enrollRoutes(r *gin.Engine, v1 *gin.RouterGroup) {
	v1.POST("/enrollments", h.createEnrollment)
	v1.POST("/devices/:id/revoke", h.revokeDevice)
	r.POST(wenroll.Path, h.redeemEnrollment)
}

// EnrollmentRequest is the body of POST /api/v1/enrollments.
type EnrollmentRequest struct {
	Group     string `json:"group"`
	Uses      int    `json:"uses"`
	ExpiresIn string `json:"expires_in"`
}

// EnrollmentCreated is its answer; the token is shown once and stored only hashed.
type EnrollmentCreated struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	Group     string    `json:"group,omitempty"`
	Uses      int       `json:"uses"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (h *handlers) createEnrollment(c *gin.Context) {
	if h.cfg.Enrollment == nil {
		fail(c, http.StatusNotImplemented, "not_implemented", "enrollment is not available")
		return
	}
	var body EnrollmentRequest
	if err := c.ShouldBindJSON(&body); err != nil {
		fail(c, http.StatusBadRequest, "bad_request", `body must be JSON {"group": "G", "uses": 1, "expires_in": "24h"}: `+err.Error())
		return
	}
	if body.Uses == 0 {
		body.Uses = 1
	}
	if body.ExpiresIn == "" {
		body.ExpiresIn = "24h"
	}
	d, err := time.ParseDuration(body.ExpiresIn)
	if err != nil {
		fail(c, http.StatusBadRequest, "bad_request", `expires_in must be a duration such as "24h" or "30m"`)
		return
	}
	tok, e, err := h.cfg.Enrollment.Create(c.Request.Context(), body.Group, body.Uses, d, principal(c))
	switch {
	case errors.Is(err, enroll.ErrBadRequest):
		fail(c, http.StatusBadRequest, "bad_request", err.Error())
	case err != nil:
		fail(c, http.StatusInternalServerError, "internal", "could not create the enrollment: "+err.Error())
	default:
		c.JSON(http.StatusCreated, EnrollmentCreated{Token: tok, ID: e.ID, Group: e.Group, Uses: e.Uses, ExpiresAt: e.ExpiresAt})
	}
}

func (h *handlers) redeemEnrollment(c *gin.Context) {
	if h.cfg.Enrollment == nil {
		fail(c, http.StatusNotImplemented, "not_implemented", "enrollment is not available")
		return
	}
	// Public route: bound what an anonymous caller can make us read.
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, 16<<10)
	var body wenroll.Request
	if err := c.ShouldBindJSON(&body); err != nil || body.Token == "" {
		fail(c, http.StatusBadRequest, "bad_request", `body must be JSON {"token": "ef1...", "device": "ID"}`)
		return
	}
	resp, err := h.cfg.Enrollment.Redeem(c.Request.Context(), body, c.ClientIP())
	switch {
	case errors.Is(err, enroll.ErrInvalidToken):
		fail(c, http.StatusUnauthorized, "invalid_token", err.Error())
	case errors.Is(err, enroll.ErrExpired):
		fail(c, http.StatusGone, "token_expired", err.Error())
	case errors.Is(err, enroll.ErrUsedUp):
		fail(c, http.StatusGone, "token_used_up", err.Error())
	case errors.Is(err, enroll.ErrEnrolled), errors.Is(err, enroll.ErrRevoked):
		fail(c, http.StatusConflict, "device_enrolled", err.Error())
	case errors.Is(err, enroll.ErrBadRequest):
		fail(c, http.StatusBadRequest, "bad_request", err.Error())
	case err != nil:
		fail(c, http.StatusInternalServerError, "internal", "enrollment failed: "+err.Error())
	default:
		c.Header("Cache-Control", "no-store") // the answer carries the device's password
		c.JSON(http.StatusOK, resp)
	}
}

func (h *handlers) revokeDevice(c *gin.Context) {
	if h.cfg.Enrollment == nil {
		fail(c, http.StatusNotImplemented, "not_implemented", "enrollment is not available")
		return
	}
	id := c.Param("id")
	if err := wire.CheckDeviceID(id); err != nil {
		fail(c, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if err := h.cfg.Enrollment.Revoke(c.Request.Context(), id, principal(c)); err != nil {
		fail(c, http.StatusInternalServerError, "internal", "could not revoke: "+err.Error())
		return
	}
	c.JSON(http.StatusOK, gin.H{"device": id, "revoked": true})
}
