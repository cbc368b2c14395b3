package controlplane_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/telemetry"
)

// TestTelemetryBudgetWiring: `agent run --telemetry-budget` reports its spend in every health
// message, and a device whose budget cannot carry even one health message holds its telemetry back
// (saying so in its log) instead of sending it. The arithmetic is tested in telemetry/budget.
func TestTelemetryBudgetWiring(t *testing.T) {
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{})
	fleettest.StartAgent(t, cp.BrokerURL(), "budget-roomy", "g", "--telemetry-interval", "250ms", "--telemetry-budget", "100000000")
	tight := fleettest.StartAgent(t, cp.BrokerURL(), "budget-tight", "g", "--telemetry-interval", "250ms", "--telemetry-budget", "2000")

	var rep telemetry.BudgetReport
	fleettest.Eventually(t, 30*time.Second, "a health message with the budget's report", func() bool {
		var body struct {
			Messages []struct {
				Body json.RawMessage `json:"body"`
			} `json:"messages"`
		}
		cp.Do("GET", "/api/v1/devices/budget-roomy/telemetry?kind=health&limit=3", nil, &body)
		for _, m := range body.Messages {
			var h telemetry.Health
			if json.Unmarshal(m.Body, &h) == nil && h.Budget != nil && h.Budget.Used > 0 {
				rep = *h.Budget
				return true
			}
		}
		return false
	})
	if rep.BytesPerDay != 100000000 || rep.Level != 0 || rep.Held != 0 {
		t.Fatalf("roomy budget report %+v: want full detail, nothing held", rep)
	}

	fleettest.Eventually(t, 30*time.Second, "the tight device online and saying it is over budget", func() bool {
		return cp.Devices()["budget-tight"].Online && strings.Contains(tight.Log(), "telemetry over its byte budget")
	})
	time.Sleep(time.Second) // several intervals, all held
	var body struct {
		Count int `json:"count"`
	}
	cp.Do("GET", "/api/v1/devices/budget-tight/telemetry", nil, &body)
	if body.Count != 0 {
		t.Fatalf("a device with a 2,000-byte daily budget sent %d telemetry messages; a health message alone is larger", body.Count)
	}
}
