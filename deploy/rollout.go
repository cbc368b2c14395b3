package deploy

import (
	"fmt"
	"time"
)

// State is where a rollout is (INTERFACE.md).
type State string

// Rollout states. Completed, RolledBack and Aborted are final except that a completed or aborted
// rollout can still be rolled back.
const (
	Running         State = "running"
	WaitingApproval State = "waiting_approval"
	Paused          State = "paused"
	RollingBack     State = "rolling_back"
	RolledBack      State = "rolled_back"
	Completed       State = "completed"
	Aborted         State = "aborted"
)

// DeviceStatus is a targeted device's place in the rollout.
type DeviceStatus string

// Device statuses. Planned devices have not been assigned yet; Excluded ones were taken out by a
// group rollback before their turn and will not be assigned.
const (
	StatusPlanned     DeviceStatus = "planned"
	StatusPending     DeviceStatus = "pending"
	StatusDownloading DeviceStatus = "downloading"
	StatusInstalled   DeviceStatus = "installed"
	StatusFailed      DeviceStatus = "failed"
	StatusStalled     DeviceStatus = "stalled"
	StatusRollingBack DeviceStatus = "rolling_back"
	StatusRolledBack  DeviceStatus = "rolled_back"
	StatusExcluded    DeviceStatus = "excluded"
)

// DeviceRecord is one targeted device, in plan order.
type DeviceRecord struct {
	Device string `json:"device"`
	Group  string `json:"group"`
	Arch   string `json:"arch,omitempty"`
	// Stage is the first stage that includes the device.
	Stage int `json:"stage"`
	// Previous is the bundle the device ran before this rollout, the target of a rollback ("":
	// none, the rollback removes the model). Refreshed from the observation at assignment.
	Previous   string       `json:"previous,omitempty"`
	Status     DeviceStatus `json:"status"`
	Reason     string       `json:"reason,omitempty"`
	AssignedAt time.Time    `json:"assigned_at,omitzero"`
	SwitchedAt time.Time    `json:"switched_at,omitzero"`
}

// touched reports whether the device was ever sent the new bundle.
func (d DeviceRecord) touched() bool {
	return d.Status != StatusPlanned && d.Status != StatusExcluded
}

// Decision actions, as the decision log and INTERFACE.md show them.
const (
	ActCreate     = "create"
	ActAssign     = "assign"
	ActWait       = "wait"
	ActBake       = "bake"
	ActEvaluate   = "evaluate"
	ActAdvance    = "advance"
	ActComplete   = "complete"
	ActPause      = "pause"
	ActResume     = "resume"
	ActApprove    = "approve"
	ActAbort      = "abort"
	ActRollback   = "rollback"
	ActRolledBack = "rolled_back"
)

// Controller is the By of decisions the engine takes by itself.
const Controller = "controller"

// Decision is one entry of the decision log: what was decided, why, and on what evidence.
type Decision struct {
	At     time.Time      `json:"at"`
	Stage  int            `json:"stage"`
	Action string         `json:"action"`
	Reason string         `json:"reason"`
	Inputs map[string]any `json:"inputs,omitempty"`
	By     string         `json:"by"`
}

// StageProgress is the evaluation state of one stage.
type StageProgress struct {
	StartedAt time.Time `json:"started_at,omitzero"`
	// BakeStart is when every device of the stage had finished installing; the metrics window and
	// the looks count from it. Zero while installs are under way.
	BakeStart time.Time `json:"bake_start,omitzero"`
	// Looks is the number of looks every gate has spent; GateLooks counts them per gate.
	Looks      int            `json:"looks"`
	GateLooks  map[string]int `json:"gate_looks,omitempty"`
	LastLookAt time.Time      `json:"last_look_at,omitzero"`
	Passed     bool           `json:"passed,omitempty"`
}

