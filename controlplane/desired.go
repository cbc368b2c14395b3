package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/assign"
	"github.com/edgefleet/edgefleet/controlplane/blocksrv"
	"github.com/edgefleet/edgefleet/controlplane/bundles"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/desired"
	"github.com/edgefleet/edgefleet/ota/seal"
)

const bucketGroups = "groups"

// GroupRecord is a group's stored settings: its committed baseline bundle per model, whether it is
// a production group, and its sample-capture policy.
type GroupRecord struct {
	Name     string            `json:"name"`
	Baseline map[string]string `json:"baseline,omitempty"` // model -> bundle id
	By       string            `json:"by,omitempty"`
	At       time.Time         `json:"at,omitzero"`
	// Production groups accept only bundles in the registry's production stage, by rollout and by
	// direct assignment alike.
	Production bool `json:"production"`
	// Capture is off unless set: captured inputs can hold personal data.
	Capture    fleet.CapturePolicy `json:"capture"`
	SettingsBy string              `json:"settings_by,omitempty"`
	SettingsAt time.Time           `json:"settings_at,omitzero"`
}

// desiredService assigns bundles to devices and groups (direct assignment; rollouts use the same
// path).
type desiredService struct {
	st          store.Store
	reg         *fleet.Registry
	bundles     *bundles.Registry
	assigner    *assign.Assigner
	blocks      *blocksrv.Server
	carouselMin int
	log         *slog.Logger
	ctx         context.Context // lifetime of background carousels

	mu       sync.Mutex
	carousel map[string]time.Time
	// onCapture, when set, runs after a group's capture policy changed (capture.go sends it to
	// the group's devices as their standing grant).
	onCapture func(group string, p fleet.CapturePolicy)
}

// compatible reports why a device cannot run a bundle, or "" when it can (or cannot tell yet:
// a device that has not reported checks the requirements itself before installing).
func compatible(d fleet.Device, m *bundle.Manifest) string {
	if m.Encryption != nil && recipientOf(d) == "" {
		// Deny by default: an encrypted bundle goes only where its key can be wrapped.
		return "bundle is encrypted and the device has not reported an encryption recipient (runtime.age_recipient); it needs an agent that supports bundle encryption, connected at least once"
	}
	if d.Reported == nil {
		return ""
	}
	req := m.Requirements
	if len(req.Arch) > 0 && !slices.Contains(req.Arch, d.Reported.Host.Arch) {
		return fmt.Sprintf("bundle needs arch %v, device is %s", req.Arch, d.Reported.Host.Arch)
	}
	if rt := d.Reported.Runtime; rt != nil && rt.ORTVersion != "" && req.MinORTVersion != "" && versionLess(rt.ORTVersion, req.MinORTVersion) {
		return fmt.Sprintf("bundle needs ONNX Runtime >= %s, device has %s", req.MinORTVersion, rt.ORTVersion)
	}
	if rt := d.Reported.Runtime; rt != nil && rt.MaxOpset > 0 && req.MinOpset > int64(rt.MaxOpset) {
		return fmt.Sprintf("bundle needs opset %d, device's runtime supports up to %d", req.MinOpset, rt.MaxOpset)
	}
	if rt := d.Reported.Runtime; rt != nil && len(rt.ExecutionProviders) > 0 && len(req.ExecutionProviders) > 0 &&
		!slices.ContainsFunc(req.ExecutionProviders, func(ep string) bool { return slices.Contains(rt.ExecutionProviders, ep) }) {
		return fmt.Sprintf("bundle needs execution provider %s, device has %s", strings.Join(req.ExecutionProviders, " or "), strings.Join(rt.ExecutionProviders, ", "))
	}
	// The agent checks memory for a second session itself before loading; here only a device that
	// could not even hold one session is ruled out, so a variant that fits can be chosen instead.
	if rt := d.Reported.Runtime; rt != nil && rt.FreeMemory > 0 && req.PeakMemoryBytes > 0 && uint64(req.PeakMemoryBytes) > rt.FreeMemory {
		return fmt.Sprintf("bundle needs %d MiB of memory at peak, device has %d MiB free", req.PeakMemoryBytes>>20, rt.FreeMemory>>20)
	}
	return ""
}

// versionLess compares dotted numeric versions (1.9 < 1.24).
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// recipientOf is the age recipient a device reported, "" when none.
func recipientOf(d fleet.Device) string {
	if d.Reported == nil || d.Reported.Runtime == nil {
		return ""
	}
	return d.Reported.Runtime.AgeRecipient
}

