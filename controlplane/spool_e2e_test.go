package controlplane_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/wire"
)

type accounting struct {
	Contiguous uint64 `json:"contiguous"`
	Pending    int    `json:"received_past_gap"`
	Dropped    uint64 `json:"dropped"`
}

func telemetryAccounting(cp *fleettest.ControlPlane, dev string) accounting {
	var body struct {
		Accounting accounting `json:"accounting"`
	}
	cp.Do("GET", "/api/v1/devices/"+dev+"/telemetry?limit=1", nil, &body)
	return body.Accounting
}

// spoolReport is the device's spool accounting, from a report made after since.
func spoolReport(cp *fleettest.ControlPlane, dev string, since time.Time) *wire.SpoolReport {
	d := cp.Devices()[dev]
	if d.Reported == nil || d.Reported.At.Before(since) {
		return nil
	}
	return d.Reported.Spool
}

// TestStoreAndForward: the broker (the control plane's embedded one) goes away while a device with
// a small spool keeps producing telemetry; when it is back every sequence number the device issued
// is accounted for at the control plane — delivered, inside a merged window, or reported dropped —
// and a device killed with SIGKILL mid-drain loses nothing it had spooled.
func TestStoreAndForward(t *testing.T) {
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{})
	ag := fleettest.StartAgent(t, cp.BrokerURL(), "sf-1", "g", "--telemetry-interval", "250ms", "--spool-max-bytes", "1500", "--drain-rate", "50")
	fleettest.Eventually(t, 30*time.Second, "telemetry flowing", func() bool { return telemetryAccounting(cp, "sf-1").Contiguous >= 3 })

	cp.Stop()
	time.Sleep(5 * time.Second) // the device keeps measuring; its spool fills and merges
	cp.Start()
	back := time.Now()

	accounted := func(what string) wire.SpoolReport {
		var rep wire.SpoolReport
		fleettest.Eventually(t, 60*time.Second, what, func() bool {
			r := spoolReport(cp, "sf-1", back)
			acc := telemetryAccounting(cp, "sf-1")
			if r == nil {
				return false
			}
			rep = *r
			// Everything issued so far up to the device's last report is committed or reported
			// dropped, and the device holds nothing unacknowledged below it.
			return acc.Contiguous+1 >= r.NextSeq && acc.Pending == 0 && r.LastAck+1 >= r.NextSeq
		})
		return rep
	}
	rep := accounted("every sequence number accounted after the outage")
	acc := telemetryAccounting(cp, "sf-1")
	t.Logf("after a 5 s outage: %d sequence numbers issued, %d merges, %d dropped by the device, %d reported dropped at the control plane",
		rep.NextSeq-1, rep.Merged, rep.Dropped, acc.Dropped)
	if rep.Merged == 0 {
		t.Fatal("the small spool never merged: the outage did not exercise the bound")
	}
	if acc.Dropped != rep.Dropped {
		t.Fatalf("device dropped %d sequence numbers, control plane accounted %d", rep.Dropped, acc.Dropped)
	}

	// Build a backlog, then kill the device while it drains.
	cp.Stop()
	time.Sleep(3 * time.Second)
	cp.Start()
	back = time.Now()
	fleettest.Eventually(t, 30*time.Second, "drain started", func() bool {
		r := spoolReport(cp, "sf-1", back)
		return r != nil && r.LastAck > rep.NextSeq
	})
	ag.Kill()
	ag.Start(t)
	back = time.Now()
	rep2 := accounted("every sequence number accounted after a kill mid-drain")
	if rep2.NextSeq <= rep.NextSeq {
		t.Fatalf("sequence numbers went back after the restart: %d then %d", rep.NextSeq, rep2.NextSeq)
	}
	b, _ := json.Marshal(rep2)
	t.Logf("after kill -9 mid-drain: %s", b)
}
