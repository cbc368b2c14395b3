package api

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"
)

// Cluster tells which replica answers and which one leads (GET /api/v1/cluster).
type Cluster interface {
	Cluster(ctx context.Context) ClusterStatus
}

// ClusterStatus is the body of GET /api/v1/cluster.
type ClusterStatus struct {
	// Replica is the id of the replica that answered.
	Replica string `json:"replica"`
	// Leader is the id of the replica that runs the singletons ("" when unknown).
	Leader string `json:"leader"`
	// IsLeader says whether the answering replica leads.
	IsLeader bool `json:"is_leader"`
	// Store is the metadata store: bbolt or etcd.
	Store string `json:"store"`
	// Shards are the telemetry shards this replica holds (all of them when it runs alone).
	Shards []int `json:"shards"`
	// Error says why Leader is unknown.
	Error string `json:"error,omitempty"`
}

func (h *handlers) getCluster(c *gin.Context) {
	if h.cfg.Cluster == nil {
		fail(c, http.StatusNotImplemented, "not_implemented", "this control plane does not report its replicas")
		return
	}
	c.JSON(http.StatusOK, h.cfg.Cluster.Cluster(c.Request.Context()))
}
