package controlplane_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgefleet/edgefleet/internal/brokertest"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/mqttc"
	"github.com/edgefleet/edgefleet/internal/pgtest"
	"github.com/edgefleet/edgefleet/internal/wire"
)

type telemetryPage struct {
	Messages   []wire.Telemetry `json:"messages"`
	Accounting struct {
		Contiguous uint64 `json:"contiguous"`
		Pending    int    `json:"received_past_gap"`
		Gaps       uint64 `json:"gaps"`
	} `json:"accounting"`
}

// TestTelemetryOnPostgres runs a control plane with --telemetry-store on a real PostgreSQL: the
// agents' telemetry is committed there (not in the bbolt file) and served by the telemetry API. A
// second control plane on the same broker and the same telemetry store (a replica) serves what the
// first committed before it started, and the two then ingest side by side without holes in any
// device's accounting.
func TestTelemetryOnPostgres(t *testing.T) {
	dsn := pgtest.Start(t, pgtest.Options{}).NewDatabase(t)
	// One external broker that both control planes use, as replicas do.
	broker := brokertest.StartMochi(t, brokertest.MochiOptions{})
	a := fleettest.StartControlPlane(t, fleettest.CPOptions{TelemetryStore: dsn,
		Broker: mqttc.Config{URLs: []string{broker.URL()}, ClientID: "_edgefleet-controlplane-a"}})
	devices := []string{"pg-dev-1", "pg-dev-2"}
	for _, d := range devices {
		fleettest.StartAgent(t, broker.URL(), d, "line-a")
	}
	get := func(cp *fleettest.ControlPlane, dev string) telemetryPage {
		var p telemetryPage
		cp.Do("GET", "/api/v1/devices/"+dev+"/telemetry", nil, &p)
		return p
	}
	fleettest.Eventually(t, 60*time.Second, "telemetry of every agent through the API", func() bool {
		for _, d := range devices {
			if p := get(a, d); len(p.Messages) < 2 || p.Accounting.Contiguous < 2 {
				return false
			}
		}
		return true
	})

	// The rows are in PostgreSQL.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM edgefleet_kv WHERE bucket = 'telemetry'`).Scan(&rows); err != nil || rows < 4 {
		t.Fatalf("telemetry rows in PostgreSQL: %d, %v", rows, err)
	}

	// A replica: its own data folder (metadata), the same broker and telemetry store.
	b := fleettest.StartControlPlane(t, fleettest.CPOptions{TelemetryStore: dsn,
		Broker: mqttc.Config{URLs: []string{broker.URL()}, ClientID: "_edgefleet-controlplane-b"}})
	fleettest.Eventually(t, 60*time.Second, "the replica serves telemetry the first committed before it started", func() bool {
		for _, d := range devices {
			p := get(b, d)
			if len(p.Messages) == 0 || p.Messages[0].Seq != 1 {
				return false
			}
		}
		return true
	})
	// Both ingest the same devices now; each device's accounting stays contiguous on both.
	var mark [2]map[string]uint64
	for i, cp := range []*fleettest.ControlPlane{a, b} {
		mark[i] = map[string]uint64{}
		for _, d := range devices {
			mark[i][d] = get(cp, d).Accounting.Contiguous
		}
	}
	fleettest.Eventually(t, 60*time.Second, "both replicas commit further telemetry, no holes", func() bool {
		for i, cp := range []*fleettest.ControlPlane{a, b} {
			for _, d := range devices {
				p := get(cp, d)
				if p.Accounting.Contiguous < mark[i][d]+2 || p.Accounting.Pending != 0 {
					return false
				}
				for j := 1; j < len(p.Messages); j++ {
					if p.Messages[j].Seq == p.Messages[j-1].Seq {
						t.Fatalf("%s on replica %d: seq %d stored twice", d, i, p.Messages[j].Seq)
					}
				}
			}
		}
		return true
	})
}
