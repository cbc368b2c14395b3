package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/fleet"
)

// GroupSettings is what the API needs to read and change a group's settings (production flag,
// capture policy).
type GroupSettings interface {
	// Settings returns the stored settings; ok is false for a group never configured.
	Settings(ctx context.Context, group string) (settings any, ok bool, err error)
	UpdateSettings(ctx context.Context, group string, p fleet.GroupPatch, by string) (any, error)
}

var (
	// ErrInvalidSettings is returned (wrapped) for a group patch that cannot be applied.
	ErrInvalidSettings = errors.New("invalid group settings")
	// ErrNotProduction is returned (wrapped) when a production group is offered a bundle that is
	// not in the production stage.
	ErrNotProduction = errors.New("bundle not in the production stage")
)

func (h *handlers) getGroup(c *gin.Context) {
	name := c.Param("group")
	out := gin.H{"name": name, "devices": 0, "online": 0}
	found := false
	for _, g := range h.cfg.Registry.Groups() {
		if g.Name == name {
			out["devices"], out["online"] = g.Devices, g.Online
			out["members"] = h.cfg.Registry.List(fleet.Filter{Group: name})
			found = true
			break
		}
	}
	if h.cfg.Groups != nil {
		s, ok, err := h.cfg.Groups.Settings(c.Request.Context(), name)
		if err != nil {
			fail(c, http.StatusInternalServerError, "internal", err.Error())
			return
		}
		out["settings"] = s
		found = found || ok
	}
	if !found {
		fail(c, http.StatusNotFound, "not_found", "no group "+name)
		return
	}
	c.JSON(http.StatusOK, out)
}

func (h *handlers) putGroup(c *gin.Context) {
	if h.cfg.Groups == nil {
		fail(c, http.StatusNotImplemented, "not_implemented", "group settings are not available")
		return
	}
	var p fleet.GroupPatch
	if err := strictJSON(c, &p); err != nil || (p.Production == nil && p.Capture == nil) {
		fail(c, http.StatusBadRequest, "bad_request",
			`body must be JSON {"production": true, "capture": {"enabled": true, "retention": "720h", "max_samples": 1000}} (either field may be left out)`)
		return
	}
	out, err := h.cfg.Groups.UpdateSettings(c.Request.Context(), c.Param("group"), p, principal(c))
	if err != nil {
		if errors.Is(err, ErrInvalidSettings) {
			fail(c, http.StatusUnprocessableEntity, "invalid_settings", err.Error())
			return
		}
		fail(c, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	c.JSON(http.StatusOK, out)
}

// strictJSON decodes a small JSON body and refuses unknown fields, so a misspelt setting is an
// error rather than silently ignored.
func strictJSON(c *gin.Context, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, 1<<20))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
