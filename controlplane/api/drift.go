package api

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// Drift answers fleet drift questions.
type Drift interface {
	FleetDrift(ctx context.Context, bundle, group string, since time.Time) (any, error)
}

func (h *handlers) fleetDrift(c *gin.Context) {
	ref := c.Query("bundle")
	if ref == "" {
		fail(c, http.StatusBadRequest, "bad_request", "bundle=<id or name@version> is required")
		return
	}
	rec, err := h.cfg.Bundles.Get(c.Request.Context(), ref)
	if err != nil {
		bundleError(c, err)
		return
	}
	since := time.Now().Add(-time.Hour)
	if v := c.Query("since"); v != "" {
		d, err := time.ParseDuration(v)
		if t, terr := time.Parse(time.RFC3339, v); terr == nil {
			since = t
		} else if err == nil {
			since = time.Now().Add(-d)
		} else {
			fail(c, http.StatusBadRequest, "bad_request", "since must be an RFC 3339 time or a duration like 1h")
			return
		}
	}
	out, err := h.cfg.Drift.FleetDrift(c.Request.Context(), rec.ID, c.Query("group"), since)
	if err != nil {
		fail(c, http.StatusUnprocessableEntity, "no_drift_profile", err.Error())
		return
	}
	c.JSON(http.StatusOK, out)
}
