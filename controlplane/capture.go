package controlplane

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"

	"github.com/edgefleet/edgefleet/controlplane/datasets"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/internal/wire"
)

// openDatasets wires sample capture: datasets under DATA/datasets encrypted to DATA/dataset.key,
// commands on the devices' cmd topics, capture policies from the group settings, and the
// standing grant sent to a group's devices whenever its capture policy changes.
func openDatasets(cfg Config, st store.Store, ds *desiredService, reg *fleet.Registry,
	publish func(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error, topics wire.Topics, log *slog.Logger,
	onComplete func(context.Context, datasets.Record)) (*datasets.Service, error) {
	svc, err := datasets.New(datasets.Config{
		Store: st, Dir: filepath.Join(cfg.DataDir, "datasets"), KeyPath: filepath.Join(cfg.DataDir, "dataset.key"),
		Command: func(ctx context.Context, device string, payload []byte) error {
			return publish(ctx, topics.Cmd(device), payload, 1, false)
		},
		Policy: func(ctx context.Context, group string) (fleet.CapturePolicy, error) {
			g, _, err := ds.GroupSettings(ctx, group)
			return g.Capture, err
		},
		DeviceGroup: func(device string) (string, bool) {
			d, err := reg.Get(device)
			return d.Group, err == nil
		},
		Now: cfg.Clock, Logger: log, OnComplete: onComplete,
	})
	if err != nil {
		return nil, err
	}
	ds.onCapture = func(group string, p fleet.CapturePolicy) {
		for _, d := range reg.List(fleet.Filter{Group: group}) {
			if err := svc.Grant(ds.ctx, d.ID, p); err != nil {
				log.Warn("capture policy not sent to a device", "device", d.ID, "err", err)
			}
		}
	}
	return svc, nil
}

// grantOnConnect re-sends a device's standing capture grant (its group's policy, enabled or
// not) each time it comes online, so a device that was offline when the policy changed, or
// that moved groups, holds the current one. Work is queued; past 4096 waiting it is dropped
// (the next connection or policy change sends it again).
func grantOnConnect(ctx context.Context, svc *datasets.Service, ds *desiredService, reg *fleet.Registry, log *slog.Logger) func(device string, payload []byte) {
	q := make(chan string, 4096)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case dev := <-q:
				d, err := reg.Get(dev)
				if err != nil || d.Group == "" {
					continue
				}
				g, _, err := ds.GroupSettings(ctx, d.Group)
				if err != nil {
					continue
				}
				if err := svc.Grant(ctx, dev, g.Capture); err != nil {
					log.Debug("capture policy not sent; it goes on the next connection", "device", dev, "err", err)
				}
			}
		}
	}()
	return func(device string, payload []byte) {
		var st wire.Status
		if json.Unmarshal(payload, &st) != nil || st.State != wire.StateOnline {
			return
		}
		select {
		case q <- device:
		default:
		}
	}
}
