package wire

import (
	"encoding/json"
	"time"
)

// Status is the retained document on {p}/devices/{id}/status, published by the agent when it
// connects and, as its Last Will, by the broker when the connection dies. Session grows at every
// connect, so a late Will of an older session is recognised and ignored.
type Status struct {
	State   string    `json:"state"` // "online" or "offline"
	Session uint64    `json:"session"`
	At      time.Time `json:"at,omitzero"`
	// Group and Labels are the agent's requested registration; the registry uses them only the
	// first time it sees the device (afterwards the registry's group wins).
	Group  string            `json:"group,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

const (
	StateOnline  = "online"
	StateOffline = "offline"
)

// Reported is the retained document on {p}/devices/{id}/reported.
type Reported struct {
	Device       string            `json:"device"`
	AgentVersion string            `json:"agent_version"`
	Session      uint64            `json:"session"`
	Group        string            `json:"group,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Host         HostFacts         `json:"host"`
	Runtime      *RuntimeFacts     `json:"runtime,omitempty"`
	Generation   uint64            `json:"generation"`
	// DesiredError says why the last desired state received was refused ("" when none was).
	DesiredError string                 `json:"desired_error,omitempty"`
	Models       map[string]ModelReport `json:"models"`
	Spool        *SpoolReport           `json:"spool,omitempty"`
	At           time.Time              `json:"at,omitzero"`
}

// SpoolReport is the device's store-and-forward accounting.
type SpoolReport struct {
	NextSeq     uint64 `json:"next_seq"`
	LastAck     uint64 `json:"last_ack"`
	Pending     int    `json:"pending"`
	PendingSeqs uint64 `json:"pending_seqs"`
	Bytes       int64  `json:"bytes"`
	Merged      uint64 `json:"merged"`
	Dropped     uint64 `json:"dropped"`
}

// HostFacts describe the device's hardware and OS.
type HostFacts struct {
	OS           string   `json:"os"`
	Arch         string   `json:"arch"`
	CPUModel     string   `json:"cpu_model,omitempty"`
	CPUs         int      `json:"cpus"`
	MemoryBytes  uint64   `json:"memory_bytes"`
	DiskFree     uint64   `json:"disk_free_bytes"`
	Accelerators []string `json:"accelerators,omitempty"`
	Hostname     string   `json:"hostname,omitempty"`
}

// RuntimeFacts describe the inference runtime the agent actually loaded.
type RuntimeFacts struct {
	ORTVersion         string   `json:"ort_version,omitempty"`
	MaxOpset           int      `json:"max_opset,omitempty"`
	ExecutionProviders []string `json:"execution_providers,omitempty"`
	FreeMemory         uint64   `json:"free_memory_bytes,omitempty"`
	Error              string   `json:"error,omitempty"`
	// AgeRecipient is the device's age X25519 recipient (age1...): encrypted bundles' content keys
	// are wrapped to it (DATA/age.key holds the identity).
	AgeRecipient string `json:"age_recipient,omitempty"`
}

// ModelReport is the state of one model name on a device.
type ModelReport struct {
	Active   string `json:"active,omitempty"`
	Previous string `json:"previous,omitempty"`
	Version  string `json:"version,omitempty"`
	Slot     string `json:"slot,omitempty"`
	State    string `json:"state,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Message  string `json:"message,omitempty"`
	Rollout  string `json:"rollout,omitempty"`
	Target   string `json:"target,omitempty"`
	Progress string `json:"progress,omitempty"`
	Provider string `json:"execution_provider,omitempty"`
}

// Telemetry is the envelope of every message on a shard telemetry topic. Seq is the device's
// telemetry sequence number (1, 2, 3...), persisted by the agent so it never repeats.
type Telemetry struct {
	Device string `json:"device"`
	Seq    uint64 `json:"seq"`
	// Session is the agent's connection session when it sent the message (not when it made
	// it): a message of a newer session than the control plane has seen proves the device is
	// connected again even when its retained online status was lost, which a clustered broker
	// losing a node can do.
	Session uint64 `json:"session,omitempty"`
	// FirstSeq, when set, means this message accounts for every sequence number from FirstSeq to
	// Seq: the spool merged older windows into it.
	FirstSeq uint64 `json:"first_seq,omitempty"`
	// Covers, when set, lists exactly the sequence ranges this message stands for (a merged window
	// of one kind has holes where other kinds' messages sit); it replaces FirstSeq..Seq.
	Covers [][2]uint64 `json:"covers,omitempty"`
	// Dropped lists sequence ranges the device's spool had to drop (full, no way to merge): the
	// control plane counts them and stops waiting for them.
	Dropped [][2]uint64     `json:"dropped,omitempty"`
	Kind    string          `json:"kind"`
	At      time.Time       `json:"at"`
	Body    json.RawMessage `json:"body"`
}

// Ack is sent on {p}/devices/{id}/ack: the highest contiguous telemetry sequence the control plane
// has committed. The agent may forget everything up to it.
type Ack struct {
	Seq uint64 `json:"seq"`
}

// Limits on inbound payloads: larger ones are refused before they are parsed.
const (
	MaxStatusBytes    = 4 << 10
	MaxReportedBytes  = 256 << 10
	MaxTelemetryBytes = 256 << 10
)
