// Package deploy owns rollouts: plan, stages, gates, statistics and decisions, as pure functions
// over interfaces for what they read (device states, metrics). It has no MQTT, no HTTP and no
// clock of its own; the control plane drives it and persists its decisions.
package deploy
