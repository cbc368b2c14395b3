package retrain

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/edgefleet/edgefleet/telemetry"
)

// Serving is a bundle that devices run now.
type Serving struct {
	Bundle, Model, Version string
	Groups                 []string
}

// Assessment is one group's recent state for a bundle.
type Assessment struct {
	Group string
	// Drifted is the input/output drift verdict (sample-size aware); Scores are the report's
	// headline figures for the event.
	Drifted bool
	Scores  map[string]any
	// Accuracy over the whole period, and the concept-drift verdict (earlier half vs recent half).
	Accuracy telemetry.Accuracy
	Concept  telemetry.ConceptDrift
}

// Source is what the monitor needs of the fleet.
type Source interface {
	Serving(ctx context.Context) []Serving
	Assess(ctx context.Context, bundle string, since time.Time) ([]Assessment, error)
}

// Triggers configures when the monitor fires.
type Triggers struct {
	// Window of telemetry looked at (default 1h).
	Window time.Duration
	// AccuracyMin fires an accuracy event when a group's accuracy over at least
	// telemetry.MinConceptLabels labels is below it (0: off).
	AccuracyMin float64
	// Every fires a scheduled event per model (0: off).
	Every time.Duration
	// Cooldown between two events of one trigger for one bundle (default 24h).
	Cooldown time.Duration
}

// Monitor evaluates the triggers; Check is called on a ticker.
type Monitor struct {
	N      *Notifier
	Src    Source
	T      Triggers
	Logger *slog.Logger
}

// Check looks at every serving bundle once and queues the events whose trigger crossed.
func (m *Monitor) Check(ctx context.Context) error {
	window := m.T.Window
	if window <= 0 {
		window = time.Hour
	}
	cool := m.T.Cooldown
	if cool <= 0 {
		cool = 24 * time.Hour
	}
	now := m.N.cfg.Now()
	scheduled := map[string]bool{}
	for _, s := range m.Src.Serving(ctx) {
		base := Data{Model: s.Model, Version: s.Version, Bundle: s.Bundle, Groups: s.Groups}
		if m.T.Every > 0 && !scheduled[s.Model] {
			scheduled[s.Model] = true
			d := base
			d.Reason = fmt.Sprintf("scheduled retraining every %s", m.T.Every)
			if _, err := m.N.NotifyOnce(ctx, "schedule/"+s.Model, m.T.Every, TypeSchedule, d); err != nil {
				return err
			}
		}
		as, err := m.Src.Assess(ctx, s.Bundle, now.Add(-window))
		if err != nil {
			return fmt.Errorf("assess %s: %w", s.Bundle, err)
		}
		var drifted, low, concept []string
		scores, accs := map[string]any{}, map[string]any{}
		for _, a := range as {
			scores[a.Group] = a.Scores
			accs[a.Group] = map[string]any{"correct": a.Accuracy.Correct, "labeled": a.Accuracy.Labeled,
				"accuracy_before": a.Concept.Before, "accuracy_recent": a.Concept.Recent, "concept_drift": a.Concept.Concept}
			if a.Drifted {
				drifted = append(drifted, a.Group)
			}
			if m.T.AccuracyMin > 0 && a.Accuracy.Labeled >= telemetry.MinConceptLabels && a.Accuracy.Value() < m.T.AccuracyMin {
				low = append(low, a.Group)
			}
			if a.Concept.Concept {
				concept = append(concept, a.Group)
			}
		}
		fire := func(trigger, typ, reason string, groups []string) error {
			if len(groups) == 0 {
				return nil
			}
			slices.Sort(groups)
			d := base
			d.Groups, d.Reason, d.Drift, d.Accuracy = groups, reason, scores, accs
			_, err := m.N.NotifyOnce(ctx, trigger+"/"+s.Bundle, cool, typ, d)
			return err
		}
		if err := fire("drift", TypeDrift, "input or output distribution drifted from the bundle's reference", drifted); err != nil {
			return err
		}
		if err := fire("accuracy", TypeAccuracy, fmt.Sprintf("accuracy below %.3f", m.T.AccuracyMin), low); err != nil {
			return err
		}
		if err := fire("concept", TypeConcept, "accuracy fell while inputs still match the reference (concept drift)", concept); err != nil {
			return err
		}
	}
	return nil
}

// Run calls Check every interval until ctx ends.
func (m *Monitor) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.Check(ctx); err != nil && ctx.Err() == nil {
				m.Logger.Warn("retraining triggers not evaluated", "err", err)
			}
		}
	}
}
