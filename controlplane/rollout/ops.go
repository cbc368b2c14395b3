package rollout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/deploy"
)

// View is a rollout as the API shows it (INTERFACE.md, GET /api/v1/rollouts/{id}).
type View struct {
	ID string `json:"id"`
	// Bundle is the bundle id; Ref its name@version.
	Bundle    string            `json:"bundle"`
	Ref       string            `json:"ref,omitempty"`
	Model     string            `json:"model"`
	State     deploy.State      `json:"state"`
	Stage     int               `json:"stage"`
	Stages    int               `json:"stages"`
	Sizes     []int             `json:"sizes"`
	Counts    deploy.Counts     `json:"counts"`
	Spec      deploy.Spec       `json:"spec"`
	Baselines map[string]string `json:"baselines,omitempty"`
	Decisions []deploy.Decision `json:"decisions,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// DeviceView is one targeted device: its place in the rollout and what it reports now.
type DeviceView struct {
	deploy.DeviceRecord
	Online bool `json:"online"`
	// Active is the bundle the device serves for the model; Step its agent's lifecycle step.
	Active string `json:"active,omitempty"`
	Step   string `json:"step,omitempty"`
}

func (c *Controller) view(ctx context.Context, r *deploy.Rollout, decisions bool) View {
	v := View{ID: r.ID, Bundle: r.Spec.Bundle, Model: r.Spec.ModelName(), State: r.State, Stage: r.Stage,
		Stages: len(r.Spec.Stages), Sizes: r.Sizes, Counts: r.Counts(), Spec: r.Spec, Baselines: r.Baselines,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
	if b, err := c.fleet.Bundle(ctx, r.Spec.Bundle); err == nil {
		v.Ref = b.Ref()
	}
	if decisions {
		v.Decisions = r.Decisions
	}
	return v
}

// Create validates spec, plans it and stores the new rollout; the controller starts it on its next
// reconcile. by is who asked (recorded in the decision log and the audit log).
func (c *Controller) Create(ctx context.Context, spec deploy.Spec, by string) (View, error) {
	if err := spec.Validate(); err != nil {
		return View{}, err
	}
	b, err := c.fleet.Bundle(ctx, spec.Bundle)
	if err != nil {
		if errors.Is(err, ErrUnknownBundle) {
			return View{}, err
		}
		return View{}, fmt.Errorf("resolve bundle %s: %w", spec.Bundle, err)
	}
	if spec.Model != "" && spec.Model != b.Name {
		return View{}, fmt.Errorf("%w: model: %q, but bundle %s serves %q", deploy.ErrInvalidSpec, spec.Model, b.Ref(), b.Name)
	}
	// Desired states and reports name bundles by id: the rollout does too.
	spec.Bundle, spec.Model = b.ID, b.Name
	// Without a limit a 2,500-device stage asks for its bundle all at once and shares the
	// bundle bandwidth 2,500 ways; the spec records the default so the operator sees it.
	if spec.Rate.MaxInFlight == 0 {
		spec.Rate.MaxInFlight = defaultMaxInFlight(c.cfg.BundleBytesPerSecond, b.Size)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	devs := c.fleet.Devices()
	byID := make(map[string]fleet.Device, len(devs))
	infos := make([]deploy.DeviceInfo, 0, len(devs))
	groups := map[string]GroupInfo{}
	baselines := map[string]string{}
	for _, d := range devs {
		byID[d.ID] = d
		info := deploy.DeviceInfo{ID: d.ID, Group: d.Group, Labels: d.Labels, Online: d.Online}
		if d.Reported != nil {
			info.Arch = d.Reported.Host.Arch
			info.CurrentBundle = d.Reported.Models[b.Name].Active
		}
		infos = append(infos, info)
		if _, ok := groups[d.Group]; !ok {
			g, err := c.fleet.Group(ctx, d.Group)
			if err != nil {
				return View{}, fmt.Errorf("read group %s: %w", d.Group, err)
			}
			groups[d.Group] = g
			baselines[d.Group] = g.Baseline[b.Name]
		}
	}
	id, err := newID()
	if err != nil {
		return View{}, err
	}
	now := c.now()
	r, err := deploy.New(id, spec, infos, baselines, now)
	if err != nil {
		return View{}, err
	}

	var bad []string
	for _, d := range r.Devices {
		why, err := c.fleet.Incompatible(ctx, b.ID, byID[d.Device])
		if err != nil {
			return View{}, fmt.Errorf("check compatibility of %s: %w", d.Device, err)
		}
		if why != "" {
			bad = append(bad, d.Device+": "+why)
		}
	}
	if len(bad) > 0 {
		more := ""
		if len(bad) > 5 {
			more = fmt.Sprintf(" (and %d more)", len(bad)-5)
			bad = bad[:5]
		}
		if len(c.variants(ctx, b.ID)) > 1 {
			return View{}, fmt.Errorf("%w: %d of %d targeted devices can run no variant of %s@%s: %s%s", ErrNoVariant, len(bad), len(r.Devices), b.Name, b.Version, strings.Join(bad, "; "), more)
		}
		return View{}, fmt.Errorf("%w: %d of %d targeted devices cannot run %s: %s%s", ErrIncompatible, len(bad), len(r.Devices), b.Ref(), strings.Join(bad, "; "), more)
	}
	for _, g := range slices.Sorted(maps.Keys(r.Baselines)) {
		if groups[g].Production && b.Stage != StageProduction {
			return View{}, fmt.Errorf("%w: group %s is a production group and %s is in stage %q: promote it first (PUT /api/v1/bundles/%s/stage)", ErrNotProduction, g, b.Ref(), b.Stage, b.ID)
		}
	}

	rs, err := c.loadAll(ctx)
	if err != nil {
		return View{}, err
	}
	mine := map[string]bool{}
	for _, d := range r.Devices {
		mine[d.Device] = true
	}
	for _, o := range rs {
		if !isActive(o) || o.Spec.ModelName() != b.Name {
			continue
		}
		for _, d := range o.Devices {
			if mine[d.Device] && d.Status != deploy.StatusExcluded && d.Status != deploy.StatusRolledBack {
				return View{}, &ConflictError{Rollout: o.ID, Device: d.Device, Model: b.Name}
			}
		}
	}

	// The creation is the operator's decision, whatever deploy.New records as its author.
	var acts []deploy.Action
	for i := range r.Decisions {
		if r.Decisions[i].Action == deploy.ActCreate {
			r.Decisions[i].By = by
			r.Decisions[i].Inputs["bundle"] = b.Ref()
		}
		acts = append(acts, deploy.Record{Rollout: r.ID, Decision: r.Decisions[i]})
	}
	if err := c.commit(ctx, r, acts, nil); err != nil {
		return View{}, err
	}
	c.log.Info("rollout created", "rollout", r.ID, "bundle", b.ID, "ref", b.Ref(), "devices", len(r.Devices), "sizes", r.Sizes, "by", by)
	c.Poke()
	return c.view(ctx, r, true), nil
}

// isActive: the rollout may still send this model to its devices.
func isActive(r *deploy.Rollout) bool {
	switch r.State {
	case deploy.Running, deploy.WaitingApproval, deploy.Paused, deploy.RollingBack:
		return true
	}
	return false
}

func newID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("rollout id: %w", err)
	}
	return "r-" + hex.EncodeToString(b), nil
}

// Get returns one rollout with its decision log.
func (c *Controller) Get(ctx context.Context, id string) (View, error) {
	r, err := c.load(ctx, id)
	if err != nil {
		return View{}, err
	}
	return c.view(ctx, r, true), nil
}

// Raw returns the stored rollout itself (tests, debugging).
func (c *Controller) Raw(ctx context.Context, id string) (*deploy.Rollout, error) {
	return c.load(ctx, id)
}

// List returns every rollout, newest first, without decision logs.
func (c *Controller) List(ctx context.Context) ([]View, error) {
	rs, err := c.loadAll(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]View, 0, len(rs))
	for i := len(rs) - 1; i >= 0; i-- {
		out = append(out, c.view(ctx, rs[i], false))
	}
	return out, nil
}

// Devices returns each targeted device of a rollout in plan order.
func (c *Controller) Devices(ctx context.Context, id string) ([]DeviceView, error) {
	r, err := c.load(ctx, id)
	if err != nil {
		return nil, err
	}
	devs := c.deviceMap()
	out := make([]DeviceView, 0, len(r.Devices))
	for _, rec := range r.Devices {
		v := DeviceView{DeviceRecord: rec}
		if d, ok := devs[rec.Device]; ok {
			v.Online = d.Online
			if d.Reported != nil {
				m := d.Reported.Models[r.Spec.ModelName()]
				v.Active, v.Step = m.Active, m.State
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// Operator verbs accepted by Do.
const (
	VerbPause    = "pause"
	VerbResume   = "resume"
	VerbAbort    = "abort"
	VerbApprove  = "approve"
	VerbRollback = "rollback"
)

// Do applies an operator verb. A verb the state forbids returns an error wrapping deploy.ErrState.
func (c *Controller) Do(ctx context.Context, id, verb, by, reason string) (View, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := c.load(ctx, id)
	if err != nil {
		return View{}, err
	}
	now := c.now()
	var acts []deploy.Action
	switch verb {
	case VerbPause:
		acts, err = r.Pause(now, by, reason)
	case VerbResume:
		acts, err = r.Resume(now, by)
	case VerbAbort:
		acts, err = r.Abort(now, by, reason)
	case VerbApprove:
		acts, err = r.Approve(now, by)
	case VerbRollback:
		acts, err = r.Rollback(now, by, reason)
	default:
		return View{}, fmt.Errorf("unknown rollout verb %q", verb)
	}
	if err != nil {
		return View{}, err
	}
	if err := c.commit(ctx, r, acts, nil); err != nil {
		return View{}, err
	}
	if err := c.drain(ctx); err != nil {
		// Stored in the outbox: the next reconcile retries.
		c.log.Warn("rollout actions not executed yet; will retry", "rollout", id, "err", err)
	}
	c.Poke()
	return c.view(ctx, r, true), nil
}

// GroupRollback is the answer to a group rollback.
type GroupRollback struct {
	Group  string          `json:"group"`
	Models []ModelRollback `json:"models"`
}

// ModelRollback says how one model of the group was rolled back.
type ModelRollback struct {
	Model string `json:"model"`
	// Rollout is the rollout whose per-device records named the previous bundles; empty when no
	// rollout covered the group and the devices' own previous bundles were used.
	Rollout string `json:"rollout,omitempty"`
	// Devices sent back to their previous bundle.
	Devices []string `json:"devices"`
	// Baseline is the group's baseline afterwards, when the rollback moved it.
	Baseline string `json:"baseline,omitempty"`
}

// RollbackGroup puts every device of group back on the bundle it ran before, for model (every
// model the group's rollouts or devices know when model is ""). The previous bundles come from the
// most recent rollout of the model that covered the group (its per-device records; a running
// rollout is paused and the group's remaining devices withdrawn, a completed one gives the group
// its prior baseline back); without one, from each device's own previous bundle, which it keeps
// installed, so no download is needed either way.
func (c *Controller) RollbackGroup(ctx context.Context, group, model, by string) (GroupRollback, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rs, err := c.loadAll(ctx)
	if err != nil {
		return GroupRollback{}, err
	}
	var members []fleet.Device
	for _, d := range c.fleet.Devices() {
		if d.Group == group {
			members = append(members, d)
		}
	}
	models := []string{model}
	if model == "" {
		set := map[string]bool{}
		for _, r := range rs {
			if _, ok := r.Baselines[group]; ok {
				set[r.Spec.ModelName()] = true
			}
		}
		for _, d := range members {
			if d.Reported != nil {
				for m := range d.Reported.Models {
					set[m] = true
				}
			}
		}
		models = slices.Sorted(maps.Keys(set))
	}
	if len(members) == 0 && len(models) == 0 {
		return GroupRollback{}, fmt.Errorf("%w: %s has no devices and no rollouts", ErrUnknownGroup, group)
	}
	out := GroupRollback{Group: group, Models: []ModelRollback{}}
	for _, m := range models {
		res, err := c.rollbackGroupModel(ctx, rs, members, group, m, by)
		if errors.Is(err, ErrNoRollback) && model == "" {
			continue // "all models": roll back those that have somewhere to go
		}
		if err != nil {
			return out, err
		}
		out.Models = append(out.Models, res)
	}
	if len(out.Models) == 0 {
		return out, fmt.Errorf("%w: no model of group %s has a previous bundle", ErrNoRollback, group)
	}
	if err := c.drain(ctx); err != nil {
		c.log.Warn("group rollback actions not executed yet; will retry", "group", group, "err", err)
	}
	c.Poke()
	return out, nil
}

func (c *Controller) rollbackGroupModel(ctx context.Context, rs []*deploy.Rollout, members []fleet.Device, group, model, by string) (ModelRollback, error) {
	res := ModelRollback{Model: model, Devices: []string{}}
	var last *deploy.Rollout
	for _, r := range rs { // oldest first: the last match is the most recent
		if _, ok := r.Baselines[group]; ok && r.Spec.ModelName() == model {
			last = r
		}
	}
	if last != nil {
		if !hasLiveMembers(last, group) {
			return res, fmt.Errorf("%w: group %s was already rolled back in rollout %s of %s", ErrNoRollback, group, last.ID, model)
		}
		acts, err := last.RollbackGroup(c.now(), by, group)
		if err != nil {
			return res, err
		}
		res.Rollout = last.ID
		for _, a := range acts {
			switch a := a.(type) {
			case deploy.RevertDesired:
				res.Devices = append(res.Devices, a.Device)
			case deploy.SetGroupBaseline:
				res.Baseline = a.Bundle
			}
		}
		return res, c.commit(ctx, last, acts, nil)
	}

	// No rollout ever covered the group: each device goes back to the bundle in its standby slot.
	var acts []deploy.Action
	prevs := map[string]bool{}
	for _, d := range members {
		if d.Reported == nil {
			continue
		}
		rep, ok := d.Reported.Models[model]
		if !ok || rep.Previous == "" || rep.Previous == rep.Active {
			continue
		}
		acts = append(acts, deploy.RevertDesired{Device: d.ID, Model: model, Bundle: rep.Previous})
		res.Devices = append(res.Devices, d.ID)
		prevs[rep.Previous] = true
	}
	if len(acts) == 0 {
		return res, fmt.Errorf("%w: no device of group %s reports a previous bundle of %s", ErrNoRollback, group, model)
	}
	if len(prevs) == 1 {
		// One bundle for the whole group: it becomes the baseline, so that devices joining later
		// do not get the bundle that was just rolled back.
		for p := range prevs {
			res.Baseline = p
		}
		acts = append(acts, deploy.SetGroupBaseline{Group: group, Model: model, Bundle: res.Baseline})
	}
	sort.Strings(res.Devices)
	audit := AuditEntry{At: c.now(), Who: by, Action: "group.rollback",
		Reason: fmt.Sprintf("group %s: %d devices back to their previous bundle of %s (no rollout recorded)", group, len(res.Devices), model)}
	return res, c.commit(ctx, nil, acts, []AuditEntry{audit})
}

// hasLiveMembers: some device of group in r is not (being) rolled back or withdrawn.
func hasLiveMembers(r *deploy.Rollout, group string) bool {
	for _, d := range r.Devices {
		if d.Group != group {
			continue
		}
		switch d.Status {
		case deploy.StatusExcluded, deploy.StatusRollingBack, deploy.StatusRolledBack:
		default:
			return true
		}
	}
	return false
}

func sortByCreation(rs []*deploy.Rollout) {
	sort.SliceStable(rs, func(i, j int) bool {
		if !rs[i].CreatedAt.Equal(rs[j].CreatedAt) {
			return rs[i].CreatedAt.Before(rs[j].CreatedAt)
		}
		return rs[i].ID < rs[j].ID
	})
}

// Audit returns the audit log, oldest first (the console's GET /api/v1/audit reads the same bucket).
func (c *Controller) Audit(ctx context.Context) ([]AuditEntry, error) {
	var out []AuditEntry
	err := c.st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(BucketAudit, "", func(_ string, v []byte) error {
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err == nil {
				out = append(out, e)
			}
			return nil
		})
	})
	return out, err
}
