package controlplane

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/bundles"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

// A model version may ship as several signed variants (fp32, int8, per execution provider). The
// operator names the version; each device gets the variant it can run:
//
//  1. a variant built for an accelerator provider the device reports (cuda, tensorrt), because it
//     is the one made for that hardware;
//  2. otherwise the variant the operator named (or the default one for a bare name@version) when
//     the device can run it;
//  3. otherwise the variant the device can run with the smallest peak memory (then size): a
//     device short of memory for the fp32 model takes the int8 one.
//
// A bundle the device already holds (active or previous) is kept as it is, so a rollback never
// downloads. In a production group only variants in the production stage are candidates.

// candidate is one variant with its manifest.
type candidate struct {
	rec bundles.Record
	m   *bundle.Manifest
}

// pickVariant returns the variant of rec's model version that device d should get. The error
// wraps api.ErrIncompatible; with several variants its message says that none fits and why each
// does not.
func (s *desiredService) pickVariant(ctx context.Context, d fleet.Device, rec bundles.Record, productionOnly bool) (bundles.Record, *bundle.Manifest, error) {
	if d.Reported != nil {
		for _, m := range d.Reported.Models {
			if m.Active == rec.ID || m.Previous == rec.ID {
				man, err := s.bundles.Manifest(ctx, rec.ID)
				return rec, man, err
			}
		}
	}
	vs := s.bundles.Variants(ctx, rec)
	var fits []candidate
	var why []string
	for _, v := range vs {
		if productionOnly && v.Stage != bundles.StageProduction {
			why = append(why, fmt.Sprintf("%s: stage %s", label(v), v.Stage))
			continue
		}
		if v.Stage == bundles.StageArchived && v.ID != rec.ID {
			continue
		}
		m, err := s.bundles.Manifest(ctx, v.ID)
		if err != nil {
			return bundles.Record{}, nil, fmt.Errorf("read manifest of %s: %w", v.Ref(), err)
		}
		if w := compatible(d, m); w != "" {
			why = append(why, label(v)+": "+w)
			continue
		}
		fits = append(fits, candidate{v, m})
	}
	if len(fits) == 0 {
		if len(vs) == 1 {
			return bundles.Record{}, nil, &unfitError{kind: api.ErrIncompatible, device: d.ID, why: strings.TrimPrefix(why[0], label(rec)+": ")}
		}
		return bundles.Record{}, nil, &unfitError{kind: api.ErrNoVariant, device: d.ID,
			why: fmt.Sprintf("no variant of %s@%s fits (%s)", rec.Name, rec.Version, strings.Join(why, "; "))}
	}
	c := chooseVariant(d, rec.ID, fits)
	return c.rec, c.m, nil
}

// unfitError says why a device can run no variant of a bundle; it matches api.ErrIncompatible
// (one variant) or api.ErrNoVariant (several).
type unfitError struct {
	kind   error
	device string
	why    string
}

func (e *unfitError) Error() string { return fmt.Sprintf("%v: %s: %s", e.kind, e.device, e.why) }
func (e *unfitError) Unwrap() error { return e.kind }

// chooseVariant applies the preference order above to variants the device can run.
func chooseVariant(d fleet.Device, named string, fits []candidate) candidate {
	var eps []string
	if d.Reported != nil && d.Reported.Runtime != nil {
		eps = d.Reported.Runtime.ExecutionProviders
	}
	for _, c := range fits {
		for _, ep := range c.m.Requirements.ExecutionProviders {
			if ep != "cpu" && slices.Contains(eps, ep) {
				return c
			}
		}
	}
	for _, c := range fits {
		if c.rec.ID == named {
			return c
		}
	}
	return slices.MinFunc(fits, func(a, b candidate) int {
		if x, y := a.m.Requirements.PeakMemoryBytes, b.m.Requirements.PeakMemoryBytes; x != y {
			return cmpInt(x, y)
		}
		if a.rec.Size != b.rec.Size {
			return cmpInt(a.rec.Size, b.rec.Size)
		}
		return strings.Compare(a.rec.ID, b.rec.ID)
	})
}

func cmpInt[T int | int64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func label(r bundles.Record) string {
	if r.Variant == "" {
		return "default variant"
	}
	return "variant " + r.Variant
}
