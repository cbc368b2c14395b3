package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/retrain"
)

// Retrain is what the API needs of the retraining webhook.
type Retrain interface {
	Notify(ctx context.Context, typ string, d retrain.Data) (string, error)
	Pending(ctx context.Context) ([]retrain.Delivery, error)
	Dead(ctx context.Context) ([]retrain.Delivery, error)
	Redeliver(ctx context.Context, id string) error
}

func (h *handlers) retrainRoutes(v1 *gin.RouterGroup) {
	v1.GET("/retrain", h.listRetrain)
	v1.POST("/retrain", h.postRetrain)
	v1.POST("/retrain/:id/redeliver", h.redeliverRetrain)
}

func (h *handlers) retrainOn(c *gin.Context) bool {
	if h.cfg.Retrain == nil {
		fail(c, http.StatusNotImplemented, "not_configured", "no retraining webhook: start the control plane with --retrain-webhook URL --retrain-secret SECRET")
		return false
	}
	return true
}

func (h *handlers) listRetrain(c *gin.Context) {
	if !h.retrainOn(c) {
		return
	}
	p, err := h.cfg.Retrain.Pending(c.Request.Context())
	if err != nil {
		fail(c, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	d, err := h.cfg.Retrain.Dead(c.Request.Context())
	if err != nil {
		fail(c, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	c.JSON(http.StatusOK, gin.H{"pending": p, "dead": d})
}

// postRetrain fires a retraining event on demand (an operator who knows the model needs it).
func (h *handlers) postRetrain(c *gin.Context) {
	if !h.retrainOn(c) {
		return
	}
	var d retrain.Data
	if err := strictJSON(c, &d); err != nil || d.Model == "" {
		fail(c, http.StatusBadRequest, "bad_request", `body must be JSON {"model": "wake", "version": "1.1.0", "groups": [...], "reason": "...", "datasets": [...]}`)
		return
	}
	if d.Reason == "" {
		d.Reason = "requested by " + principal(c)
	}
	id, err := h.cfg.Retrain.Notify(c.Request.Context(), retrain.TypeManual, d)
	if err != nil {
		fail(c, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"id": id})
}

func (h *handlers) redeliverRetrain(c *gin.Context) {
	if !h.retrainOn(c) {
		return
	}
	err := h.cfg.Retrain.Redeliver(c.Request.Context(), c.Param("id"))
	switch {
	case errors.Is(err, retrain.ErrNotFound):
		fail(c, http.StatusNotFound, "not_found", err.Error())
	case err != nil:
		fail(c, http.StatusInternalServerError, "internal", err.Error())
	default:
		c.JSON(http.StatusAccepted, gin.H{"id": c.Param("id"), "state": "pending"})
	}
}
