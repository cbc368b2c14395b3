package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/audit"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/deploy"
)

// Store buckets this package owns.
const (
	bucketRollouts = "rollouts"
	bucketOutbox   = "rollout_outbox"
	// BucketAudit is the append-only audit log (keys: zero-padded sequence numbers, values: AuditEntry).
	BucketAudit = audit.Bucket
)

// Fleet is what the controller needs of the rest of the control plane. The control plane
// implements it over the registry, the bundle registry and the desired-state service.
type Fleet interface {
	// Devices returns every registered device.
	Devices() []fleet.Device
	// Bundle resolves a bundle id or "name@version"; the error wraps ErrUnknownBundle when there is
	// no such bundle.
	Bundle(ctx context.Context, ref string) (Bundle, error)
	// Incompatible says why a device cannot run a bundle ("" when it can, or cannot tell yet).
	Incompatible(ctx context.Context, bundleID string, d fleet.Device) (string, error)
	// Group returns a group's settings (a group nobody configured has the zero value).
	Group(ctx context.Context, group string) (GroupInfo, error)
	// Assign makes bundleID the device's desired bundle for model, under rollout, with the bake
	// the agent applies before committing ("" removes the model from the desired state). Assigning
	// what is already desired must change nothing: the outbox may replay it. An error that a retry
	// cannot fix wraps ErrRefused.
	Assign(ctx context.Context, device, model, bundleID, rollout string, bake time.Duration) error
	// SetGroupBaseline commits bundleID as the group's baseline for model ("" removes it).
	SetGroupBaseline(ctx context.Context, group, model, bundleID, by string) error
}

// Variants is implemented by a Fleet whose model versions may ship as several variants (fp32,
// int8, per execution provider): the device gets the one it can run, and a device on any variant
// of the rollout's bundle counts as on that bundle.
type Variants interface {
	// Variants returns the ids of every variant of the bundle's model version, the bundle included.
	Variants(ctx context.Context, bundleID string) []string
}

// Bundle is a registry entry as the controller needs it.
type Bundle struct {
	ID      string
	Name    string
	Version string
	// Stage is the registry stage: staging, production or archived.
	Stage string
	// Size is the bytes a device downloads for it (0: unknown).
	Size int64
}

// Ref is name@version.
func (b Bundle) Ref() string { return b.Name + "@" + b.Version }

// GroupInfo is a group's stored settings.
type GroupInfo struct {
	// Baseline is the committed bundle id per model.
	Baseline map[string]string
	// Production groups accept only bundles whose registry stage is production.
	Production bool
}

// StageProduction is the registry stage a production group requires.
const StageProduction = "production"

// MetricsSource gives the model-aware gates their inputs: what the canary and baseline cohorts
// served for model since the stage's bake started (the telemetry side implements it).
type MetricsSource interface {
	CohortMetrics(ctx context.Context, model string, canary, baseline []string, since time.Time) (deploy.Metrics, error)
}

// NoMetrics is the MetricsSource of a control plane without inference telemetry: it reports no
// traffic at all, so rollouts are judged on their install gates (see NoTelemetry).
type NoMetrics struct{}

// CohortMetrics returns empty metrics.
func (NoMetrics) CohortMetrics(context.Context, string, []string, []string, time.Time) (deploy.Metrics, error) {
	return deploy.Metrics{}, nil
}

// Errors callers decide on (the API maps them to statuses). deploy.ErrInvalidSpec,
// deploy.ErrEmptyTarget and deploy.ErrState come through wrapped as they are.
var (
	ErrNotFound      = errors.New("rollout not found")
	ErrUnknownBundle = errors.New("unknown bundle")
	ErrIncompatible  = errors.New("bundle incompatible with targeted devices")
	ErrNoVariant     = errors.New("no variant of the bundle fits")
	ErrNotProduction = errors.New("bundle not in the production stage")
	ErrConflict      = errors.New("device already in an active rollout")
	ErrNoRollback    = errors.New("nothing to roll back")
	ErrUnknownGroup  = errors.New("unknown group")
	// ErrRefused wraps a Fleet error that retrying cannot fix (the device is gone, cannot run the
	// bundle): the outbox drops that action instead of retrying it forever.
	ErrRefused = errors.New("action refused")
)

// ConflictError names the active rollout a new one overlaps with.
type ConflictError struct {
	Rollout string
	Device  string
	Model   string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("device %s already takes part in active rollout %s of model %s", e.Device, e.Rollout, e.Model)
}

