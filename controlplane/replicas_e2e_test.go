package controlplane_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/updater"
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

	// The telemetry shards are split between the live replicas.
	fleettest.Eventually(t, 60*time.Second, "shards split 32/32", func() bool {
		return len(clusterStatus(t, a).Shards) == 32 && len(clusterStatus(t, b).Shards) == 32
	})

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

	// A group set through cp-a reaches cp-b's registry, and cp-b's own flushes keep it.
	if code, body := a.Do("PUT", "/api/v1/devices/sim-00001/group", map[string]string{"group": "line-b"}, nil); code != 200 {
		t.Fatalf("set group on cp-a: %d %s", code, body)
	}
	fleettest.Eventually(t, 60*time.Second, "cp-b to see the new group", func() bool { return b.Devices()["sim-00001"].Group == "line-b" })

	a.Stop()
	fleettest.Eventually(t, 60*time.Second, "cp-b to take over", func() bool {
		st := clusterStatus(t, b)
		return st.IsLeader && st.Leader == "cp-b"
	})
	fleettest.Eventually(t, 60*time.Second, "cp-b to hold every shard", func() bool { return len(clusterStatus(t, b).Shards) == 64 })
	if got := onlineCount(b); got != n {
		t.Fatalf("after cp-a stopped, cp-b shows %d of %d devices online", got, n)
	}
	if g := b.Devices()["sim-00001"].Group; g != "line-b" {
		t.Fatalf("group set through cp-a is %q on cp-b after a while", g)
	}
}

// TestSingleProcessAlwaysLeads: with the default bbolt store the process is alone and leads.
func TestSingleProcessAlwaysLeads(t *testing.T) {
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{ReplicaID: "solo"})
	st := clusterStatus(t, cp)
	if !st.IsLeader || st.Leader != "solo" || st.Store != "bbolt" || len(st.Shards) != 64 {
		t.Fatalf("bbolt control plane reports %+v", st)
	}
}

// TestRolloutSurvivesLeaderStop: a staged rollout driven by the leader replica goes on, and
// completes, on the other replica once the leader stops mid-rollout; the decisions of both
// terms are in the one rollout record that etcd holds.
func TestRolloutSurvivesLeaderStop(t *testing.T) {
	const n = 10
	fleettest.Models(t)
	k := fleettest.NewKeys(t)
	c := etcdtest.StartCluster(t, 3, etcdtest.Recommended...)
	m := brokertest.StartMosquitto(t, brokertest.MosquittoOptions{})
	opts := fleettest.CPOptions{Store: controlplane.StoreEtcd, ReplicaID: "cp-a", TrustKeys: []string{k.PubPath},
		Etcd:   controlplane.EtcdConfig{Endpoints: c.Endpoints(), Prefix: "rollout", LeaderTTL: time.Second},
		Broker: mqttc.Config{URLs: []string{m.URL()}}}
	a := fleettest.StartControlPlane(t, opts)
	fleettest.Eventually(t, 60*time.Second, "cp-a to lead", func() bool { return clusterStatus(t, a).IsLeader })
	opts.ReplicaID, opts.ControlKey = "cp-b", filepath.Join(a.Cfg.DataDir, "control.key")
	b := fleettest.StartControlPlane(t, opts)
	fleettest.Simulate(t, a, m.URL(), k, n, "--groups", "line-a", "--rate", "10")

	v1, id1 := fleettest.BuildBundleRef(t, k, "hello_deepa.onnx", "wake", "1.0.0", 300)
	v2, id2 := fleettest.RebuildWith(t, k, v1, "2.0.0", nil)
	for _, cp := range []*fleettest.ControlPlane{a, b} { // bundle files live in each replica's DATA
		cp.Push(v1)
		cp.Push(v2)
	}
	fleettest.Eventually(t, 60*time.Second, "fleet online on both", func() bool { return onlineCount(a) == n && onlineCount(b) == n })
	if code, body := a.Do("PUT", "/api/v1/groups/line-a/desired", map[string]string{"bundle": "wake@1.0.0"}, nil); code != 200 {
		t.Fatalf("baseline: %d %s", code, body)
	}
	onBundle := func(cp *fleettest.ControlPlane, id string) int {
		k := 0
		for i := 1; i <= n; i++ {
			if m := cp.Model(fmt.Sprintf("sim-%05d", i), "wake"); m.Active == id && m.State == updater.StepCommitted {
				k++
			}
		}
		return k
	}
	fleettest.Eventually(t, 120*time.Second, "fleet on v1", func() bool { return onBundle(b, id1) == n })

	spec := `{"bundle": "wake@2.0.0", "target": {"groups": ["line-a"]},
	  "stages": [{"devices": 2, "bake": "15s"}, {"percent": 100, "bake": "2s"}],
	  "gates": {"min_samples": 1, "evaluations": 1, "p95_latency_max_ratio": 50}}`
	var out struct{ ID string }
	if code, body := a.Do("POST", "/api/v1/rollouts", strings.NewReader(spec), &out); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	// The canaries take v2 under cp-a's lead; then cp-a stops, in the middle of the bake.
	fleettest.Eventually(t, 120*time.Second, "canaries on v2", func() bool { return onBundle(b, id2) >= 2 })
	var v struct {
		State     string
		Decisions []struct{ Action, Reason, By string }
	}
	a.Do("GET", "/api/v1/rollouts/"+out.ID, nil, &v)
	if v.State != "running" || onBundle(b, id2) == n {
		t.Fatalf("rollout %s with %d devices on v2 before the leader stopped; want it mid-way", v.State, onBundle(b, id2))
	}
	a.Stop()
	fleettest.Eventually(t, 60*time.Second, "cp-b to take over", func() bool { return clusterStatus(t, b).IsLeader })
	fleettest.Eventually(t, 180*time.Second, "rollout to end on cp-b", func() bool {
		b.Do("GET", "/api/v1/rollouts/"+out.ID, nil, &v)
		return v.State == "completed" || v.State == "rolled_back" || v.State == "failed"
	})
	if v.State != "completed" {
		js, _ := json.MarshalIndent(v.Decisions, "", " ")
		t.Fatalf("rollout ended %s after the leader stopped:\n%s", v.State, js)
	}
	fleettest.Eventually(t, 60*time.Second, "whole fleet on v2", func() bool { return onBundle(b, id2) == n })
	for _, d := range v.Decisions {
		t.Logf("decision: %s %s", d.Action, d.Reason)
	}
}
