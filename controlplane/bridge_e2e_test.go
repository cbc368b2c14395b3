package controlplane_test

import (
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/brokertest"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/mqttc"
)

// TestBridgedSiteBroker: a site whose devices connect to its own Mosquitto, bridged to the broker
// the control plane uses with the bridge lines of packaging/mosquitto/bridge.conf (addresses and
// credentials adapted): the device comes online, and its Last Will crosses the bridge when it dies.
func TestBridgedSiteBroker(t *testing.T) {
	central := brokertest.StartMosquitto(t, brokertest.MosquittoOptions{})
	site := brokertest.StartMosquitto(t, brokertest.MosquittoOptions{Config: []string{
		"connection edgefleet",
		"address " + strings.TrimPrefix(central.URL(), "mqtt://"),
		"topic edgefleet/# both 1",
		"remote_clientid _bridge-site-test",
		"cleansession false",
		"bridge_protocol_version mqttv311",
	}})
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{Broker: mqttc.Config{URLs: []string{central.URL()}}})
	ag := fleettest.StartAgent(t, site.URL(), "bridged-1", "site-berlin")
	fleettest.Eventually(t, 30*time.Second, "device behind the site broker online at the control plane", func() bool {
		d, ok := cp.Devices()["bridged-1"]
		return ok && d.Online && d.Group == "site-berlin" && d.Reported != nil
	})
	ag.Kill()
	fleettest.Eventually(t, 30*time.Second, "its Last Will crossed the bridge", func() bool { return !cp.Devices()["bridged-1"].Online })
}
