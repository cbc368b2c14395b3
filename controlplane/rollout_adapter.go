package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/assign"
	"github.com/edgefleet/edgefleet/controlplane/bundles"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/ota/desired"
)

// rolloutFleet is the rollout controller's view of the control plane (rollout.Fleet): the
// registry, the bundle registry, group baselines and desired states, through the same services
// direct assignment uses.
type rolloutFleet struct{ ds *desiredService }

var _ rollout.Fleet = rolloutFleet{}

func (f rolloutFleet) Devices() []fleet.Device { return f.ds.reg.List(fleet.Filter{}) }

func (f rolloutFleet) Bundle(ctx context.Context, ref string) (rollout.Bundle, error) {
	rec, err := f.ds.bundles.Get(ctx, ref)
	if errors.Is(err, bundles.ErrNotFound) {
		return rollout.Bundle{}, fmt.Errorf("%w %s: push it first (controlplane bundles push FILE)", rollout.ErrUnknownBundle, ref)
	}
	if err != nil {
		return rollout.Bundle{}, err
	}
	return rollout.Bundle{ID: rec.ID, Name: rec.Name, Version: rec.Version, Stage: rec.Stage, Size: rec.Size}, nil
}

// Incompatible says why a device can run no variant of the bundle's model version.
func (f rolloutFleet) Incompatible(ctx context.Context, bundleID string, d fleet.Device) (string, error) {
	rec, err := f.ds.bundles.Get(ctx, bundleID)
	if err != nil {
		return "", err
	}
	// The production stage is checked for the whole rollout by the controller, with its own error.
	_, _, err = f.ds.pickVariant(ctx, d, rec, false)
	var unfit *unfitError
	if errors.As(err, &unfit) {
		return unfit.why, nil
	}
	return "", err
}

// Variants lists the ids of every variant of the bundle's model version.
func (f rolloutFleet) Variants(ctx context.Context, bundleID string) []string {
	rec, err := f.ds.bundles.Get(ctx, bundleID)
	if err != nil {
		return nil
	}
	var ids []string
	for _, v := range f.ds.bundles.Variants(ctx, rec) {
		ids = append(ids, v.ID)
	}
	return ids
}

// groupFields are the fields of a stored group the rollout controller reads. "production" is
// read from the raw record so that the group settings endpoint can add it without a change here.
type groupFields struct {
	Baseline   map[string]string `json:"baseline"`
	Production bool              `json:"production"`
}

func (f rolloutFleet) Group(ctx context.Context, group string) (rollout.GroupInfo, error) {
	var g groupFields
	err := f.ds.st.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, bucketGroups, group, &g) })
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return rollout.GroupInfo{}, err
	}
	return rollout.GroupInfo{Baseline: g.Baseline, Production: g.Production}, nil
}

// Assign issues the device's desired state for model; the same assignment again issues nothing
// (no new generation), which is what makes the controller's outbox safe to replay.
func (f rolloutFleet) Assign(ctx context.Context, device, model, bundleID, rolloutID string, bake time.Duration) error {
	d, err := f.ds.reg.Get(device)
	if err != nil {
		return fmt.Errorf("%w: %w", rollout.ErrRefused, err)
	}
	if bundleID == "" {
		_, err := f.ds.assigner.Update(ctx, device, reportedGen(d), func(models map[string]desired.Model) error {
			if _, ok := models[model]; !ok {
				return assign.ErrUnchanged
			}
			delete(models, model)
			return nil
		})
		return err
	}
	rec, err := f.ds.bundles.Get(ctx, bundleID)
	if errors.Is(err, bundles.ErrNotFound) {
		return fmt.Errorf("%w: %w", rollout.ErrRefused, err)
	}
	if err != nil {
		return err
	}
	g, _, err := f.ds.GroupSettings(ctx, d.Group)
	if err != nil {
		return err
	}
	rec, m, err := f.ds.pickVariant(ctx, d, rec, g.Production)
	if errors.Is(err, api.ErrIncompatible) || errors.Is(err, api.ErrNoVariant) {
		return fmt.Errorf("%w: %w", rollout.ErrRefused, err)
	}
	if err != nil {
		return err
	}
	_, err = f.ds.assigner.Update(ctx, device, reportedGen(d), func(models map[string]desired.Model) error {
		nm := desired.Model{Bundle: rec.ID, Name: rec.Name, Version: rec.Version, Variant: rec.Variant, Size: rec.Size,
			Rollout: rolloutID, Bake: desired.Duration(bake)}
		if err := f.ds.wrapKey(ctx, d, m, models[model], &nm); err != nil {
			return err
		}
		if models[model] == nm {
			return assign.ErrUnchanged
		}
		models[model] = nm
		return nil
	})
	return err
}

// SetGroupBaseline updates the group's record in place: fields this file does not know (group
// settings added later) are kept as they are.
func (f rolloutFleet) SetGroupBaseline(ctx context.Context, group, model, bundleID, by string) error {
	return f.ds.st.Update(ctx, func(tx store.Tx) error {
		raw := map[string]json.RawMessage{}
		if err := store.GetJSON(tx, bucketGroups, group, &raw); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		base := map[string]string{}
		if b, ok := raw["baseline"]; ok {
			if err := json.Unmarshal(b, &base); err != nil {
				return fmt.Errorf("decode baseline of group %s: %w", group, err)
			}
		}
		if bundleID == "" {
			delete(base, model)
		} else {
			base[model] = bundleID
		}
		set := func(k string, v any) {
			b, _ := json.Marshal(v)
			raw[k] = b
		}
		set("name", group)
		set("baseline", base)
		set("by", by)
		set("at", time.Now().UTC())
		return store.PutJSON(tx, bucketGroups, group, raw)
	})
}
