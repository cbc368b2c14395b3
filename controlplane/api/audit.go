package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/audit"
)

// Auditor keeps the audit log.
type Auditor interface {
	Record(ctx context.Context, e audit.Entry) error
	List(ctx context.Context, since time.Time, limit int) ([]audit.Entry, error)
}

// auditMutations records every mutating call after it ran: who (the token's name and id, and its
// role; never the token), what, on what, from where and the outcome (the HTTP status, or "denied"
// for a call refused for its credentials or role), whether it succeeded or not.
func (h *handlers) auditMutations(c *gin.Context) {
	c.Next()
	if h.cfg.Audit == nil {
		return
	}
	switch c.Request.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return
	}
	e := audit.Entry{At: time.Now().UTC(), Who: principal(c), Role: c.GetString("role"), Action: c.Request.Method + " " + c.FullPath(),
		Target: c.Request.URL.Path, From: c.ClientIP(), Outcome: strconv.Itoa(c.Writer.Status())}
	if t := c.GetString(ctxAuditTarget); t != "" {
		e.Target = t
	}
	if why := c.GetString(ctxDenied); why != "" {
		// A refused call: 401 (no or a bad credential) or 403 (too weak a role, no CSRF header).
		e.Outcome, e.Reason = "denied", strconv.Itoa(c.Writer.Status())+" "+why
	}
	if err := h.cfg.Audit.Record(context.WithoutCancel(c.Request.Context()), e); err != nil && h.cfg.Logger != nil {
		h.cfg.Logger.Error("audit entry not recorded", "action", e.Action, "err", err)
	}
}

func (h *handlers) listAudit(c *gin.Context) {
	var since time.Time
	if v := c.Query("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			fail(c, http.StatusBadRequest, "bad_request", "since must be an RFC 3339 time")
			return
		}
		since = t
	}
	limit := 1000
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 100000 {
			fail(c, http.StatusBadRequest, "bad_request", "limit must be 1..100000")
			return
		}
		limit = n
	}
	es, err := h.cfg.Audit.List(c.Request.Context(), since, limit)
	if err != nil {
		fail(c, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	if es == nil {
		es = []audit.Entry{}
	}
	c.JSON(http.StatusOK, gin.H{"entries": es, "count": len(es)})
}
