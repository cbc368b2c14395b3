package controlplane_test

import (
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/brokertest"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/mqttc"
)

// fleetComesOnline is the scenario run against every broker: agents appear online with their
// groups, a SIGKILLed agent goes offline through its Last Will, and a control-plane restart keeps
// the registry while live agents come back online.
func fleetComesOnline(t *testing.T, cp *fleettest.ControlPlane, brokerURL string) {
	groups := map[string]string{"dev-a1": "line-a", "dev-a2": "line-a", "dev-b1": "line-b"}
	agents := map[string]*fleettest.Agent{}
	for id, g := range groups {
		agents[id] = fleettest.StartAgent(t, brokerURL, id, g, "--labels", "site=test")
	}
	fleettest.Eventually(t, 30*time.Second, "three devices online with their groups", func() bool {
		devs := cp.Devices()
		for id, g := range groups {
			d, ok := devs[id]
			if !ok || !d.Online || d.Group != g || d.Reported == nil || d.Labels["site"] != "test" {
				return false
			}
		}
		return len(devs) == 3
	})
	fleettest.Eventually(t, 30*time.Second, "health telemetry with sequence numbers", func() bool {
		d := cp.Devices()["dev-a1"]
		return d.Health != nil && d.Health.MemTotalBytes > 0 && d.LastSeq >= 1
	})

	agents["dev-b1"].Kill() // SIGKILL: no DISCONNECT, only the broker's Last Will tells
	fleettest.Eventually(t, 30*time.Second, "killed agent offline via Last Will", func() bool {
		devs := cp.Devices()
		return !devs["dev-b1"].Online && devs["dev-a1"].Online && devs["dev-a2"].Online
	})

	cp.Restart()
	devs := cp.Devices()
	if len(devs) != 3 || devs["dev-b1"].Group != "line-b" || devs["dev-b1"].Online {
		t.Fatalf("registry after restart: %+v", devs)
	}
	fleettest.Eventually(t, 60*time.Second, "live agents online again after the control plane restart", func() bool {
		devs := cp.Devices()
		return devs["dev-a1"].Online && devs["dev-a2"].Online && !devs["dev-b1"].Online
	})

	// A restarted agent comes back with a higher session number.
	before := cp.Devices()["dev-b1"].Session
	agents["dev-b1"].Start(t)
	fleettest.Eventually(t, 30*time.Second, "restarted agent online with a new session", func() bool {
		d := cp.Devices()["dev-b1"]
		return d.Online && d.Session > before
	})
}

func TestFleetOnlineEmbeddedBroker(t *testing.T) {
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{})
	fleetComesOnline(t, cp, cp.BrokerURL())
}

func TestFleetOnlineMosquitto(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.MosquittoOptions{})
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{Broker: mqttc.Config{URLs: []string{m.URL()}}})
	fleetComesOnline(t, cp, m.URL())
}

func TestAPIRequiresToken(t *testing.T) {
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{})
	good := cp.Token
	for _, tok := range []string{"", "wrong"} {
		cp.Token = tok
		if code, _ := cp.Get("/api/v1/devices", nil); code != 401 {
			t.Errorf("token %q: status %d, want 401", tok, code)
		}
	}
	cp.Token = good
	if code, _ := cp.Get("/api/v1/devices", nil); code != 200 {
		t.Errorf("admin token: status %d", code)
	}
	if code, _ := cp.Get("/api/v1/devices/nope", nil); code != 404 {
		t.Errorf("unknown device: status %d", code)
	}
}
