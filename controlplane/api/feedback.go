package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/fleet"
)

// CommandFunc publishes a command to a device (its cmd topic, QoS 1).
type CommandFunc func(ctx context.Context, device string, payload []byte) error

// maxFeedback bounds the entries of one POST /api/v1/feedback.
const maxFeedback = 10000

// FeedbackEntry is ground truth for one earlier prediction of a device, by its request id.
type FeedbackEntry struct {
	Device string          `json:"device"`
	Model  string          `json:"model"`
	ID     string          `json:"id"`
	Label  json.RawMessage `json:"label"` // class index (number) or a label of the bundle (string)
}

// FeedbackResult is the answer to POST /api/v1/feedback.
type FeedbackResult struct {
	Accepted       int      `json:"accepted"`
	UnknownDevices int      `json:"unknown_devices"`
	Unknown        []string `json:"unknown,omitempty"` // the unknown device ids, once each
	Failed         int      `json:"failed"`            // entries whose command could not be published
}

// feedbackCmd is the command a device gets: the agent's POST /v1/feedback body with a type.
type feedbackCmd struct {
	Type  string          `json:"type"`
	Model string          `json:"model"`
	ID    string          `json:"id"`
	Label json.RawMessage `json:"label"`
}

func (h *handlers) postFeedback(c *gin.Context) {
	if h.cfg.Command == nil {
		fail(c, http.StatusNotImplemented, "not_implemented", "this control plane cannot send commands to devices")
		return
	}
	var entries []FeedbackEntry
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&entries); err != nil {
		fail(c, http.StatusBadRequest, "bad_request", `body must be a JSON array [{"device", "model", "id", "label"}]: `+err.Error())
		return
	}
	if len(entries) > maxFeedback {
		fail(c, http.StatusBadRequest, "bad_request", fmt.Sprintf("%d entries; at most %d per request", len(entries), maxFeedback))
		return
	}
	for i, e := range entries {
		lbl := bytes.TrimSpace(e.Label)
		if e.Device == "" || e.Model == "" || e.ID == "" || len(lbl) == 0 || string(lbl) == "null" {
			fail(c, http.StatusBadRequest, "bad_request", fmt.Sprintf("entry %d: device, model, id and label are required", i))
			return
		}
		if lbl[0] != '"' && (lbl[0] < '0' || lbl[0] > '9') {
			fail(c, http.StatusBadRequest, "bad_request", fmt.Sprintf("entry %d: label must be a class index or a label string, not %s", i, lbl))
			return
		}
	}
	var res FeedbackResult
	known := map[string]bool{}
	for _, e := range entries {
		ok, seen := known[e.Device]
		if !seen {
			_, err := h.cfg.Registry.Get(e.Device)
			ok = !errors.Is(err, fleet.ErrNotFound) && err == nil
			known[e.Device] = ok
			if !ok {
				res.Unknown = append(res.Unknown, e.Device)
			}
		}
		if !ok {
			res.UnknownDevices++
			continue
		}
		b, _ := json.Marshal(feedbackCmd{Type: "feedback", Model: e.Model, ID: e.ID, Label: e.Label})
		if err := h.cfg.Command(c.Request.Context(), e.Device, b); err != nil {
			res.Failed++
			continue
		}
		res.Accepted++
	}
	if res.Failed > 0 && res.Accepted == 0 {
		fail(c, http.StatusServiceUnavailable, "unavailable", fmt.Sprintf("no feedback command could be published (%d failed)", res.Failed))
		return
	}
	c.JSON(http.StatusAccepted, res)
}