// wrapKey fills in an encrypted bundle's content key, wrapped to the device's recipient. A key
// already issued to the same recipient for the same bundle is kept, so re-assigning changes
// nothing (age encryption is randomised: a new wrap would be a new desired state every time).
func (s *desiredService) wrapKey(ctx context.Context, d fleet.Device, m *bundle.Manifest, old desired.Model, nm *desired.Model) error {
	if m.Encryption == nil {
		return nil
	}
	recipient := recipientOf(d)
	if old.Bundle == nm.Bundle && old.Recipient == recipient && old.Key != "" {
		nm.Key, nm.Recipient = old.Key, old.Recipient
		return nil
	}
	r, err := seal.ParseRecipient(recipient)
	if err != nil {
		return fmt.Errorf("%w: %s: reported encryption recipient: %v", api.ErrIncompatible, d.ID, err)
	}
	content, err := s.bundles.ContentKey(ctx, nm.Bundle)
	if err != nil {
		return err
	}
	key, err := seal.Wrap(content, r)
	if err != nil {
		return err
	}
	nm.Key, nm.Recipient = key, recipient
	return nil
}

func reportedGen(d fleet.Device) uint64 {
	if d.Reported == nil {
		return 0
	}
	return d.Reported.Generation
}

func (s *desiredService) assign(ctx context.Context, d fleet.Device, rec bundles.Record, bake time.Duration, carousel bool) (assign.Record, error) {
	g, _, err := s.GroupSettings(ctx, d.Group)
	if err != nil {
		return assign.Record{}, err
	}
	rec, m, err := s.pickVariant(ctx, d, rec, g.Production)
	if err != nil {
		return assign.Record{}, err
	}
	return s.assigner.Update(ctx, d.ID, reportedGen(d), func(models map[string]desired.Model) error {
		nm := desired.Model{Bundle: rec.ID, Name: rec.Name, Version: rec.Version, Variant: rec.Variant, Size: rec.Size, Bake: desired.Duration(bake), Carousel: carousel}
		if err := s.wrapKey(ctx, d, m, models[rec.Name], &nm); err != nil {
			return err
		}
		if models[rec.Name] == nm {
			return assign.ErrUnchanged
		}
		models[rec.Name] = nm
		return nil
	})
}

func (s *desiredService) AssignDevice(ctx context.Context, device string, rec bundles.Record, bake time.Duration, by string) (any, error) {
	d, err := s.reg.Get(device)
	if err != nil {
		return nil, err
	}
	if err := s.checkProduction(ctx, d.Group, rec); err != nil {
		return nil, err
	}
	r, err := s.assign(ctx, d, rec, bake, false)
	if err != nil {
		return nil, err
	}
	s.log.Info("bundle assigned", "device", device, "bundle", rec.ID, "ref", rec.Ref(), "by", by)
	return r.State, nil
}

// GroupAssignment is the answer to a group assignment.
type GroupAssignment struct {
	Group    string   `json:"group"`
	Bundle   string   `json:"bundle"`
	Assigned []string `json:"assigned"`
	Refused  []string `json:"refused"`
	Carousel bool     `json:"carousel"`
}

func (s *desiredService) AssignGroup(ctx context.Context, group string, rec bundles.Record, bake time.Duration, by string) (any, error) {
	if err := fleet.CheckGroup(group); err != nil {
		return nil, err
	}
	if err := s.checkProduction(ctx, group, rec); err != nil {
		return nil, err
	}
	devs := s.reg.List(fleet.Filter{Group: group})
	out := GroupAssignment{Group: group, Bundle: rec.ID, Assigned: []string{}, Refused: []string{}}
	out.Carousel = s.carouselMin > 0 && len(devs) >= s.carouselMin
	for _, d := range devs {
		if _, err := s.assign(ctx, d, rec, bake, out.Carousel); err != nil {
			out.Refused = append(out.Refused, err.Error())
			continue
		}
		out.Assigned = append(out.Assigned, d.ID)
	}
	// The baseline is recorded after the members' assignments: recorded first, a member's report
	// arriving meanwhile had it converge to the baseline on its own, without the carousel, and it
	// pulled the whole bundle by itself. A device that joins during the loop converges at its next
	// report.
	err := s.st.Update(ctx, func(tx store.Tx) error {
		g := GroupRecord{Name: group}
		if err := store.GetJSON(tx, bucketGroups, group, &g); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if g.Baseline == nil {
			g.Baseline = map[string]string{}
		}
		g.Baseline[rec.Name], g.By, g.At = rec.ID, by, time.Now().UTC()
		return store.PutJSON(tx, bucketGroups, group, g)
	})
	if err != nil {
		return nil, fmt.Errorf("record group baseline: %w", err)
	}
	if out.Carousel {
		s.startCarousel(rec.ID, rec.Name, out.Assigned)
	}
	s.log.Info("bundle assigned to group", "group", group, "bundle", rec.ID, "ref", rec.Ref(), "devices", len(out.Assigned), "refused", len(out.Refused), "carousel", out.Carousel, "by", by)
	return out, nil
}