// Unwrap makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// NoTelemetry is recorded in the inputs of every evaluation that found no inference traffic.
const NoTelemetry = "no inference telemetry: model-aware gates skipped"

// Config of a Controller.
type Config struct {
	Store store.Store
	Fleet Fleet
	// Metrics feeds the model-aware gates; nil means NoMetrics.
	Metrics MetricsSource
	// Interval of the reconcile ticker; default 1s. Device reports trigger it earlier (Poke).
	Interval time.Duration
	// RequireTelemetry turns off the no-telemetry rule: a stage whose cohorts served no inference
	// traffic then waits for samples instead of passing on its install gates.
	RequireTelemetry bool
	// Settle is how long after Run starts an offline device is given the benefit of the doubt
	// (default 15s): the registry's online flags were written when the previous control plane
	// shut down and its broker dropped every connection, and devices need a moment to reconnect.
	// Without it a restart would trip the offline gate and pause every running rollout.
	Settle time.Duration
	// BundleBytesPerSecond is the control plane's bundle bandwidth (--bundle-bandwidth). A
	// rollout without rate.max_in_flight gets as many devices in flight as that bandwidth
	// feeds in DownloadWindow; 0 leaves it unbounded.
	BundleBytesPerSecond int
	Logger               *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// DownloadWindow is how long the default max_in_flight lets one round of downloads take: well
// inside the agent's 60 s stall timeout, so a wave never starves its own devices of blocks.
const DownloadWindow = 30 * time.Second

// minDefaultInFlight keeps the default from throttling rollouts of huge bundles to a trickle.
const minDefaultInFlight = 20

// defaultMaxInFlight is the max_in_flight a rollout of a bundle of size bytes gets when its spec
// sets none.
func defaultMaxInFlight(bytesPerSecond int, size int64) int {
	if bytesPerSecond <= 0 || size <= 0 {
		return 0
	}
	return max(minDefaultInFlight, int(int64(bytesPerSecond)*int64(DownloadWindow/time.Second)/size))
}

// Controller runs rollouts. Every mutation of a rollout (Step, operator verbs, creation) holds mu,
// so a verb never interleaves with a step of the same rollout.
type Controller struct {
	st      store.Store
	fleet   Fleet
	metrics MetricsSource
	cfg     Config
	log     *slog.Logger
	now     func() time.Time

	mu      sync.Mutex
	poke    chan struct{}
	started time.Time // when Run began; guarded by mu
}

// New returns a controller; Run drives it.
func New(cfg Config) (*Controller, error) {
	if cfg.Store == nil || cfg.Fleet == nil {
		return nil, errors.New("rollout controller: store and fleet are required")
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NoMetrics{}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Controller{st: cfg.Store, fleet: cfg.Fleet, metrics: cfg.Metrics, cfg: cfg, log: cfg.Logger, now: cfg.Now,
		poke: make(chan struct{}, 1)}, nil
}

// Poke asks for a reconcile soon (a device's report or status changed). It never blocks.
func (c *Controller) Poke() {
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

// debounce groups the pokes of a burst of reports into one reconcile.
const debounce = 100 * time.Millisecond

// Run replays the outbox, then reconciles on the ticker and on pokes until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	c.mu.Lock()
	c.started = c.now()
	c.mu.Unlock()
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		if err := c.Reconcile(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("rollout reconcile incomplete; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.poke:
			select {
			case <-ctx.Done():
				return
			case <-time.After(debounce):
			}
		}
	}
}

// Reconcile executes what the outbox still holds, steps every rollout that can change and
// executes what the steps decided.
func (c *Controller) Reconcile(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Leftovers first (a restart, a failed action): actions must reach devices in decision order.
	if err := c.drain(ctx); err != nil {
		return err
	}
	rs, err := c.loadAll(ctx)
	if err != nil {
		return err
	}
	// The registry is copied only when a rollout is to be stepped: with none under way the
	// reconcile ticker must not copy a fleet of ten thousand devices every second.
	var devs map[string]fleet.Device
	var errs []error
	for _, r := range rs {
		if !needsStep(r) {
			continue
		}
		if devs == nil {
			devs = c.deviceMap()
		}
		if err := c.step(ctx, r, devs); err != nil {
			errs = append(errs, fmt.Errorf("rollout %s: %w", r.ID, err))
		}
	}
	if err := c.drain(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// needsStep: final rollouts are left alone, except while devices of theirs are being reverted (a
// group rolled back after completion), so that the revert is seen through.
func needsStep(r *deploy.Rollout) bool {
	switch r.State {
	case deploy.Running, deploy.WaitingApproval, deploy.Paused, deploy.RollingBack:
		return true
	}
	for _, d := range r.Devices {
		if d.Status == deploy.StatusRollingBack {
			return true
		}
	}
	return false
}

func (c *Controller) deviceMap() map[string]fleet.Device {
	devs := c.fleet.Devices()
	m := make(map[string]fleet.Device, len(devs))
	for _, d := range devs {
		m[d.ID] = d
	}
	return m
}

// variants returns the set of bundle ids that count as the rollout's bundle.
func (c *Controller) variants(ctx context.Context, bundleID string) map[string]bool {
	set := map[string]bool{bundleID: true}
	if v, ok := c.fleet.(Variants); ok {
		for _, id := range v.Variants(ctx, bundleID) {
			set[id] = true
		}
	}
	return set
}

// step runs deploy.Step once and persists the result with its actions when anything changed.
func (c *Controller) step(ctx context.Context, r *deploy.Rollout, devs map[string]fleet.Device) error {
	now := c.now()
	before, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode rollout: %w", err)
	}
	obs := observe(r, devs, c.variants(ctx, r.Spec.Bundle))
	if !c.started.IsZero() && now.Before(c.started.Add(c.cfg.Settle)) {
		for id, st := range obs.Devices {
			if !st.Online {
				st.Online = true
				obs.Devices[id] = st
			}
		}
	}
	var note string
	if r.State == deploy.Running {
		m, n, err := c.metricsFor(ctx, r)
		if err != nil {
			// An unknown is not a pass: without metrics the stage waits (install counts are
			// re-read on the next tick).
			return fmt.Errorf("metrics: %w", err)
		}
		obs.Metrics, note = m, n
	}
	n0 := len(r.Decisions)
	acts, err := deploy.Step(now, r, obs)
	if err != nil {
		return err
	}
	acts = annotate(r, n0, acts, note)
	acts = keepRolledBackGroups(r, acts)
	after, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode rollout: %w", err)
	}
	if len(acts) == 0 && bytes.Equal(before, after) {
		return nil
	}
	return c.commit(ctx, r, acts, nil)
}

// metricsFor asks the source for the look's cohorts. Only a baking stage needs metrics.
//
// The no-telemetry rule: deploy judges a gate that has a cohort but too few samples as Wait, so a
// fleet that serves no inference traffic (or whose agents send no inference telemetry yet) would
// wait forever. When the canary, the baseline and every canary device before and after its switch
// all report zero requests and no scores, the controller hands Step empty metrics, which deploy
// judges Skip, so the stage passes on its install gates; every decision taken so says NoTelemetry in
// its inputs. Any traffic at all, on either side or before the switch, keeps the gates in force:
// a canary that went quiet after its switch is not "no telemetry".
func (c *Controller) metricsFor(ctx context.Context, r *deploy.Rollout) (deploy.Metrics, string, error) {
	q := r.Cohorts()
	if q.Since.IsZero() {
		return deploy.Metrics{}, "", nil
	}
	m, err := c.metrics.CohortMetrics(ctx, r.Spec.ModelName(), q.Canary, q.Baseline, q.Since)
	if err != nil {
		return deploy.Metrics{}, "", err
	}
	if !c.cfg.RequireTelemetry && noTraffic(m) {
		return deploy.Metrics{}, NoTelemetry, nil
	}
	return m, "", nil
}

func noTraffic(m deploy.Metrics) bool {
	cohortQuiet := func(c deploy.Cohort) bool {
		return c.Requests == 0 && len(c.LatenciesMS) == 0 && c.Labeled == 0 &&
			(c.OutputShift == nil || c.OutputShift.Samples == 0) && (c.InputDrift == nil || c.InputDrift.Samples == 0)
	}
	if m.HadTraffic || !cohortQuiet(m.Canary) || !cohortQuiet(m.Baseline) {
		return false
	}
	for _, ba := range m.PerDevice {
		if ba.Before.Requests > 0 || ba.After.Requests > 0 {
			return false
		}
	}
	return true
}

// annotate adds the telemetry note to the inputs of the decisions Step just took that passed a
// stage's model-aware looks, and keeps the Record actions equal to the stored decisions.
func annotate(r *deploy.Rollout, n0 int, acts []deploy.Action, note string) []deploy.Action {
	if note == "" || len(r.Decisions) == n0 {
		return acts
	}
	for i := n0; i < len(r.Decisions); i++ {
		d := &r.Decisions[i]
		switch d.Action {
		case deploy.ActEvaluate, deploy.ActAdvance, deploy.ActComplete:
		default:
			continue
		}
		in := make(map[string]any, len(d.Inputs)+1)
		for k, v := range d.Inputs {
			in[k] = v
		}
		in["telemetry"] = note
		d.Inputs = in
	}
	used := make([]bool, len(r.Decisions))
	for i, a := range acts {
		rec, ok := a.(deploy.Record)
		if !ok {
			continue
		}
		for j := n0; j < len(r.Decisions); j++ {
			d := r.Decisions[j]
			if !used[j] && d.At.Equal(rec.Decision.At) && d.Action == rec.Decision.Action && d.Reason == rec.Decision.Reason && d.Stage == rec.Decision.Stage {
				used[j] = true
				rec.Decision = d
				acts[i] = rec
				break
			}
		}
	}
	return acts
}

// keepRolledBackGroups drops the baseline move of a completing rollout for a group an operator
// rolled back during it: none of that group's devices runs the new bundle, and a baseline would
// hand it to every device that joins the group later.
func keepRolledBackGroups(r *deploy.Rollout, acts []deploy.Action) []deploy.Action {
	out := acts[:0]
	for _, a := range acts {
		if b, ok := a.(deploy.SetGroupBaseline); ok && b.Bundle == r.Spec.Bundle && groupWithdrawn(r, b.Group) {
			continue
		}
		out = append(out, a)
	}
	return out
}

func groupWithdrawn(r *deploy.Rollout, group string) bool {
	seen := false
	for _, d := range r.Devices {
		if d.Group != group {
			continue
		}
		seen = true
		switch d.Status {
		case deploy.StatusExcluded, deploy.StatusRollingBack, deploy.StatusRolledBack:
		default:
			return false
		}
	}
	return seen
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	At      time.Time `json:"at"`
	Who     string    `json:"who"`
	Action  string    `json:"action"`
	Rollout string    `json:"rollout,omitempty"`
	Reason  string    `json:"reason"`
	Stage   int       `json:"stage"`
}

// outboxEntry is one fleet action waiting to be executed.
type outboxEntry struct {
	Kind     string                   `json:"kind"`
	Assign   *deploy.AssignDesired    `json:"assign,omitempty"`
	Revert   *deploy.RevertDesired    `json:"revert,omitempty"`
	Baseline *deploy.SetGroupBaseline `json:"baseline,omitempty"`
	By       string                   `json:"by,omitempty"`
}

// commit writes the rollout (when r is not nil), its fleet actions into the outbox and an audit
// entry per decision, in one transaction: either all of it is durable or none.
func (c *Controller) commit(ctx context.Context, r *deploy.Rollout, acts []deploy.Action, audit []AuditEntry) error {
	by := deploy.Controller
	if r != nil {
		by = "rollout " + r.ID
	}
	var recs []deploy.Record
	err := c.st.Update(ctx, func(tx store.Tx) error {
		recs = recs[:0] // an optimistic store (etcd) may run this again
		if r != nil {
			if err := store.PutJSON(tx, bucketRollouts, r.ID, r); err != nil {
				return err
			}
		}
		for _, a := range acts {
			var e outboxEntry
			switch a := a.(type) {
			case deploy.Record:
				recs = append(recs, a)
				audit := AuditEntry{At: a.Decision.At, Who: a.Decision.By, Action: "rollout." + a.Decision.Action,
					Rollout: a.Rollout, Reason: a.Decision.Reason, Stage: a.Decision.Stage}
				if err := putAudit(tx, audit); err != nil {
					return err
				}
				continue
			case deploy.AssignDesired:
				e = outboxEntry{Kind: "assign", Assign: &a}
			case deploy.RevertDesired:
				e = outboxEntry{Kind: "revert", Revert: &a}
			case deploy.SetGroupBaseline:
				e = outboxEntry{Kind: "baseline", Baseline: &a, By: by}
			default:
				return fmt.Errorf("unknown action %T", a)
			}
			seq, err := tx.NextSequence(bucketOutbox)
			if err != nil {
				return err
			}
			if err := store.PutJSON(tx, bucketOutbox, seqKey(seq), e); err != nil {
				return err
			}
		}
		for _, a := range audit {
			if err := putAudit(tx, a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("persist rollout decisions: %w", err)
	}
	for _, rec := range recs {
		d := rec.Decision
		if d.Action == deploy.ActWait {
			c.log.Debug("rollout decision", "rollout", rec.Rollout, "stage", d.Stage, "action", d.Action, "reason", d.Reason, "by", d.By)
			continue
		}
		c.log.Info("rollout decision", "rollout", rec.Rollout, "stage", d.Stage, "action", d.Action, "reason", d.Reason, "by", d.By)
	}
	return nil
}

func seqKey(n uint64) string { return fmt.Sprintf("%020d", n) }

func putAudit(tx store.Tx, e AuditEntry) error {
	return audit.Append(tx, audit.Entry{At: e.At, Who: e.Who, Action: e.Action, Rollout: e.Rollout, Reason: e.Reason, Stage: e.Stage})
}

// drain executes the outbox in order and removes what it executed. It stops at the first error a
// retry may fix, so that a device never gets its actions out of order; a refused action is
// logged and dropped.
func (c *Controller) drain(ctx context.Context) error {
	var keys []string
	var entries []outboxEntry
	err := c.st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucketOutbox, "", func(k string, v []byte) error {
			var e outboxEntry
			if err := json.Unmarshal(v, &e); err != nil {
				// Unreadable: keep going, and delete it so it does not block the rest.
				c.log.Error("dropping unreadable rollout outbox entry", "key", k, "err", err)
			}
			keys, entries = append(keys, k), append(entries, e)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("read rollout outbox: %w", err)
	}
	if len(keys) == 0 {
		return nil
	}
	var done []string
	var firstErr error
	for i, e := range entries {
		err := c.apply(ctx, e)
		if err != nil && !errors.Is(err, ErrRefused) {
			firstErr = fmt.Errorf("execute rollout action: %w", err)
			break
		}
		if err != nil {
			c.log.Warn("rollout action refused; dropped", "kind", e.Kind, "err", err)
		}
		done = append(done, keys[i])
	}
	// Deleting in one transaction after executing: a crash before it only replays actions, which
	// are idempotent.
	derr := c.st.Update(context.WithoutCancel(ctx), func(tx store.Tx) error {
		for _, k := range done {
			if err := tx.Delete(bucketOutbox, k); err != nil {
				return err
			}
		}
		return nil
	})
	if derr != nil {
		return errors.Join(firstErr, fmt.Errorf("trim rollout outbox: %w", derr))
	}
	return firstErr
}

func (c *Controller) apply(ctx context.Context, e outboxEntry) error {
	switch {
	case e.Assign != nil:
		a := e.Assign
		if err := c.fleet.Assign(ctx, a.Device, a.Model, a.Bundle, a.Rollout, a.Bake); err != nil {
			return fmt.Errorf("assign %s to %s: %w", a.Bundle, a.Device, err)
		}
		c.log.Info("rollout assigned", "rollout", a.Rollout, "device", a.Device, "model", a.Model, "bundle", a.Bundle, "bake", a.Bake)
	case e.Revert != nil:
		a := e.Revert
		if err := c.fleet.Assign(ctx, a.Device, a.Model, a.Bundle, a.Rollout, 0); err != nil {
			return fmt.Errorf("revert %s to %q: %w", a.Device, a.Bundle, err)
		}
		c.log.Info("rollout reverted device", "rollout", a.Rollout, "device", a.Device, "model", a.Model, "bundle", a.Bundle)
	case e.Baseline != nil:
		a := e.Baseline
		if err := c.fleet.SetGroupBaseline(ctx, a.Group, a.Model, a.Bundle, e.By); err != nil {
			return fmt.Errorf("set baseline of group %s: %w", a.Group, err)
		}
		c.log.Info("group baseline set", "group", a.Group, "model", a.Model, "bundle", a.Bundle, "by", e.By)
	}
	return nil
}

// loadAll reads every stored rollout, oldest first.
func (c *Controller) loadAll(ctx context.Context) ([]*deploy.Rollout, error) {
	var out []*deploy.Rollout
	err := c.st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucketRollouts, "", func(k string, v []byte) error {
			r := new(deploy.Rollout)
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("decode rollout %s: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load rollouts: %w", err)
	}
	sortByCreation(out)
	return out, nil
}

func (c *Controller) load(ctx context.Context, id string) (*deploy.Rollout, error) {
	r := new(deploy.Rollout)
	err := c.st.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, bucketRollouts, id, r) })
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("load rollout %s: %w", id, err)
	}
	return r, nil
}
