// Package api is the control plane's HTTP API (gin): JSON under /api/v1, liveness at /healthz.
// Every /api route requires a token whose role the route's rule allows (roles.go; deny by
// default). It owns routing, request validation and error shapes; the registry and other state
// live behind interfaces.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/auth"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/store"
)

// Registry is what the API needs of the device registry.
type Registry interface {
	List(fleet.Filter) []fleet.Device
	Get(id string) (fleet.Device, error)
	SetGroup(ctx context.Context, id, group string) (fleet.Device, error)
	Groups() []fleet.GroupSummary
}

// Config wires the API.
type Config struct {
	Registry  Registry
	Bundles   Bundles
	Desired   Desired
	Telemetry Telemetry
	Audit     Auditor
	Drift     Drift
	Rollouts  Rollouts // the rollout controller; its routes answer 501 when nil
	Groups    GroupSettings
	Retrain   Retrain // the retraining webhook; its routes answer 501 when nil
	// Command publishes a command to a device (feedback.go); POST /api/v1/feedback answers 501 when nil.
	Command CommandFunc
	// Enrollment issues enrollment tokens, redeems them and revokes devices (enroll.go); its
	// routes answer 501 when nil.
	Enrollment Enrollment
	// Datasets is sample capture (datasets.go); its routes answer 501 when nil.
	Datasets Datasets
	// Metrics serves Prometheus text format (behind the token).
	Metrics http.Handler
	// Cluster reports the replica and the leader; GET /api/v1/cluster answers 501 when nil.
	Cluster Cluster
	// Trust reports the public keys and the trust document version; GET /api/v1/trust answers 501 when nil.
	Trust Trust
	// AdminTokenHash is the SHA-256 of the admin token; tokens are never kept in clear.
	// Used only when Tokens is nil (then other tokens live in memory).
	AdminTokenHash [32]byte
	// Tokens authenticates bearer tokens and keeps the API tokens (roles.go, tokens.go).
	Tokens *auth.Tokens
	// MetricsPublic serves /metrics without a token (--metrics-public).
	MetricsPublic bool
	Logger        *slog.Logger
}

// Error is the JSON error body.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func fail(c *gin.Context, status int, code, msg string) {
	c.AbortWithStatusJSON(status, Error{Error: msg, Code: code})
}

// New builds the HTTP handler.
func New(cfg Config) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery(), logRequests(cfg.Logger))
	r.HandleMethodNotAllowed = true
	r.NoRoute(func(c *gin.Context) {
		fail(c, http.StatusNotFound, "not_found", "no such endpoint: "+c.Request.Method+" "+c.Request.URL.Path)
	})
	r.NoMethod(func(c *gin.Context) {
		fail(c, http.StatusMethodNotAllowed, "method_not_allowed", c.Request.Method+" is not allowed on "+c.Request.URL.Path)
	})
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/api/v1/openapi.json", serveOpenAPI) // public, outside the token group: see openapi.go

	h := &handlers{cfg: cfg, sess: newSessionStore(), tokens: cfg.Tokens}
	if h.tokens == nil {
		h.tokens = auth.New(store.NewMemory(), cfg.AdminTokenHash)
	}
	h.consoleRoutes(r) // web console at GET /, its assets and the session endpoints (console.go)
	if cfg.Metrics != nil && cfg.MetricsPublic {
		r.GET("/metrics", gin.WrapH(cfg.Metrics))
	} else if cfg.Metrics != nil {
		r.GET("/metrics", h.auth, gin.WrapH(cfg.Metrics))
	}
	// auth checks each route's minimum role (roles.go); the audit middleware wraps it so that
	// refusals are recorded too.
	v1 := r.Group("/api/v1", h.auditMutations, h.auth)
	v1.GET("/audit", h.listAudit)
	v1.GET("/drift", h.fleetDrift)
	v1.GET("/devices", h.listDevices)
	v1.GET("/devices/:id", h.getDevice)
	v1.PUT("/devices/:id/group", h.setGroup)
	v1.GET("/groups", h.listGroups)
	v1.GET("/groups/:group", h.getGroup)
	v1.PUT("/groups/:group", h.putGroup)
	h.retrainRoutes(v1)
	v1.PUT("/groups/:group/desired", h.setGroupDesired)
	v1.GET("/devices/:id/desired", h.getDeviceDesired)
	v1.PUT("/devices/:id/desired", h.setDeviceDesired)
	v1.GET("/devices/:id/telemetry", h.deviceTelemetry)
	v1.POST("/feedback", h.postFeedback)
	v1.POST("/bundles", h.uploadBundle)
	v1.GET("/bundles", h.listBundles)
	v1.GET("/bundles/:id", h.getBundle)
	v1.PUT("/bundles/:id/stage", h.setStage)
	h.rolloutRoutes(v1)
	h.tokenRoutes(v1) // tokens.go
	h.enrollRoutes(r, v1)
	h.datasetRoutes(v1)
	v1.GET("/cluster", h.getCluster)
	v1.GET("/trust", h.getTrust) // trust.go
	return r
}