// startCarousel broadcasts a bundle once, when the wave is listening: as soon as nine in ten of
// the online devices it was assigned to report the bundle as their target (they accepted the
// desired state and subscribed to the carousel), at the latest after carouselReadyMax, which stays
// under the agents' wait for a first carousel frame (updater.Fetcher.CarouselWait, 15 s). A fixed
// pause missed devices that were slow to take their desired state on a loaded machine, and they
// then pulled the whole bundle each.
func (s *desiredService) startCarousel(id, model string, devices []string) {
	s.mu.Lock()
	if t, ok := s.carousel[id]; ok && time.Since(t) < time.Minute {
		s.mu.Unlock()
		return
	}
	s.carousel[id] = time.Now()
	s.mu.Unlock()
	go func() {
		deadline := time.Now().Add(carouselReadyMax)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for time.Now().Before(deadline) && !s.waveListening(id, model, devices) {
			select {
			case <-t.C:
			case <-s.ctx.Done():
				return
			}
		}
		if err := s.blocks.Carousel(s.ctx, id); err != nil && s.ctx.Err() == nil {
			s.log.Warn("carousel stopped; devices pull what they miss", "bundle", id, "err", err)
		}
	}()
}

const carouselReadyMax = 10 * time.Second

// waveListening: nine in ten of the wave's online devices report the bundle as their target.
func (s *desiredService) waveListening(id, model string, devices []string) bool {
	online, ready := 0, 0
	for _, dev := range devices {
		d, err := s.reg.Get(dev)
		if err != nil || !d.Online {
			continue
		}
		online++
		if d.Reported != nil && d.Reported.Models[model].Target == id {
			ready++
		}
	}
	return online > 0 && ready*10 >= online*9
}

func (s *desiredService) Get(ctx context.Context, device string) (any, error) {
	r, err := s.assigner.Get(ctx, device)
	if err != nil {
		return nil, err
	}
	return r.State, nil
}

// allowed: a device may fetch exactly the bundles its desired state names.
func (s *desiredService) allowed(device, bundleID string) bool {
	r, err := s.assigner.Get(s.ctx, device)
	if err != nil {
		return false
	}
	for _, m := range r.State.Models {
		if m.Bundle == bundleID {
			return true
		}
	}
	return false
}

// rewrapKeys wraps the keys of a device's encrypted bundles again when it reports another
// recipient than they were wrapped for (its data folder, and so its identity, was replaced).
func (s *desiredService) rewrapKeys(ctx context.Context, d fleet.Device) {
	r := recipientOf(d)
	if r == "" {
		return
	}
	cur, err := s.assigner.Get(ctx, d.ID)
	if err != nil {
		return
	}
	for name, dm := range cur.State.Models {
		if dm.Key == "" || dm.Recipient == r {
			continue
		}
		m, err := s.bundles.Manifest(ctx, dm.Bundle)
		if err != nil {
			continue
		}
		changed := false
		_, err = s.assigner.Update(ctx, d.ID, reportedGen(d), func(models map[string]desired.Model) error {
			x, ok := models[name]
			if !ok || x.Bundle != dm.Bundle || x.Recipient == r {
				return assign.ErrUnchanged
			}
			if err := s.wrapKey(ctx, d, m, x, &x); err != nil {
				return err
			}
			models[name], changed = x, true
			return nil
		})
		if err != nil {
			s.log.Warn("cannot wrap the bundle key for the device's new recipient", "device", d.ID, "bundle", dm.Bundle, "err", err)
		} else if changed {
			s.log.Info("bundle key wrapped again for the device's new recipient", "device", d.ID, "bundle", dm.Bundle)
		}
	}
}

// resendStale re-sends desired states that online devices have not picked up within a minute.
func (s *desiredService) resendStale(ctx context.Context) {
	online := true
	gens := map[string]uint64{}
	for _, d := range s.reg.List(fleet.Filter{Online: &online}) {
		gens[d.ID] = reportedGen(d)
	}
	n, err := s.assigner.ResendStale(ctx, gens, time.Minute)
	if err != nil {
		s.log.Warn("re-sending desired states devices have not picked up failed; next try in 30 s", "err", err)
	}
	if n > 0 {
		s.log.Info("re-sent desired states online devices had not picked up", "devices", n)
	}
}

// onReported keeps a device converged: republish when it reports an older generation, and give a
// device its group's baseline for models it has nothing desired for (it joined the group later).
func (s *desiredService) onReported(ctx context.Context, device string) {
	d, err := s.reg.Get(device)
	if err != nil {
		return
	}
	s.assigner.OnReported(ctx, device, reportedGen(d))
	s.rewrapKeys(ctx, d)
	var g GroupRecord
	if err := s.st.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, bucketGroups, d.Group, &g) }); err != nil {
		return
	}
	cur, _ := s.assigner.Get(ctx, device)
	for model, id := range g.Baseline {
		if _, ok := cur.State.Models[model]; ok {
			continue
		}
		rec, err := s.bundles.Get(ctx, id)
		if err != nil {
			continue
		}
		if _, err := s.assign(ctx, d, rec, 0, false); err != nil {
			s.log.Warn("device cannot take its group's baseline", "device", device, "group", d.Group, "bundle", id, "err", err)
		}
	}
}
