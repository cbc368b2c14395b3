package controlplane_test

import (
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane"
	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/internal/etcdtest"
	"github.com/edgefleet/edgefleet/internal/fleettest"
)

func clusterStatus(t *testing.T, cp *fleettest.ControlPlane) api.ClusterStatus {
	t.Helper()
	var st api.ClusterStatus
	if code, err := cp.Get("/api/v1/cluster", &st); code != 200 || err != nil {
		t.Fatalf("GET /api/v1/cluster: %d %v", code, err)
	}
	return st
}

// TestReplicasOnEtcd: two control planes share one 3-member etcd cluster. Both serve the API on
// the same metadata; exactly one leads (runs the rollout controller and the desired-state
// re-issuer); when the leader stops, the other takes over.
func TestReplicasOnEtcd(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	etcd := controlplane.EtcdConfig{Endpoints: c.Endpoints(), Prefix: "replicas", LeaderTTL: time.Second}
	a := fleettest.StartControlPlane(t, fleettest.CPOptions{Store: controlplane.StoreEtcd, Etcd: etcd, ReplicaID: "cp-a"})
	fleettest.Eventually(t, 60*time.Second, "cp-a to lead", func() bool { return clusterStatus(t, a).IsLeader })
	b := fleettest.StartControlPlane(t, fleettest.CPOptions{Store: controlplane.StoreEtcd, Etcd: etcd, ReplicaID: "cp-b"})

	for _, cp := range []*fleettest.ControlPlane{a, b} {
		st := clusterStatus(t, cp)
		if st.Leader != "cp-a" || st.Store != "etcd" || st.IsLeader != (st.Replica == "cp-a") {
			t.Fatalf("while cp-a leads, %s reports %+v", st.Replica, st)
		}
	}

	// One metadata store: what a call on cp-a records, cp-b reads.
	a.Do("PUT", "/api/v1/devices/ghost-1/group", map[string]string{"group": "line-a"}, nil)
	var audit struct {
		Entries []struct {
			Target string `json:"target"`
		} `json:"entries"`
	}
	if code, err := b.Get("/api/v1/audit", &audit); code != 200 || err != nil {
		t.Fatalf("audit on cp-b: %d %v", code, err)
	}
	found := false
	for _, e := range audit.Entries {
		found = found || strings.HasSuffix(e.Target, "/ghost-1/group")
	}
	if !found {
		t.Fatalf("cp-b does not see the audit entry of a call made on cp-a: %+v", audit.Entries)
	}

	a.Stop()
	fleettest.Eventually(t, 60*time.Second, "cp-b to take over", func() bool {
		st := clusterStatus(t, b)
		return st.IsLeader && st.Leader == "cp-b"
	})
}

// TestSingleProcessAlwaysLeads: with the default bbolt store the process is alone and leads.
func TestSingleProcessAlwaysLeads(t *testing.T) {
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{ReplicaID: "solo"})
	st := clusterStatus(t, cp)
	if !st.IsLeader || st.Leader != "solo" || st.Store != "bbolt" {
		t.Fatalf("bbolt control plane reports %+v", st)
	}
}
