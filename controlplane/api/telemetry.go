package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/ingest"
	"github.com/edgefleet/edgefleet/internal/wire"
)

// Telemetry is what the API needs of the telemetry store.
type Telemetry interface {
	Query(ctx context.Context, device, kind string, since time.Time, limit int) ([]wire.Telemetry, error)
	Account(ctx context.Context, device string) (ingest.Accounting, error)
}

func (h *handlers) deviceTelemetry(c *gin.Context) {
	id := c.Param("id")
	if _, err := h.cfg.Registry.Get(id); err != nil {
		fail(c, http.StatusNotFound, "not_found", "no device "+id)
		return
	}
	var since time.Time
	if v := c.Query("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			d, derr := time.ParseDuration(v)
			if derr != nil {
				fail(c, http.StatusBadRequest, "bad_request", "since must be RFC 3339 time or a duration like 1h")
				return
			}
			t = time.Now().Add(-d)
		}
		since = t
	}
	limit := 500
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 10000 {
			fail(c, http.StatusBadRequest, "bad_request", "limit must be 1..10000")
			return
		}
		limit = n
	}
	msgs, err := h.cfg.Telemetry.Query(c.Request.Context(), id, c.Query("kind"), since, limit)
	if err != nil {
		fail(c, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	acc, _ := h.cfg.Telemetry.Account(c.Request.Context(), id)
	if msgs == nil {
		msgs = []wire.Telemetry{}
	}
	c.JSON(http.StatusOK, gin.H{"device": id, "messages": msgs, "count": len(msgs), "accounting": acc})
}
