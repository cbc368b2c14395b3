package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/bundles"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/store"
)

// GroupSettings returns a group's stored record; a group never configured has the zero settings
// (not production, capture off) and ok = false.
func (s *desiredService) GroupSettings(ctx context.Context, group string) (GroupRecord, bool, error) {
	g := GroupRecord{Name: group}
	err := s.st.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, bucketGroups, group, &g) })
	if errors.Is(err, store.ErrNotFound) {
		return GroupRecord{Name: group}, false, nil
	}
	if err != nil {
		return GroupRecord{}, false, fmt.Errorf("read group %s: %w", group, err)
	}
	return g, true, nil
}

// Settings answers GET /api/v1/groups/{group}'s settings part.
func (s *desiredService) Settings(ctx context.Context, group string) (any, bool, error) {
	return s.GroupSettings(ctx, group)
}

// UpdateSettings applies a patch in one transaction and returns the new record.
func (s *desiredService) UpdateSettings(ctx context.Context, group string, p fleet.GroupPatch, by string) (any, error) {
	if err := fleet.CheckGroup(group); err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrInvalidSettings, err)
	}
	if p.Capture != nil {
		if err := p.Capture.Check(); err != nil {
			return nil, fmt.Errorf("%w: %w", api.ErrInvalidSettings, err)
		}
	}
	var g GroupRecord
	err := s.st.Update(ctx, func(tx store.Tx) error {
		g = GroupRecord{Name: group}
		if err := store.GetJSON(tx, bucketGroups, group, &g); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if p.Production != nil {
			g.Production = *p.Production
		}
		if p.Capture != nil {
			g.Capture = *p.Capture
		}
		g.SettingsBy, g.SettingsAt = by, time.Now().UTC()
		return store.PutJSON(tx, bucketGroups, group, g)
	})
	if err != nil {
		return nil, fmt.Errorf("update group %s: %w", group, err)
	}
	s.log.Info("group settings changed", "group", group, "production", g.Production, "capture", g.Capture.Enabled, "by", by)
	if p.Capture != nil && s.onCapture != nil {
		s.onCapture(group, g.Capture)
	}
	return g, nil
}

// checkProduction refuses a bundle that is not in the production stage for a production group.
func (s *desiredService) checkProduction(ctx context.Context, group string, rec bundles.Record) error {
	if group == "" {
		return nil
	}
	g, _, err := s.GroupSettings(ctx, group)
	if err != nil {
		return err
	}
	if g.Production && rec.Stage != bundles.StageProduction {
		return fmt.Errorf("%w: group %s is a production group and %s is in stage %q: promote it first (PUT /api/v1/bundles/%s/stage)",
			api.ErrNotProduction, group, rec.Ref(), rec.Stage, rec.ID)
	}
	return nil
}
