// Package telemetry owns what devices measure and send about themselves: telemetry kinds, host
// health collected with gopsutil, and (in later parts) latency histograms, drift profiles and
// accuracy. It knows nothing about MQTT or HTTP; agent and controlplane wire it.
package telemetry