// Rollout is the persisted state of one rollout. The control plane stores it whole after every
// Step or verb and before it acts on the returned actions.
type Rollout struct {
	ID      string          `json:"id"`
	Spec    Spec            `json:"spec"`
	State   State           `json:"state"`
	Stage   int             `json:"stage"`
	Sizes   []int           `json:"sizes"`
	Devices []DeviceRecord  `json:"devices"`
	Stages  []StageProgress `json:"stages"`
	// Baselines are the target groups' committed bundles for the model before this rollout, put
	// back when a completed rollout is rolled back.
	Baselines  map[string]string `json:"baselines,omitempty"`
	Decisions  []Decision        `json:"decisions"`
	PausedFrom State             `json:"paused_from,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  time.Time         `json:"updated_at"`
	// The rate limiter's token bucket.
	RateTokens float64   `json:"rate_tokens"`
	RateAt     time.Time `json:"rate_at,omitzero"`
}

// New validates spec, plans the target and returns a rollout ready for Step. baselines are the
// target groups' current committed bundles for the model (missing groups: none). A zero
// spec.Seed is replaced by one derived from id and stored, so the plan can be replayed.
func New(id string, spec Spec, devices []DeviceInfo, baselines map[string]string, now time.Time) (*Rollout, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if spec.Seed == 0 {
		spec.Seed = int64(seededHash(0, "rollout\x00"+id) >> 1)
	}
	plan, err := Plan(spec, devices, spec.Seed)
	if err != nil {
		return nil, fmt.Errorf("new rollout %s: %w", id, err)
	}
	r := &Rollout{
		ID: id, Spec: spec, State: Running, Sizes: plan.Sizes,
		Stages:    make([]StageProgress, len(spec.Stages)),
		Baselines: map[string]string{},
		CreatedAt: now, UpdatedAt: now,
	}
	for _, d := range plan.Devices {
		r.Devices = append(r.Devices, DeviceRecord{Device: d.ID, Group: d.Group, Arch: d.Arch, Stage: d.Stage,
			Previous: d.Previous, Status: StatusPlanned})
		if _, ok := r.Baselines[d.Group]; !ok {
			r.Baselines[d.Group] = baselines[d.Group]
		}
	}
	r.decide(now, ActCreate, "rollout created", map[string]any{
		"targeted": len(r.Devices), "sizes": plan.Sizes, "seed": spec.Seed}, Controller)
	if spec.Stages[0].Approval {
		r.State = WaitingApproval
		r.decide(now, ActWait, "stage 0 needs approval", nil, Controller)
	} else {
		r.Stages[0].StartedAt = now
	}
	return r, nil
}

// decide appends a decision and returns the Record action for it. A controller decision equal to
// the last one (same stage, action and reason) is not repeated: the controller runs on a ticker
// and "still waiting" is one entry, not one per tick; that is also what keeps Step idempotent.
func (r *Rollout) decide(now time.Time, action, reason string, inputs map[string]any, by string) []Action {
	if by == Controller && len(r.Decisions) > 0 {
		last := r.Decisions[len(r.Decisions)-1]
		if last.By == Controller && last.Stage == r.Stage && last.Action == action && last.Reason == reason {
			return nil
		}
	}
	d := Decision{At: now, Stage: r.Stage, Action: action, Reason: reason, Inputs: inputs, By: by}
	r.Decisions = append(r.Decisions, d)
	r.UpdatedAt = now
	return []Action{Record{Rollout: r.ID, Decision: d}}
}

// Counts are the per-status device counts of INTERFACE.md.
type Counts struct {
	Targeted    int `json:"targeted"`
	Planned     int `json:"planned"`
	Pending     int `json:"pending"`
	Downloading int `json:"downloading"`
	Installed   int `json:"installed"`
	Failed      int `json:"failed"`
	Stalled     int `json:"stalled"`
	RollingBack int `json:"rolling_back"`
	RolledBack  int `json:"rolled_back"`
	Excluded    int `json:"excluded"`
}

// Counts tallies the devices by status.
func (r *Rollout) Counts() Counts {
	c := Counts{Targeted: len(r.Devices)}
	for _, d := range r.Devices {
		switch d.Status {
		case StatusPlanned:
			c.Planned++
		case StatusPending:
			c.Pending++
		case StatusDownloading:
			c.Downloading++
		case StatusInstalled:
			c.Installed++
		case StatusFailed:
			c.Failed++
		case StatusStalled:
			c.Stalled++
		case StatusRollingBack:
			c.RollingBack++
		case StatusRolledBack:
			c.RolledBack++
		case StatusExcluded:
			c.Excluded++
		}
	}
	return c
}

// CohortQuery tells the control plane which metrics the next look needs.
type CohortQuery struct {
	// Since is the start of the window (the stage's bake start); zero while nothing is baking.
	Since time.Time `json:"since,omitzero"`
	// Canary: devices of this rollout on the new bundle.
	Canary []string `json:"canary"`
	// Baseline: devices not yet assigned whose (group, arch) has a canary device: the matched
	// cohort still on the previous bundle.
	Baseline []string `json:"baseline"`
}

// Cohorts returns the devices and window for Metrics.
func (r *Rollout) Cohorts() CohortQuery {
	q := CohortQuery{}
	if r.Stage < len(r.Stages) {
		q.Since = r.Stages[r.Stage].BakeStart
	}
	strata := map[[2]string]bool{}
	for _, d := range r.Devices {
		if d.Status == StatusInstalled {
			q.Canary = append(q.Canary, d.Device)
			strata[[2]string{d.Group, d.Arch}] = true
		}
	}
	for _, d := range r.Devices {
		if d.Status == StatusPlanned && strata[[2]string{d.Group, d.Arch}] {
			q.Baseline = append(q.Baseline, d.Device)
		}
	}
	return q
}

// Pause stops the rollout where it is; nothing is sent until Resume.
func (r *Rollout) Pause(now time.Time, by, reason string) ([]Action, error) {
	if r.State != Running && r.State != WaitingApproval {
		return nil, fmt.Errorf("pause rollout %s in state %s: %w", r.ID, r.State, ErrState)
	}
	r.PausedFrom, r.State = r.State, Paused
	return r.decide(now, ActPause, orText(reason, "paused by operator"), nil, by), nil
}

// Resume continues a paused rollout. The current stage bakes and is evaluated again from now,
// with fresh looks: whatever made someone pause it, the evidence before the pause is not trusted.
func (r *Rollout) Resume(now time.Time, by string) ([]Action, error) {
	if r.State != Paused {
		return nil, fmt.Errorf("resume rollout %s in state %s: %w", r.ID, r.State, ErrState)
	}
	r.State = r.PausedFrom
	if r.State == "" {
		r.State = Running
	}
	r.PausedFrom = ""
	r.Stages[r.Stage].BakeStart = time.Time{}
	r.Stages[r.Stage].Looks = 0
	r.Stages[r.Stage].GateLooks = nil
	r.Stages[r.Stage].LastLookAt = time.Time{}
	return r.decide(now, ActResume, "resumed by operator", nil, by), nil
}

// Approve lets a stage that needs approval start.
func (r *Rollout) Approve(now time.Time, by string) ([]Action, error) {
	if r.State != WaitingApproval {
		return nil, fmt.Errorf("approve rollout %s in state %s: %w", r.ID, r.State, ErrState)
	}
	r.State = Running
	r.Stages[r.Stage].StartedAt = now
	return r.decide(now, ActApprove, fmt.Sprintf("stage %d approved", r.Stage), nil, by), nil
}

// Abort ends the rollout and leaves every device where it is (Rollback undoes it).
func (r *Rollout) Abort(now time.Time, by, reason string) ([]Action, error) {
	switch r.State {
	case Running, WaitingApproval, Paused:
	default:
		return nil, fmt.Errorf("abort rollout %s in state %s: %w", r.ID, r.State, ErrState)
	}
	r.State = Aborted
	return r.decide(now, ActAbort, orText(reason, "aborted by operator"), nil, by), nil
}

// Rollback puts every touched device back on the bundle it ran before the rollout, and, when the
// rollout had completed, every target group back on its previous baseline. Devices that failed
// are reverted too: the agent switched back by itself, but its desired state must stop naming the
// new bundle.
func (r *Rollout) Rollback(now time.Time, by, reason string) ([]Action, error) {
	switch r.State {
	case Running, WaitingApproval, Paused, Completed, Aborted:
	default:
		return nil, fmt.Errorf("roll back rollout %s in state %s: %w", r.ID, r.State, ErrState)
	}
	return r.rollback(now, by, orText(reason, "rolled back by operator"), nil), nil
}

func (r *Rollout) rollback(now time.Time, by, reason string, inputs map[string]any) []Action {
	wasCompleted := r.State == Completed
	r.State = RollingBack
	acts := r.decide(now, ActRollback, reason, inputs, by)
	acts = append(acts, r.revert(now, func(DeviceRecord) bool { return true })...)
	if wasCompleted {
		acts = append(acts, r.restoreBaselines(func(string) bool { return true })...)
	}
	return acts
}

func (r *Rollout) revert(now time.Time, which func(DeviceRecord) bool) []Action {
	var acts []Action
	model := r.Spec.ModelName()
	for i := range r.Devices {
		d := &r.Devices[i]
		if !which(*d) {
			continue
		}
		switch {
		case d.Status == StatusPlanned:
			d.Status = StatusExcluded
		case d.touched() && d.Status != StatusRolledBack:
			d.Status = StatusRollingBack
			acts = append(acts, RevertDesired{Device: d.Device, Model: model, Bundle: d.Previous, Rollout: r.ID})
		}
	}
	return acts
}

func (r *Rollout) restoreBaselines(which func(string) bool) []Action {
	var acts []Action
	for _, g := range r.groups() {
		if which(g) {
			acts = append(acts, SetGroupBaseline{Group: g, Model: r.Spec.ModelName(), Bundle: r.Baselines[g]})
		}
	}
	return acts
}

// RollbackGroup puts one group's touched devices back on their previous bundles and keeps the
// group's other devices out of the rest of the rollout. A running rollout is paused, because a
// person just said something is wrong; a completed one also gets the group's baseline back.
func (r *Rollout) RollbackGroup(now time.Time, by, group string) ([]Action, error) {
	if _, ok := r.Baselines[group]; !ok {
		return nil, fmt.Errorf("roll back group %q: not in rollout %s: %w", group, r.ID, ErrState)
	}
	if r.State == RollingBack || r.State == RolledBack {
		return nil, fmt.Errorf("roll back group %q of rollout %s in state %s: %w", group, r.ID, r.State, ErrState)
	}
	wasCompleted := r.State == Completed
	if r.State == Running || r.State == WaitingApproval {
		r.PausedFrom, r.State = r.State, Paused
	}
	acts := r.decide(now, ActRollback, fmt.Sprintf("group %s rolled back by operator", group),
		map[string]any{"group": group}, by)
	acts = append(acts, r.revert(now, func(d DeviceRecord) bool { return d.Group == group })...)
	if wasCompleted {
		acts = append(acts, r.restoreBaselines(func(g string) bool { return g == group })...)
	}
	return acts, nil
}

// Resync returns the desired-state actions that the rollout's records imply for devices still on
// their way (assigned but not finished, or being reverted). Step sends each of these once; a
// control plane that lost its outbox can call Resync after a restart, since re-sending a desired
// state is harmless to the agent.
func (r *Rollout) Resync() []Action {
	var acts []Action
	model := r.Spec.ModelName()
	for _, d := range r.Devices {
		switch d.Status {
		case StatusPending, StatusDownloading, StatusStalled:
			acts = append(acts, AssignDesired{Device: d.Device, Model: model, Bundle: r.Spec.Bundle, Rollout: r.ID,
				Bake: r.Spec.Stages[d.Stage].Bake.D()})
		case StatusRollingBack:
			acts = append(acts, RevertDesired{Device: d.Device, Model: model, Bundle: d.Previous, Rollout: r.ID})
		}
	}
	return acts
}

// groups returns the target's groups in first-seen plan order.
func (r *Rollout) groups() []string {
	var out []string
	seen := map[string]bool{}
	for _, d := range r.Devices {
		if !seen[d.Group] {
			seen[d.Group] = true
			out = append(out, d.Group)
		}
	}
	return out
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
