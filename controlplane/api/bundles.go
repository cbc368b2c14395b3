package api

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/bundles"
)

// Bundles is what the API needs of the model registry.
type Bundles interface {
	Upload(ctx context.Context, r io.Reader, by string) (bundles.Record, bool, error)
	Get(ctx context.Context, ref string) (bundles.Record, error)
	List(ctx context.Context) []bundles.Record
	SetStage(ctx context.Context, id, stage, by string) (bundles.Record, error)
}

func bundleError(c *gin.Context, err error) {
	switch {
	case errors.Is(err, bundles.ErrNotFound):
		fail(c, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, bundles.ErrConflict):
		fail(c, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, bundles.ErrTooLarge):
		fail(c, http.StatusRequestEntityTooLarge, "too_large", err.Error())
	case errors.Is(err, bundles.ErrInvalid):
		fail(c, http.StatusUnprocessableEntity, "invalid_bundle", err.Error())
	case errors.Is(err, bundles.ErrNoKeys):
		fail(c, http.StatusUnprocessableEntity, "no_trusted_keys", err.Error())
	default:
		fail(c, http.StatusInternalServerError, "internal", err.Error())
	}
}

func (h *handlers) uploadBundle(c *gin.Context) {
	rec, created, err := h.cfg.Bundles.Upload(c.Request.Context(), c.Request.Body, principal(c))
	if err != nil {
		bundleError(c, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	c.JSON(status, rec)
}

func (h *handlers) listBundles(c *gin.Context) {
	recs := h.cfg.Bundles.List(c.Request.Context())
	if recs == nil {
		recs = []bundles.Record{}
	}
	c.JSON(http.StatusOK, gin.H{"bundles": recs, "count": len(recs)})
}

// BundleView is a registry record with its lineage.
type BundleView struct {
	bundles.Record
	Lineage Lineage `json:"lineage"`
}

// Lineage links a bundle to where it came from and where it went.
type Lineage struct {
	Parent     *bundles.Record `json:"parent,omitempty"`
	Children   []string        `json:"children"`
	DatasetIDs []string        `json:"dataset_ids,omitempty"`
	Devices    []string        `json:"devices"`
}

func (h *handlers) getBundle(c *gin.Context) {
	ctx := c.Request.Context()
	rec, err := h.cfg.Bundles.Get(ctx, c.Param("id"))
	if err != nil {
		bundleError(c, err)
		return
	}
	v := BundleView{Record: rec, Lineage: Lineage{Children: []string{}, Devices: []string{}}}
	if rec.Parent != "" {
		if p, err := h.cfg.Bundles.Get(ctx, rec.Parent); err == nil {
			v.Lineage.Parent = &p
		}
	}
	for _, o := range h.cfg.Bundles.List(ctx) {
		if o.Parent == rec.Name+"@"+rec.Version {
			v.Lineage.Children = append(v.Lineage.Children, o.ID)
		}
	}
	if m, err := parseManifest(rec); err == nil {
		v.Lineage.DatasetIDs = m.Provenance.DatasetIDs
	}
	for _, d := range h.cfg.Registry.List(fleetAll) {
		if d.Reported == nil {
			continue
		}
		for _, mr := range d.Reported.Models {
			if mr.Active == rec.ID {
				v.Lineage.Devices = append(v.Lineage.Devices, d.ID)
			}
		}
	}
	c.JSON(http.StatusOK, v)
}

func (h *handlers) setStage(c *gin.Context) {
	var body struct {
		Stage string `json:"stage"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		fail(c, http.StatusBadRequest, "bad_request", `body must be JSON {"stage": "staging|production|archived"}`)
		return
	}
	if !h.requireRole(c, stageRole(body.Stage), "setting the "+body.Stage+" stage") {
		return
	}
	rec, err := h.cfg.Bundles.SetStage(c.Request.Context(), c.Param("id"), body.Stage, principal(c))
	if err != nil {
		bundleError(c, err)
		return
	}
	c.JSON(http.StatusOK, rec)
}
