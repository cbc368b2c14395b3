package dataset

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Files of a capture as they travel in transfer.Frame (Bundle holds the capture id): the manifest
// first (index 0), then the encrypted samples block by block.
const (
	FileManifest = "manifest.json"
	FileSamples  = "samples.age"
	// UploadSub is the upload topic's tail: {p}/devices/{id}/upload/capture.
	UploadSub = "capture"
	// DefaultBlockSize is the size of one upload block (as for bundles).
	DefaultBlockSize = 64 << 10
)

// Triggers of a capture.
const (
	TriggerCommand  = "command"
	TriggerSchedule = "schedule"
	TriggerDrift    = "drift"
)

// Manifest describes a sealed capture: its lineage and the digests of its encrypted file.
type Manifest struct {
	Capture   string    `json:"capture"` // 64 hex characters
	Device    string    `json:"device"`
	Model     string    `json:"model"`
	Version   string    `json:"version,omitempty"`
	Bundle    string    `json:"bundle,omitempty"`
	Trigger   string    `json:"trigger"`
	Reason    string    `json:"reason,omitempty"`
	Requester string    `json:"requester,omitempty"`
	Samples   int       `json:"samples"`
	Started   time.Time `json:"started"`
	Sealed    time.Time `json:"sealed"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	BlockSize int64     `json:"block_size"`
	Blocks    []string  `json:"blocks"` // SHA-256 of each block, hex
}

// ErrManifest is returned for a manifest that does not hold together.
var ErrManifest = errors.New("bad capture manifest")

// Check validates the manifest's shape (not the data).
func (m *Manifest) Check() error {
	switch {
	case !ValidID(m.Capture):
		return fmt.Errorf("%w: capture id must be 64 hex characters", ErrManifest)
	case m.Model == "" || m.Samples <= 0 || m.Size <= 0 || m.BlockSize <= 0 || m.BlockSize > 1<<20:
		return fmt.Errorf("%w: model, samples, size and block size are required", ErrManifest)
	case int64(len(m.Blocks)) != (m.Size+m.BlockSize-1)/m.BlockSize:
		return fmt.Errorf("%w: %d block digests for %d bytes in blocks of %d", ErrManifest, len(m.Blocks), m.Size, m.BlockSize)
	}
	for _, d := range append([]string{m.SHA256}, m.Blocks...) {
		if b, err := hex.DecodeString(d); err != nil || len(b) != 32 {
			return fmt.Errorf("%w: digest %q", ErrManifest, d)
		}
	}
	return nil
}

// BlockLen is the length of block i.
func (m *Manifest) BlockLen(i int64) int64 {
	return min(m.BlockSize, m.Size-i*m.BlockSize)
}

// ValidID reports whether s is a capture id: 64 lowercase hex characters.
func ValidID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Ack is the control plane's answer to an upload, sent as a command (type "capture_ack"): the
// blocks it holds, verified and written, or that the whole capture is stored (Complete), or
// that it refuses the capture (Refused, with a reason): either way the device may delete it.
type Ack struct {
	Type     string  `json:"type"` // "capture_ack"
	Capture  string  `json:"capture"`
	Have     []int64 `json:"have,omitempty"`
	Complete bool    `json:"complete,omitempty"`
	Refused  string  `json:"refused,omitempty"`
}

// Command is the control plane's order to capture (type "capture"), or its standing grant for
// automatic captures (type "capture_policy"). Permitted must be true: the device refuses
// anything else (deny by default), and Recipient is the control plane's age public key.
type Command struct {
	Type       string `json:"type"`
	Capture    string `json:"capture,omitempty"`
	Model      string `json:"model,omitempty"`
	MaxSamples int    `json:"max_samples"`
	Reason     string `json:"reason,omitempty"`
	Requester  string `json:"requester,omitempty"`
	Permitted  *bool  `json:"permitted,omitempty"`
	Recipient  string `json:"recipient,omitempty"`
	// Seconds bounds how long the capture stays armed before it is sealed with what it has.
	Seconds int `json:"seconds,omitempty"`
}
