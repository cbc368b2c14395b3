package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/retrain"
	"github.com/edgefleet/edgefleet/telemetry"
	"github.com/edgefleet/edgefleet/telemetry/drift"
)

// GroupDrift is one group's fleet-wide drift for a bundle: the devices' feature histograms merged
// and compared with the bundle's reference.
type GroupDrift struct {
	Group    string       `json:"group"`
	Devices  int          `json:"devices"`
	Requests uint64       `json:"requests"`
	Report   drift.Report `json:"report"`
	// Accuracy from feedback over the period, and whether it fell from the earlier half of the
	// period to the recent half while the inputs still match the reference (concept drift).
	Accuracy telemetry.Accuracy     `json:"accuracy"`
	Concept  telemetry.ConceptDrift `json:"concept"`
}

// DriftView answers GET /api/v1/drift.
type DriftView struct {
	Bundle string       `json:"bundle"`
	Since  time.Time    `json:"since"`
	Groups []GroupDrift `json:"groups"`
}

var errNoReference = errors.New("the bundle has no drift reference (build it with --reference samples)")

// groupWindows sums a bundle's inference windows per group since a time (one group when group is
// set): devices and requests seen, the drift summaries to merge, and accuracy in the earlier and the
// recent half of the period (the concept-drift test compares them).
type groupWindows struct {
	devices       int
	requests      uint64
	sums          []drift.Summary
	before, after telemetry.Accuracy
}

func (g *groupWindows) accuracy() telemetry.Accuracy {
	return telemetry.Accuracy{Correct: g.before.Correct + g.after.Correct, Labeled: g.before.Labeled + g.after.Labeled}
}

func (c *cohorts) groupWindows(ctx context.Context, bundleID, group string, since time.Time) (map[string]*groupWindows, error) {
	per := map[string]*groupWindows{}
	mid := since.Add(time.Since(since) / 2)
	for _, d := range c.reg.List(fleet.Filter{Group: group}) {
		msgs, err := c.ing.Query(ctx, d.ID, telemetry.KindInference, since, 0)
		if err != nil {
			return nil, err
		}
		seen := false
		for _, m := range msgs {
			var w telemetry.InferenceWindow
			if json.Unmarshal(m.Body, &w) != nil || w.Bundle != bundleID {
				continue
			}
			a := per[d.Group]
			if a == nil {
				a = &groupWindows{}
				per[d.Group] = a
			}
			a.requests += w.Requests
			if w.Drift != nil {
				a.sums = append(a.sums, *w.Drift)
			}
			half := &a.after
			if w.End.Before(mid) {
				half = &a.before
			}
			half.Correct += w.Correct
			half.Labeled += w.Labeled
			seen = true
		}
		if seen {
			per[d.Group].devices++
		}
	}
	return per, nil
}

// score merges a group's drift summaries and compares them with the bundle's reference.
func score(ref *drift.Reference, group string, sums []drift.Summary) (drift.Report, error) {
	merged, err := drift.Merge(sums...)
	if err != nil {
		return drift.Report{}, fmt.Errorf("merge drift of group %s: %w", group, err)
	}
	rep, err := drift.Compare(ref, merged, drift.Options{})
	if err != nil {
		return drift.Report{}, fmt.Errorf("score drift of group %s: %w", group, err)
	}
	return rep, nil
}

// Drift merges the inference windows of bundle from every device (of group, when given) since a
// time, per group, and scores them against the bundle's reference.
func (c *cohorts) Drift(ctx context.Context, bundleID, group string, since time.Time) (DriftView, error) {
	ref := c.reference(bundleID)
	if ref == nil {
		return DriftView{}, errNoReference
	}
	per, err := c.groupWindows(ctx, bundleID, group, since)
	if err != nil {
		return DriftView{}, err
	}
	v := DriftView{Bundle: bundleID, Since: since, Groups: []GroupDrift{}}
	for g, a := range per {
		if len(a.sums) == 0 {
			continue
		}
		rep, err := score(ref, g, a.sums)
		if err != nil {
			return DriftView{}, err
		}
		v.Groups = append(v.Groups, GroupDrift{Group: g, Devices: a.devices, Requests: a.requests, Report: rep,
			Accuracy: a.accuracy(), Concept: telemetry.DetectConceptDrift(a.before, a.after, rep.Drifted)})
	}
	sort.Slice(v.Groups, func(i, j int) bool { return v.Groups[i].Group < v.Groups[j].Group })
	return v, nil
}

// Assess scores one bundle per group for the retraining triggers: drift of the merged windows
// against the bundle's reference (when it has one), accuracy over the period, and the
// concept-drift test of the earlier half of the period against the recent half.
func (c *cohorts) Assess(ctx context.Context, bundleID string, since time.Time) ([]retrain.Assessment, error) {
	ref := c.reference(bundleID)
	per, err := c.groupWindows(ctx, bundleID, "", since)
	if err != nil {
		return nil, err
	}
	var out []retrain.Assessment
	for g, a := range per {
		as := retrain.Assessment{Group: g, Accuracy: a.accuracy()}
		if ref != nil && len(a.sums) > 0 {
			rep, err := score(ref, g, a.sums)
			if err != nil {
				return nil, err
			}
			as.Drifted = rep.Drifted
			as.Scores = map[string]any{"max_psi": rep.MaxPSI, "max_js": rep.MaxJS, "max_ks": rep.MaxKS, "drifted_features": rep.DriftedFeatures}
		}
		as.Concept = telemetry.DetectConceptDrift(a.before, a.after, as.Drifted)
		out = append(out, as)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out, nil
}

// Serving lists the bundles devices report active, with their groups.
func (c *cohorts) Serving(ctx context.Context) []retrain.Serving {
	groups := map[string]map[string]bool{}
	models := map[string]string{}
	for _, d := range c.reg.List(fleet.Filter{}) {
		if d.Reported == nil {
			continue
		}
		for name, m := range d.Reported.Models {
			if m.Active == "" {
				continue
			}
			if groups[m.Active] == nil {
				groups[m.Active] = map[string]bool{}
			}
			groups[m.Active][d.Group] = true
			models[m.Active] = name + "@" + m.Version
		}
	}
	var out []retrain.Serving
	for id, gs := range groups {
		name, version, _ := strings.Cut(models[id], "@")
		s := retrain.Serving{Bundle: id, Model: name, Version: version}
		for g := range gs {
			s.Groups = append(s.Groups, g)
		}
		sort.Strings(s.Groups)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Bundle < out[j].Bundle })
	return out
}
