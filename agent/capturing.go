package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/edgefleet/edgefleet/agent/capture"
	"github.com/edgefleet/edgefleet/agent/infer"
	"github.com/edgefleet/edgefleet/internal/dataset"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/telemetry"
	"github.com/edgefleet/edgefleet/telemetry/drift"
)

// crashCaptureUpload is the --crash-at value that kills the agent once the control plane has
// acknowledged part of a capture upload (resume tests).
const crashCaptureUpload = "capture-upload"

// startCapture opens the capture manager (DATA/captures, DATA/capture.key,
// DATA/capture-policy.json), hooks it into inference and starts its loops.
func (a *Agent) startCapture(ctx context.Context, wg *sync.WaitGroup) error {
	cfg := capture.Config{
		Dir: filepath.Join(a.cfg.DataDir, "captures"), KeyPath: filepath.Join(a.cfg.DataDir, "capture.key"),
		GrantPath: filepath.Join(a.cfg.DataDir, "capture-policy.json"), Device: a.cfg.ID,
		Publish: a.publishUpload, BlockSize: a.cfg.CaptureBlockSize, Logger: a.log,
	}
	if a.cfg.CrashAt == crashCaptureUpload {
		cfg.AfterAck = func(have, total int) {
			if have > 0 && have < total {
				a.log.Warn("crash-at: killing the agent mid-upload", "have", have, "total", total)
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	m, err := capture.New(cfg)
	if err != nil {
		return fmt.Errorf("sample capture: %w", err)
	}
	a.capture = m
	a.ota.server.SetCapture(func(md *infer.Model, id string, in, out []onnxrt.Tensor) {
		m.Observe(md.Name, md.Version, md.Bundle, id, in, out)
	})
	wg.Add(1)
	go func() { defer wg.Done(); m.Run(ctx) }()
	if a.cfg.CaptureEvery > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); a.captureSchedule(ctx) }()
	}
	return nil
}

// publishUpload sends one upload message at QoS 1; it fails at once when offline.
func (a *Agent) publishUpload(ctx context.Context, payload []byte) error {
	c, _ := a.current()
	if c == nil {
		return errors.New("offline")
	}
	return waitToken(ctx, c.Publish(a.topics.Upload(a.cfg.ID, dataset.UploadSub), 1, false, payload))
}

// handleCaptureCmd runs on the MQTT client's goroutine: nothing here blocks.
func (a *Agent) handleCaptureCmd(typ string, payload []byte) {
	if a.capture == nil {
		return
	}
	switch typ {
	case "capture_ack":
		var ack dataset.Ack
		if err := json.Unmarshal(payload, &ack); err != nil {
			a.log.Warn("capture ack is not JSON", "err", err)
			return
		}
		a.capture.OnAck(ack)
	case "capture_policy":
		var c dataset.Command
		if err := json.Unmarshal(payload, &c); err != nil {
			a.log.Warn("capture policy is not JSON", "err", err)
			return
		}
		if err := a.capture.SetGrant(c); err != nil {
			a.log.Warn("capture policy not applied", "err", err)
			return
		}
		a.log.Info("capture policy", "permitted", c.Permitted != nil && *c.Permitted, "max_samples", c.MaxSamples)
	case "capture":
		var c dataset.Command
		if err := json.Unmarshal(payload, &c); err != nil {
			a.log.Warn("capture command is not JSON", "err", err)
			return
		}
		res := captureResult{Type: "capture", Capture: c.Capture, OK: true}
		if err := a.capture.Arm(c); err != nil {
			a.log.Warn("capture refused", "capture", c.Capture, "model", c.Model, "err", err)
			res.OK, res.Error = false, err.Error()
		}
		b, _ := json.Marshal(res)
		if cl, _ := a.current(); cl != nil {
			cl.Publish(a.topics.CmdResult(a.cfg.ID), 1, false, b) // not waited for: we are on paho's goroutine
		}
	}
}

// captureResult answers a capture command on cmd/result.
type captureResult struct {
	Type    string `json:"type"`
	Capture string `json:"capture"`
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
}

// captureSchedule arms a capture of every served model each CaptureEvery, under the grant.
func (a *Agent) captureSchedule(ctx context.Context) {
	t := time.NewTicker(a.cfg.CaptureEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, name := range a.ota.server.Names() {
			a.triggerCapture(name, dataset.TriggerSchedule, "schedule: every "+a.cfg.CaptureEvery.String())
		}
	}
}

func (a *Agent) triggerCapture(model, trigger, reason string) {
	if a.capture == nil || a.capture.Armed(model) {
		return
	}
	id, err := a.capture.Trigger(model, trigger, reason)
	if errors.Is(err, capture.ErrNotPermitted) {
		if _, logged := a.captureDenied.LoadOrStore(model, true); !logged {
			a.log.Info("automatic capture not permitted: the group's capture policy does not allow it", "model", model, "trigger", trigger)
		}
		return
	}
	if err != nil {
		a.log.Debug("automatic capture not started", "model", model, "trigger", trigger, "err", err)
		return
	}
	a.captureDenied.Delete(model)
	a.log.Info("automatic capture", "capture", id, "model", model, "reason", reason)
}

// captureOnDrift arms a capture of a window's model when its largest PSI against the bundle's
// reference passes --capture-drift-psi (and the window has enough samples to be tested).
func (a *Agent) captureOnDrift(w telemetry.InferenceWindow, ref *drift.Reference) {
	if a.cfg.CaptureDriftPSI <= 0 || w.Drift == nil || ref == nil {
		return
	}
	rep, err := drift.Compare(ref, *w.Drift, drift.Options{})
	if err != nil || rep.InsufficientSamples || rep.MaxPSI.Score <= a.cfg.CaptureDriftPSI {
		return
	}
	a.triggerCapture(w.Model, dataset.TriggerDrift, fmt.Sprintf("drift: PSI %.3f on %s over %.3f", rep.MaxPSI.Score, rep.MaxPSI.Feature, a.cfg.CaptureDriftPSI))
}
