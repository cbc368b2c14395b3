package agent

import (
	"encoding/json"

	"github.com/edgefleet/edgefleet/agent/infer"
)

// command is a message on the device's cmd topic; Type picks the handler.
type command struct {
	Type string `json:"type"`
	infer.Feedback
}

// handleCmd runs a command from the control plane.
func (a *Agent) handleCmd(payload []byte) {
	var c command
	if err := json.Unmarshal(payload, &c); err != nil {
		a.log.Warn("command is not JSON", "err", err)
		return
	}
	switch c.Type {
	case "feedback":
		// The same path as the local POST /v1/feedback.
		o, err := a.ota.server.Feedback(c.Feedback)
		if err != nil {
			a.log.Info("feedback not applied", "model", c.Model, "id", c.ID, "err", err)
			return
		}
		a.log.Debug("feedback", "model", o.Model, "version", o.Version, "id", c.ID, "correct", o.Correct)
	case "capture", "capture_policy", "capture_ack":
		a.handleCaptureCmd(c.Type, payload) // capturing.go
	default:
		a.log.Debug("command not handled", "type", c.Type)
	}
}
