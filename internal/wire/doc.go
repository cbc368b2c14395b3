// Package wire is the MQTT contract between agents and the control plane (DESIGN.md "The MQTT
// contract"): topic names, device id rules, the shard function, and the JSON documents carried on
// the status, reported, telemetry and ack topics. Both sides import it; it imports neither, and it
// knows nothing about brokers or clients.
package wire