func logRequests(log *slog.Logger) gin.HandlerFunc {
	if log == nil {
		log = slog.Default()
	}
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		// The query string can carry filters but never tokens (they go in a header).
		log.Debug("http", "method", c.Request.Method, "path", c.Request.URL.Path, "status", c.Writer.Status(), "dur", time.Since(start))
	}
}

type handlers struct {
	cfg    Config
	sess   *sessionStore // console sessions (console.go)
	tokens *auth.Tokens  // who a token stands for (roles.go)
}

func (h *handlers) listDevices(c *gin.Context) {
	f := fleet.Filter{Group: c.Query("group"), Search: c.Query("q")}
	if v := c.Query("online"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fail(c, http.StatusBadRequest, "bad_request", "online must be true or false")
			return
		}
		f.Online = &b
	}
	var offset, limit int
	for _, p := range []struct {
		name string
		v    *int
	}{{"offset", &offset}, {"limit", &limit}} {
		if v := c.Query(p.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				fail(c, http.StatusBadRequest, "bad_request", p.name+" must be a whole number, 0 or more")
				return
			}
			*p.v = n
		}
	}
	if pager, ok := h.cfg.Registry.(interface {
		Page(fleet.Filter, int, int) ([]fleet.Device, int)
	}); ok {
		devs, total := pager.Page(f, offset, limit)
		c.JSON(http.StatusOK, gin.H{"devices": devs, "count": len(devs), "total": total})
		return
	}
	devs := h.cfg.Registry.List(f)
	total := len(devs)
	devs = devs[min(offset, total):]
	if limit > 0 && limit < len(devs) {
		devs = devs[:limit]
	}
	c.JSON(http.StatusOK, gin.H{"devices": devs, "count": len(devs), "total": total})
}

func (h *handlers) getDevice(c *gin.Context) {
	d, err := h.cfg.Registry.Get(c.Param("id"))
	if errors.Is(err, fleet.ErrNotFound) {
		fail(c, http.StatusNotFound, "not_found", "no device "+c.Param("id"))
		return
	}
	c.JSON(http.StatusOK, d)
}

func (h *handlers) setGroup(c *gin.Context) {
	var body struct {
		Group string `json:"group"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		fail(c, http.StatusBadRequest, "bad_request", `body must be JSON {"group": "NAME"}: `+err.Error())
		return
	}
	d, err := h.cfg.Registry.SetGroup(c.Request.Context(), c.Param("id"), body.Group)
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		fail(c, http.StatusNotFound, "not_found", "no device "+c.Param("id"))
	case errors.Is(err, fleet.ErrGroup):
		fail(c, http.StatusUnprocessableEntity, "invalid_group", err.Error())
	case err != nil:
		fail(c, http.StatusInternalServerError, "internal", "could not save the group: "+err.Error())
	default:
		c.JSON(http.StatusOK, d)
	}
}

func (h *handlers) listGroups(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"groups": h.cfg.Registry.Groups()})
}

// principal names who is calling, for records and audit.
func principal(c *gin.Context) string {
	if p := c.GetString("principal"); p != "" {
		return p
	}
	return "unknown"
}
