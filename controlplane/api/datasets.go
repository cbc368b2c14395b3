package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/datasets"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
)

// Datasets is sample capture and the datasets it makes (controlplane/datasets).
type Datasets interface {
	Request(ctx context.Context, device, group, model string, max int, reason, by string) (datasets.Record, error)
	List(ctx context.Context, f datasets.Filter) ([]datasets.Record, error)
	Get(ctx context.Context, id string) (datasets.Record, error)
	Delete(ctx context.Context, id, by, why string) error
	Samples(ctx context.Context, id, format string) (string, func(io.Writer) error, error)
}

// CaptureRequest is the body of POST /api/v1/devices/{id}/capture.
type CaptureRequest struct {
	Model      string `json:"model"`
	MaxSamples int    `json:"max_samples"`
	Reason     string `json:"reason"`
}

func (h *handlers) datasetRoutes(v1 *gin.RouterGroup) {
	v1.POST("/devices/:id/capture", h.postCapture)
	v1.GET("/datasets", h.listDatasets)
	v1.GET("/datasets/:id", h.getDataset)
	v1.GET("/datasets/:id/samples", h.datasetSamples)
	v1.DELETE("/datasets/:id", h.deleteDataset)
}

func (h *handlers) datasetsOK(c *gin.Context) bool {
	if h.cfg.Datasets == nil {
		fail(c, http.StatusNotImplemented, "not_implemented", "this control plane keeps no datasets")
		return false
	}
	return true
}

func datasetErr(c *gin.Context, err error) {
	switch {
	case errors.Is(err, datasets.ErrNotAllowed):
		fail(c, http.StatusUnprocessableEntity, "capture_not_allowed", err.Error())
	case errors.Is(err, datasets.ErrNotFound):
		fail(c, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, datasets.ErrNotComplete):
		fail(c, http.StatusConflict, "not_complete", err.Error())
	case errors.Is(err, datasets.ErrFormat):
		fail(c, http.StatusUnprocessableEntity, "unsupported_format", err.Error())
	case errors.Is(err, datasets.ErrRequest):
		fail(c, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, datasets.ErrUnavailable):
		fail(c, http.StatusServiceUnavailable, "unavailable", err.Error())
	default:
		fail(c, http.StatusInternalServerError, "internal", err.Error())
	}
}

func (h *handlers) postCapture(c *gin.Context) {
	if !h.datasetsOK(c) {
		return
	}
	var req CaptureRequest
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail(c, http.StatusBadRequest, "bad_request", `body must be JSON {"model": "NAME", "max_samples": N, "reason": "..."}: `+err.Error())
		return
	}
	d, err := h.cfg.Registry.Get(c.Param("id"))
	if errors.Is(err, fleet.ErrNotFound) {
		fail(c, http.StatusNotFound, "not_found", "no device "+c.Param("id"))
		return
	}
	if err != nil {
		fail(c, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	r, err := h.cfg.Datasets.Request(c.Request.Context(), d.ID, d.Group, req.Model, req.MaxSamples, req.Reason, principal(c))
	if err != nil {
		datasetErr(c, err)
		return
	}
	c.JSON(http.StatusAccepted, r)
}

func (h *handlers) listDatasets(c *gin.Context) {
	if !h.datasetsOK(c) {
		return
	}
	rs, err := h.cfg.Datasets.List(c.Request.Context(), datasets.Filter{Device: c.Query("device"), Group: c.Query("group"), Model: c.Query("model"), State: c.Query("state")})
	if err != nil {
		datasetErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"datasets": rs, "count": len(rs)})
}

func (h *handlers) getDataset(c *gin.Context) {
	if !h.datasetsOK(c) {
		return
	}
	r, err := h.cfg.Datasets.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		datasetErr(c, err)
		return
	}
	c.JSON(http.StatusOK, r)
}

func (h *handlers) datasetSamples(c *gin.Context) {
	if !h.datasetsOK(c) {
		return
	}
	format := c.DefaultQuery("format", "jsonl")
	ctype, write, err := h.cfg.Datasets.Samples(c.Request.Context(), c.Param("id"), format)
	if err != nil {
		datasetErr(c, err)
		return
	}
	ext := ".jsonl"
	if format == "npy" {
		ext = ".npy"
	}
	c.Header("Content-Type", ctype)
	c.Header("Content-Disposition", `attachment; filename="`+c.Param("id")+ext+`"`)
	c.Status(http.StatusOK)
	if err := write(c.Writer); err != nil && h.cfg.Logger != nil {
		h.cfg.Logger.Error("dataset download cut short", "dataset", c.Param("id"), "err", err)
	}
}

func (h *handlers) deleteDataset(c *gin.Context) {
	if !h.datasetsOK(c) {
		return
	}
	if err := h.cfg.Datasets.Delete(c.Request.Context(), c.Param("id"), principal(c), c.Query("reason")); err != nil {
		datasetErr(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
