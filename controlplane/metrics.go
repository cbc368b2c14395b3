package controlplane

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgefleet/edgefleet/controlplane/blocksrv"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
)

// metricsHandler exposes the fleet in Prometheus format. Values are read at scrape time from the
// parts that own them, so nothing is counted twice.
func metricsHandler(reg *fleet.Registry, blocks *blocksrv.Server) http.Handler {
	r := prometheus.NewRegistry()
	counter := func(name, help string, f func() float64) {
		r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	counter("edgefleet_bundle_blocks_sent_total", "Bundle blocks sent to devices on their own topic.", func() float64 { return float64(blocks.Stats().Frames) })
	counter("edgefleet_bundle_bytes_sent_total", "Bundle payload bytes sent to devices on their own topic.", func() float64 { return float64(blocks.Stats().Bytes) })
	counter("edgefleet_bundle_carousel_bytes_total", "Bundle payload bytes broadcast on carousels.", func() float64 { return float64(blocks.Stats().CarouselBytes) })
	counter("edgefleet_bundle_requests_refused_total", "Block requests refused (malformed or not allowed).", func() float64 { return float64(blocks.Stats().Refused) })
	counter("edgefleet_bundle_requests_dropped_total", "Block requests dropped because the queue was full.", func() float64 { return float64(blocks.Stats().Dropped) })
	counter("edgefleet_fleet_messages_total", "Fleet messages accepted.", func() float64 { a, _ := reg.Stats(); return float64(a) })
	counter("edgefleet_fleet_messages_malformed_total", "Fleet messages refused as malformed.", func() float64 { _, m := reg.Stats(); return float64(m) })
	r.MustRegister(&fleetCollector{reg: reg})
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{})
}

var devicesDesc = prometheus.NewDesc("edgefleet_devices", "Devices by group and online state.", []string{"group", "online"}, nil)

type fleetCollector struct{ reg *fleet.Registry }

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) { ch <- devicesDesc }

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.reg.Groups() {
		ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(g.Online), g.Name, "true")
		ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(g.Devices-g.Online), g.Name, "false")
	}
}
