package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/bundles"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

// Desired is what the API needs to assign bundles.
type Desired interface {
	// AssignDevice puts bundle on device for the bundle's model name.
	AssignDevice(ctx context.Context, device string, rec bundles.Record, bake time.Duration, by string) (any, error)
	// AssignGroup does it for every device of a group and records the group's baseline.
	AssignGroup(ctx context.Context, group string, rec bundles.Record, bake time.Duration, by string) (any, error)
	Get(ctx context.Context, device string) (any, error)
}

// ErrIncompatible is returned (wrapped) by Desired when a device cannot run a bundle.
var ErrIncompatible = errors.New("bundle incompatible with device")

// ErrNoVariant is returned (wrapped) when a model version has several variants and a device can
// run none of them.
var ErrNoVariant = errors.New("no variant fits the device")

var fleetAll = fleet.Filter{}

func parseManifest(rec bundles.Record) (*bundle.Manifest, error) {
	return bundle.ParseManifest(rec.Manifest)
}

type assignBody struct {
	Bundle string `json:"bundle"`
	Bake   string `json:"bake"`
}

func (h *handlers) readAssign(c *gin.Context) (bundles.Record, time.Duration, bool) {
	var body assignBody
	if err := c.ShouldBindJSON(&body); err != nil || body.Bundle == "" {
		fail(c, http.StatusBadRequest, "bad_request", `body must be JSON {"bundle": "<id or name@version>", "bake": "30s"}`)
		return bundles.Record{}, 0, false
	}
	var bake time.Duration
	if body.Bake != "" {
		d, err := time.ParseDuration(body.Bake)
		if err != nil || d < 0 {
			fail(c, http.StatusUnprocessableEntity, "invalid_bake", "bake must be a duration like 30s or 5m")
			return bundles.Record{}, 0, false
		}
		bake = d
	}
	rec, err := h.cfg.Bundles.Get(c.Request.Context(), body.Bundle)
	if err != nil {
		if errors.Is(err, bundles.ErrNotFound) {
			fail(c, http.StatusUnprocessableEntity, "unknown_bundle", err.Error()+": push it first (controlplane bundles push FILE)")
		} else {
			bundleError(c, err)
		}
		return bundles.Record{}, 0, false
	}
	return rec, bake, true
}

func (h *handlers) desiredError(c *gin.Context, err error) {
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		fail(c, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, ErrNoVariant):
		fail(c, http.StatusUnprocessableEntity, "no_variant_fits", err.Error())
	case errors.Is(err, ErrIncompatible):
		fail(c, http.StatusUnprocessableEntity, "incompatible", err.Error())
	case errors.Is(err, ErrNotProduction):
		fail(c, http.StatusUnprocessableEntity, "not_production", err.Error())
	default:
		fail(c, http.StatusInternalServerError, "internal", err.Error())
	}
}

func (h *handlers) setDeviceDesired(c *gin.Context) {
	rec, bake, ok := h.readAssign(c)
	if !ok {
		return
	}
	out, err := h.cfg.Desired.AssignDevice(c.Request.Context(), c.Param("id"), rec, bake, principal(c))
	if err != nil {
		h.desiredError(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

func (h *handlers) setGroupDesired(c *gin.Context) {
	rec, bake, ok := h.readAssign(c)
	if !ok {
		return
	}
	out, err := h.cfg.Desired.AssignGroup(c.Request.Context(), c.Param("group"), rec, bake, principal(c))
	if err != nil {
		h.desiredError(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

func (h *handlers) getDeviceDesired(c *gin.Context) {
	out, err := h.cfg.Desired.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		fail(c, http.StatusNotFound, "not_found", "no desired state for "+c.Param("id"))
		return
	}
	c.JSON(http.StatusOK, out)
}
