package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/deploy"
)

// Rollouts is what the API needs of the rollout controller (controlplane/rollout.Controller).
type Rollouts interface {
	Create(ctx context.Context, spec deploy.Spec, by string) (rollout.View, error)
	Get(ctx context.Context, id string) (rollout.View, error)
	List(ctx context.Context) ([]rollout.View, error)
	Devices(ctx context.Context, id string) ([]rollout.DeviceView, error)
	// Do applies an operator verb: pause, resume, abort, approve, rollback.
	Do(ctx context.Context, id, verb, by, reason string) (rollout.View, error)
	RollbackGroup(ctx context.Context, group, model, by string) (rollout.GroupRollback, error)
}

// rolloutRoutes adds the rollout endpoints (INTERFACE.md) to the /api/v1 group.
func (h *handlers) rolloutRoutes(v1 *gin.RouterGroup) {
	v1.POST("/rollouts", h.createRollout)
	v1.GET("/rollouts", h.listRollouts)
	v1.GET("/rollouts/:id", h.getRollout)
	v1.GET("/rollouts/:id/devices", h.rolloutDevices)
	for _, verb := range []string{rollout.VerbPause, rollout.VerbResume, rollout.VerbAbort, rollout.VerbApprove, rollout.VerbRollback} {
		v1.POST("/rollouts/:id/"+verb, h.rolloutVerb(verb))
	}
	v1.POST("/groups/:group/rollback", h.rollbackGroup)
}

func (h *handlers) rollouts(c *gin.Context) (Rollouts, bool) {
	if h.cfg.Rollouts == nil {
		fail(c, http.StatusNotImplemented, "not_implemented", "this control plane runs no rollout controller")
		return nil, false
	}
	return h.cfg.Rollouts, true
}

// rolloutError maps the controller's errors to statuses: what the operator can fix in the request
// is 422, a clash with the current state 409.
func rolloutError(c *gin.Context, err error) {
	var conflict *rollout.ConflictError
	switch {
	case errors.As(err, &conflict):
		c.AbortWithStatusJSON(http.StatusConflict, gin.H{"error": err.Error(), "code": "conflict", "rollout": conflict.Rollout, "device": conflict.Device})
	case errors.Is(err, rollout.ErrNotFound):
		fail(c, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, rollout.ErrUnknownGroup):
		fail(c, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, deploy.ErrInvalidSpec):
		fail(c, http.StatusUnprocessableEntity, "invalid_spec", err.Error())
	case errors.Is(err, rollout.ErrUnknownBundle):
		fail(c, http.StatusUnprocessableEntity, "unknown_bundle", err.Error())
	case errors.Is(err, deploy.ErrEmptyTarget):
		fail(c, http.StatusUnprocessableEntity, "empty_target", err.Error())
	case errors.Is(err, rollout.ErrNoVariant):
		fail(c, http.StatusUnprocessableEntity, "no_variant_fits", err.Error())
	case errors.Is(err, rollout.ErrIncompatible):
		fail(c, http.StatusUnprocessableEntity, "incompatible", err.Error())
	case errors.Is(err, rollout.ErrNotProduction):
		fail(c, http.StatusUnprocessableEntity, "not_production", err.Error())
	case errors.Is(err, deploy.ErrState):
		fail(c, http.StatusConflict, "illegal_state", err.Error())
	case errors.Is(err, rollout.ErrNoRollback):
		fail(c, http.StatusConflict, "nothing_to_roll_back", err.Error())
	default:
		fail(c, http.StatusInternalServerError, "internal", err.Error())
	}
}

func (h *handlers) createRollout(c *gin.Context) {
	ro, ok := h.rollouts(c)
	if !ok {
		return
	}
	b, err := io.ReadAll(io.LimitReader(c.Request.Body, 1<<20))
	if err != nil {
		fail(c, http.StatusBadRequest, "bad_request", "read body: "+err.Error())
		return
	}
	var spec deploy.Spec
	dec := json.NewDecoder(bytes.NewReader(b))
	// A misspelt field ("stage" for "stages", "gate" for "gates") must not silently fall back to
	// a default.
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		fail(c, http.StatusBadRequest, "bad_request", "body must be a rollout as JSON (bundle, target, stages, gates, rate, on_failure): "+err.Error())
		return
	}
	v, err := ro.Create(c.Request.Context(), spec, principal(c))
	if err != nil {
		rolloutError(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"id": v.ID, "state": v.State, "bundle": v.Bundle, "ref": v.Ref, "sizes": v.Sizes, "counts": v.Counts})
}

func (h *handlers) listRollouts(c *gin.Context) {
	ro, ok := h.rollouts(c)
	if !ok {
		return
	}
	vs, err := ro.List(c.Request.Context())
	if err != nil {
		rolloutError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"rollouts": vs, "count": len(vs)})
}

func (h *handlers) getRollout(c *gin.Context) {
	ro, ok := h.rollouts(c)
	if !ok {
		return
	}
	v, err := ro.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		rolloutError(c, err)
		return
	}
	c.JSON(http.StatusOK, v)
}

func (h *handlers) rolloutDevices(c *gin.Context) {
	ro, ok := h.rollouts(c)
	if !ok {
		return
	}
	ds, err := ro.Devices(c.Request.Context(), c.Param("id"))
	if err != nil {
		rolloutError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"devices": ds, "count": len(ds)})
}

// rolloutVerb handles POST /rollouts/{id}/VERB with an optional body {"reason": "..."}.
func (h *handlers) rolloutVerb(verb string) gin.HandlerFunc {
	return func(c *gin.Context) {
		ro, ok := h.rollouts(c)
		if !ok {
			return
		}
		var body struct {
			Reason string `json:"reason"`
		}
		if c.Request.ContentLength != 0 {
			if err := json.NewDecoder(io.LimitReader(c.Request.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
				fail(c, http.StatusBadRequest, "bad_request", `body, when present, must be JSON {"reason": "..."}`)
				return
			}
		}
		v, err := ro.Do(c.Request.Context(), c.Param("id"), verb, principal(c), body.Reason)
		if err != nil {
			rolloutError(c, err)
			return
		}
		c.JSON(http.StatusOK, v)
	}
}

// rollbackGroup handles POST /groups/{group}/rollback {"model": "..."} (all models when absent).
func (h *handlers) rollbackGroup(c *gin.Context) {
	ro, ok := h.rollouts(c)
	if !ok {
		return
	}
	var body struct {
		Model string `json:"model"`
	}
	if c.Request.ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(c.Request.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			fail(c, http.StatusBadRequest, "bad_request", `body, when present, must be JSON {"model": "NAME"}`)
			return
		}
	}
	out, err := ro.RollbackGroup(c.Request.Context(), c.Param("group"), body.Model, principal(c))
	if err != nil {
		rolloutError(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}
