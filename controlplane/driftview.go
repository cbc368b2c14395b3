package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/fleet"
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
}

// DriftView answers GET /api/v1/drift.
type DriftView struct {
	Bundle string       `json:"bundle"`
	Since  time.Time    `json:"since"`
	Groups []GroupDrift `json:"groups"`
}

var errNoReference = errors.New("the bundle has no drift reference (build it with --reference samples)")

// Drift merges the inference windows of bundle from every device (of group, when given) since a
// time, per group, and scores them against the bundle's reference.
func (c *cohorts) Drift(ctx context.Context, bundleID, group string, since time.Time) (DriftView, error) {
	ref := c.reference(bundleID)
	if ref == nil {
		return DriftView{}, errNoReference
	}
	type acc struct {
		devices  int
		requests uint64
		sums     []drift.Summary
	}
	per := map[string]*acc{}
	for _, d := range c.reg.List(fleet.Filter{Group: group}) {
		msgs, err := c.ing.Query(ctx, d.ID, telemetry.KindInference, since, 0)
		if err != nil {
			return DriftView{}, err
		}
		seen := false
		for _, m := range msgs {
			var w telemetry.InferenceWindow
			if json.Unmarshal(m.Body, &w) != nil || w.Bundle != bundleID || w.Drift == nil {
				continue
			}
			a := per[d.Group]
			if a == nil {
				a = &acc{}
				per[d.Group] = a
			}
			a.requests += w.Requests
			a.sums = append(a.sums, *w.Drift)
			seen = true
		}
		if seen {
			per[d.Group].devices++
		}
	}
	v := DriftView{Bundle: bundleID, Since: since, Groups: []GroupDrift{}}
	for g, a := range per {
		merged, err := drift.Merge(a.sums...)
		if err != nil {
			return DriftView{}, fmt.Errorf("merge drift of group %s: %w", g, err)
		}
		rep, err := drift.Compare(ref, merged, drift.Options{})
		if err != nil {
			return DriftView{}, fmt.Errorf("score drift of group %s: %w", g, err)
		}
		v.Groups = append(v.Groups, GroupDrift{Group: g, Devices: a.devices, Requests: a.requests, Report: rep})
	}
	sort.Slice(v.Groups, func(i, j int) bool { return v.Groups[i].Group < v.Groups[j].Group })
	return v, nil
}
