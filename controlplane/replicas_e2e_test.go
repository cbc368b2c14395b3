package controlplane_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane"
	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/internal/brokertest"
	"github.com/edgefleet/edgefleet/internal/etcdtest"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/mqttc"
)

func clusterStatus(t *testing.T, cp *fleettest.ControlPlane) api.ClusterStatus {
	t.Helper()
	var st api.ClusterStatus
	if code, err := cp.Get("/api/v1/cluster", &st); code != 200 || err != nil {
		t.Fatalf("GET /api/v1/cluster: %d %v", code, err)
	}
	return st
}

// onlineCount is how many devices the control plane's registry shows online.
func onlineCount(cp *fleettest.ControlPlane) int {
	n := 0
	for _, d := range cp.Devices() {
		if d.Online {
			n++
		}
	}
	return n
}

// TestReplicasOnEtcd: two control planes share one 3-member etcd cluster and one Mosquitto, with
// simulated devices on it. Both serve the API on the same metadata and see the fleet; exactly
// one leads (runs the rollout controller and the desired-state re-issuer); when the leader stops,
// the other takes over.
func TestReplicasOnEtcd(t *testing.T) {
	c := etcdtest.StartCluster(t, 3, etcdtest.Recommended...)
	m := brokertest.StartMosquitto(t, brokertest.MosquittoOptions{})
	etcd := controlplane.EtcdConfig{Endpoints: c.Endpoints(), Prefix: "replicas", LeaderTTL: time.Second}
	opts := fleettest.CPOptions{Store: controlplane.StoreEtcd, Etcd: etcd, ReplicaID: "cp-a", Broker: mqttc.Config{URLs: []string{m.URL()}}}
	a := fleettest.StartControlPlane(t, opts)
	fleettest.Eventually(t, 60*time.Second, "cp-a to lead", func() bool { return clusterStatus(t, a).IsLeader })
	// The replicas sign desired states with the same control key: devices trust one.
	opts.ReplicaID, opts.ControlKey = "cp-b", filepath.Join(a.Cfg.DataDir, "control.key")
	b := fleettest.StartControlPlane(t, opts)
	const n = 5
	fleettest.Simulate(t, a, m.URL(), fleettest.NewKeys(t), n, "--groups", "line-a")
	for _, cp := range []*fleettest.ControlPlane{a, b} {
		fleettest.Eventually(t, 60*time.Second, "every device online on both replicas", func() bool { return onlineCount(cp) == n })
	}

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
	if got := onlineCount(b); got != n {
		t.Fatalf("after cp-a stopped, cp-b shows %d of %d devices online", got, n)
	}
}

// TestSingleProcessAlwaysLeads: with the default bbolt store the process is alone and leads.
func TestSingleProcessAlwaysLeads(t *testing.T) {
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{ReplicaID: "solo"})
	st := clusterStatus(t, cp)
	if !st.IsLeader || st.Leader != "solo" || st.Store != "bbolt" {
		t.Fatalf("bbolt control plane reports %+v", st)
	}
}
