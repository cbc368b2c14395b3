package deploy

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Action is something the control plane must do after persisting the rollout: one of
// AssignDesired, RevertDesired, SetGroupBaseline or Record.
type Action interface{ isAction() }

// AssignDesired sets the device's desired bundle for Model; the agent commits after Bake.
type AssignDesired struct {
	Device  string        `json:"device"`
	Model   string        `json:"model"`
	Bundle  string        `json:"bundle"`
	Rollout string        `json:"rollout"`
	Bake    time.Duration `json:"bake"`
}

// RevertDesired puts the device back on Bundle, what it ran before the rollout ("": remove the
// model). The agent still has it in its inactive slot, so no download is needed.
type RevertDesired struct {
	Device  string `json:"device"`
	Model   string `json:"model"`
	Bundle  string `json:"bundle"`
	Rollout string `json:"rollout"`
}

// SetGroupBaseline commits Bundle as the group's baseline for Model ("": none).
type SetGroupBaseline struct {
	Group  string `json:"group"`
	Model  string `json:"model"`
	Bundle string `json:"bundle"`
}

// Record is a decision to log and audit; it is already in Rollout.Decisions.
type Record struct {
	Rollout  string   `json:"rollout"`
	Decision Decision `json:"decision"`
}

func (AssignDesired) isAction()    {}
func (RevertDesired) isAction()    {}
func (SetGroupBaseline) isAction() {}
func (Record) isAction()           {}

// InstallState is what the agent reports about the rollout's bundle.
type InstallState string

// Install states as the agent reports them; an empty state means nothing reported yet.
const (
	InstallPending     InstallState = "pending"
	InstallDownloading InstallState = "downloading"
	InstallInstalled   InstallState = "installed"
	InstallFailed      InstallState = "failed"
	InstallStalled     InstallState = "stalled"
)

// DeviceState is the registry's view of one device.
type DeviceState struct {
	Online bool `json:"online"`
	// OfflineSince is when an offline device went away (zero: unknown, counted as long gone).
	OfflineSince time.Time `json:"offline_since,omitzero"`
	// Bundle is the bundle active for the rollout's model.
	Bundle string `json:"bundle"`
	// Install is the agent's report on the bundle this rollout assigned.
	Install    InstallState `json:"install,omitempty"`
	Reason     string       `json:"reason,omitempty"`
	SwitchedAt time.Time    `json:"switched_at,omitzero"`
}

// Observation is what the control plane saw, as of the now passed to Step.
type Observation struct {
	// Devices by id; a targeted device missing here is treated as unknown (no change, not online).
	Devices map[string]DeviceState `json:"devices"`
	// Metrics for the window and cohorts of Rollout.Cohorts.
	Metrics Metrics `json:"metrics"`
}

// Step advances the rollout by what obs shows at now and returns what the control plane must do.
// It changes r; the control plane persists r before acting, so that after a restart it continues
// from the stored rollout. Step reaches a fixed point: a second call with the same now and obs
// changes nothing and returns no action, so no assignment is ever sent twice.
func Step(now time.Time, r *Rollout, obs Observation) ([]Action, error) {
	if r == nil {
		return nil, errors.New("step: nil rollout")
	}
	if len(r.Stages) != len(r.Spec.Stages) || len(r.Sizes) != len(r.Spec.Stages) || r.Stage < 0 || r.Stage >= len(r.Stages) {
		return nil, fmt.Errorf("step rollout %s: stored rollout is inconsistent (stage %d of %d): %w", r.ID, r.Stage, len(r.Spec.Stages), ErrState)
	}
	r.observe(now, obs)
	var acts []Action
	switch r.State {
	case Running:
		// Each pass either waits or moves to the next stage; bounding the loop by the stage count
		// keeps a bug from spinning.
		for range len(r.Stages) + 1 {
			a, advanced := r.stepRunning(now, obs)
			acts = append(acts, a...)
			if !advanced || r.State != Running {
				break
			}
		}
	case RollingBack:
		acts = append(acts, r.checkRolledBack(now, obs)...)
	}
	return acts, nil
}

// observe folds the devices' reports into the records. It runs in every state, so a device that
// comes back online after a rollback finished is still seen arriving on its previous bundle.
func (r *Rollout) observe(now time.Time, obs Observation) {
	for i := range r.Devices {
		d := &r.Devices[i]
		st, ok := obs.Devices[d.Device]
		if !ok {
			continue
		}
		switch d.Status {
		case StatusPending, StatusDownloading, StatusStalled, StatusInstalled:
			switch st.Install {
			case InstallDownloading:
				if d.Status == StatusPending || d.Status == StatusStalled {
					d.Status = StatusDownloading
				}
			case InstallInstalled:
				if st.Bundle == r.Spec.Bundle && d.Status != StatusInstalled {
					d.Status, d.Reason = StatusInstalled, ""
					d.SwitchedAt = st.SwitchedAt
					if d.SwitchedAt.IsZero() {
						d.SwitchedAt = now
					}
				}
			case InstallFailed:
				// Failed is final for the rollout even if the agent retries: a bundle that failed once
				// on a device is evidence, and the gate must see it.
				d.Status, d.Reason = StatusFailed, st.Reason
			case InstallStalled:
				if d.Status != StatusInstalled {
					d.Status, d.Reason = StatusStalled, st.Reason
				}
			}
		case StatusRollingBack:
			if st.Bundle == d.Previous {
				d.Status = StatusRolledBack
			}
		}
	}
}

// waveStats are the install counts over the devices of stages up to the current one.
type waveStats struct {
	total, planned, inFlight, installed, failed, stalled, offline, offlineInFlight int
}

// wave counts the stage's devices; an offline device counts against offline_max only once it has
// been away longer than grace.
func (r *Rollout) wave(now time.Time, obs Observation, grace time.Duration) waveStats {
	var w waveStats
	for _, d := range r.Devices[:r.Sizes[r.Stage]] {
		if d.Status == StatusExcluded || d.Status == StatusRollingBack || d.Status == StatusRolledBack {
			continue
		}
		w.total++
		ds := obs.Devices[d.Device]
		online := ds.Online
		if d.touched() && !online && (ds.OfflineSince.IsZero() || now.Sub(ds.OfflineSince) >= grace) {
			w.offline++
		}
		switch d.Status {
		case StatusPlanned:
			w.planned++
		case StatusPending, StatusDownloading:
			w.inFlight++
			if !online {
				w.offlineInFlight++
			}
		case StatusInstalled:
			w.installed++
		case StatusFailed:
			w.failed++
		case StatusStalled:
			w.stalled++
		}
	}
	return w
}

func (w waveStats) inputs() map[string]any {
	return map[string]any{"wave": w.total, "planned": w.planned, "in_flight": w.inFlight, "installed": w.installed,
		"failed": w.failed, "stalled": w.stalled, "offline": w.offline}
}

// installGates judges the install counts. It can fail before every device has finished: once the
// failures already seen make the minimum ratio unreachable, waiting for the rest only spreads a
// bad bundle further.
func (r *Rollout) installGates(w waveStats, l limits) []GateResult {
	var out []GateResult
	in := w.inputs()
	bad := w.failed + w.stalled
	best := float64(w.total-bad) / float64(max(w.total, 1))
	in["install_success_min"] = l.installSuccessMin
	if best < l.installSuccessMin {
		out = append(out, GateResult{Gate: "install_success", Verdict: Fail, Inputs: in,
			Reason: fmt.Sprintf("%d failed and %d stalled of %d: success can reach at most %.3f < %.3f", w.failed, w.stalled, w.total, best, l.installSuccessMin)})
	}
	if l.stallMax >= 0 && w.stalled > l.stallMax {
		out = append(out, GateResult{Gate: "stalls", Verdict: Fail, Inputs: in,
			Reason: fmt.Sprintf("%d stalled > stall_max %d", w.stalled, l.stallMax)})
	}
	offMax := l.offlineMax
	if offMax < 0 {
		offMax = int(math.Ceil(float64(w.total) / 10))
	}
	if w.offline > offMax {
		out = append(out, GateResult{Gate: "offline", Verdict: Fail, Pause: true, Inputs: in,
			Reason: fmt.Sprintf("%d devices offline > offline_max %d", w.offline, offMax)})
	}
	return out
}

// stepRunning does one stage's worth of work; advanced reports a move to the next stage.
func (r *Rollout) stepRunning(now time.Time, obs Observation) (acts []Action, advanced bool) {
	s := r.Stage
	stage := r.Spec.Stages[s]
	l := r.Spec.StageGates(s).limits()
	prog := &r.Stages[s]

	w := r.wave(now, obs, l.offlineGrace)
	if failed := r.installGates(w, l); len(failed) > 0 {
		return r.fail(now, failed), false
	}

	if w.planned > 0 {
		a := r.assign(now, obs)
		acts = append(acts, a...)
		w = r.wave(now, obs, l.offlineGrace)
	}
	// A wave whose every device is offline mid-install has nothing to judge yet: wait for them
	// (offline_max bounds how many may be away) rather than read 0 of 0 as a failure.
	if w.planned > 0 || w.inFlight > w.offlineInFlight || (w.total > 0 && w.total == w.offlineInFlight) {
		reason := "waiting for devices to install"
		switch {
		case w.planned > 0:
			reason = "waiting for the rate limit"
		case w.inFlight == w.offlineInFlight:
			reason = "waiting for offline devices to come back and install"
		}
		return append(acts, r.decide(now, ActWait, reason, w.inputs(), Controller)...), false
	}
	// Every device has finished (offline ones count as finished: offline_max bounds them) and the
	// counts passed above; a ratio that is still short here is short for good.
	// Offline devices still in flight are left out of the ratio: being offline is not the bundle's
	// fault, and the offline gate already bounds how many there may be.
	if ratio := float64(w.installed) / float64(max(w.total-w.offlineInFlight, 1)); ratio < l.installSuccessMin {
		in := w.inputs()
		in["install_success_min"] = l.installSuccessMin
		return append(acts, r.fail(now, []GateResult{{Gate: "install_success", Verdict: Fail, Inputs: in,
			Reason: fmt.Sprintf("%d installed of %d: %.3f < %.3f", w.installed, w.total, ratio, l.installSuccessMin)}})...), false
	}
	if prog.BakeStart.IsZero() {
		prog.BakeStart = now
		acts = append(acts, r.decide(now, ActBake, fmt.Sprintf("stage %d installed; baking %v", s, stage.Bake.D()), w.inputs(), Controller)...)
	}

	bake := stage.Bake.D()
	if prog.Looks < l.evaluations {
		a, failedNow := r.look(now, obs, l, bake)
		acts = append(acts, a...)
		if failedNow || prog.Looks < l.evaluations {
			return acts, false
		}
	}
	if now.Before(prog.BakeStart.Add(bake)) {
		return append(acts, r.decide(now, ActWait, "baking", nil, Controller)...), false
	}
	prog.Passed = true
	if s == len(r.Spec.Stages)-1 {
		r.State = Completed
		acts = append(acts, r.decide(now, ActComplete, "every stage passed", map[string]any{"counts": r.Counts()}, Controller)...)
		for _, g := range r.groups() {
			acts = append(acts, SetGroupBaseline{Group: g, Model: r.Spec.ModelName(), Bundle: r.Spec.Bundle})
		}
		return acts, false
	}
	acts = append(acts, r.decide(now, ActAdvance, fmt.Sprintf("stage %d passed", s), map[string]any{"to": s + 1}, Controller)...)
	r.Stage++
	if r.Spec.Stages[r.Stage].Approval {
		r.State = WaitingApproval
		return append(acts, r.decide(now, ActWait, fmt.Sprintf("stage %d needs approval", r.Stage), nil, Controller)...), true
	}
	r.Stages[r.Stage].StartedAt = now
	return acts, true
}

// look runs the model-aware gates whose next look is due. Each gate has its own count of looks:
// look k of E is due at bake start + bake*k/E, so looks are spread over the bake, each sees more
// data than the one before and their number is fixed whatever the ticker does. A gate that lacks
// samples does not spend its look (a look without power would let a stage pass on too little
// evidence), and only a spent look may fail, so the false-alarm budget holds: each test runs at
// alpha / (S * E * G), S the stages and G the model gates, which bounds the false alarms of
// the whole rollout on a good release by alpha (Bonferroni over stages, looks and gates). Splitting
// over looks alone would bound each stage's gate, and 4 stages of 7 gates measured 8% false alarms.
func (r *Rollout) look(now time.Time, obs Observation, l limits, bake time.Duration) (acts []Action, failedNow bool) {
	prog := &r.Stages[r.Stage]
	if !now.After(prog.LastLookAt) {
		return nil, false
	}
	due := func(k int) time.Time {
		return prog.BakeStart.Add(bake * time.Duration(k) / time.Duration(l.evaluations))
	}
	if prog.GateLooks == nil {
		prog.GateLooks = map[string]int{}
	}
	// Only evaluate when some gate is due: the statistics are not free and, above all, a result
	// nobody may act on should not appear in the log.
	anyDue := false
	for _, name := range modelGates {
		if k := prog.GateLooks[name]; k < l.evaluations && !now.Before(due(k+1)) {
			anyDue = true
		}
	}
	if !anyDue {
		return r.decide(now, ActWait, fmt.Sprintf("baking: look %d of %d", prog.Looks+1, l.evaluations),
			map[string]any{"due": due(prog.Looks + 1)}, Controller), false
	}
	// G counts every model gate, skipped or not: a fixed split keeps the level the same at every
	// look and costs little power, since a skipped gate is mostly the final stage's baseline.
	alpha := l.alpha / float64(len(r.Stages)*l.evaluations*len(modelGates))
	results := EvaluateModel(r.Spec.StageGates(r.Stage), obs.Metrics, alpha)
	var failed, waiting, looked []GateResult
	for _, g := range results {
		k := prog.GateLooks[g.Gate]
		if k >= l.evaluations || now.Before(due(k+1)) {
			continue
		}
		switch g.Verdict {
		case Fail:
			failed = append(failed, g)
		case Wait:
			waiting = append(waiting, g)
			continue
		}
		looked = append(looked, g)
		prog.GateLooks[g.Gate] = k + 1
	}
	in := map[string]any{"look": prog.Looks + 1, "of": l.evaluations, "alpha": alpha, "gates": results}
	if len(failed) > 0 {
		return r.fail(now, failed), true
	}
	if len(looked) > 0 {
		prog.LastLookAt = now
	}
	prev := prog.Looks
	prog.Looks = l.evaluations
	for _, name := range modelGates {
		prog.Looks = min(prog.Looks, prog.GateLooks[name])
	}
	if len(waiting) > 0 {
		acts = r.decide(now, ActWait, "waiting for samples: "+gateNames(waiting), in, Controller)
	}
	if prog.Looks > prev {
		acts = append(acts, r.decide(now, ActEvaluate, fmt.Sprintf("look %d of %d passed", prog.Looks, l.evaluations), in, Controller)...)
	}
	return acts, false
}

// modelGates are the names EvaluateModel reports, in its order.
var modelGates = []string{"error_rate", "latency", "output_shift", "input_drift", "accuracy", "self_error_rate", "self_latency"}

// assign sends the new bundle to as many planned devices of the current stage as the rate limit
// and the in-flight bound allow, in plan order.
func (r *Rollout) assign(now time.Time, obs Observation) []Action {
	rate := r.Spec.Rate
	budget := math.MaxInt
	if rate.DevicesPerMinute > 0 {
		// A token bucket holding at most one minute's worth: the first wave may go at once, the
		// rest at the configured pace.
		burst := math.Max(1, rate.DevicesPerMinute)
		if r.RateAt.IsZero() {
			r.RateTokens = burst
		} else if el := now.Sub(r.RateAt); el > 0 {
			r.RateTokens = math.Min(burst, r.RateTokens+rate.DevicesPerMinute*el.Minutes())
		}
		if now.After(r.RateAt) {
			r.RateAt = now
		}
		budget = int(math.Floor(r.RateTokens + 1e-9))
	}
	if rate.MaxInFlight > 0 {
		inFlight := 0
		for _, d := range r.Devices {
			if d.Status == StatusPending || d.Status == StatusDownloading || d.Status == StatusStalled {
				inFlight++
			}
		}
		budget = min(budget, max(rate.MaxInFlight-inFlight, 0))
	}
	var acts []Action
	var ids []string
	model := r.Spec.ModelName()
	bake := r.Spec.Stages[r.Stage].Bake.D()
	for i := range r.Devices[:r.Sizes[r.Stage]] {
		if len(ids) >= budget {
			break
		}
		d := &r.Devices[i]
		if d.Status != StatusPlanned {
			continue
		}
		if st, ok := obs.Devices[d.Device]; ok && st.Bundle != "" && st.Bundle != r.Spec.Bundle {
			d.Previous = st.Bundle
		}
		d.Status, d.AssignedAt = StatusPending, now
		ids = append(ids, d.Device)
		acts = append(acts, AssignDesired{Device: d.Device, Model: model, Bundle: r.Spec.Bundle, Rollout: r.ID, Bake: bake})
	}
	if len(ids) == 0 {
		return nil
	}
	if rate.DevicesPerMinute > 0 {
		r.RateTokens -= float64(len(ids))
	}
	rec := r.decide(now, ActAssign, fmt.Sprintf("assigned %d devices to stage %d", len(ids), r.Stage),
		map[string]any{"devices": ids}, Controller)
	return append(rec, acts...)
}

// fail applies a gate failure: pause when a gate asks for a person or the spec says so, roll back
// otherwise.
func (r *Rollout) fail(now time.Time, failed []GateResult) []Action {
	in := map[string]any{"gates": failed}
	reason := "gate failed: " + gateNames(failed) + ": " + failed[0].Reason
	pause := r.Spec.onFailure() == OnFailurePause
	for _, g := range failed {
		pause = pause || g.Pause
	}
	if pause {
		r.PausedFrom, r.State = Running, Paused
		return r.decide(now, ActPause, reason, in, Controller)
	}
	return r.rollback(now, Controller, reason, in)
}

// checkRolledBack finishes a rollback once every online device being reverted runs its previous
// bundle; offline ones converge when they return (their desired state is retained).
func (r *Rollout) checkRolledBack(now time.Time, obs Observation) []Action {
	waiting, offline := 0, 0
	for _, d := range r.Devices {
		if d.Status != StatusRollingBack {
			continue
		}
		if obs.Devices[d.Device].Online {
			waiting++
		} else {
			offline++
		}
	}
	if waiting > 0 {
		return r.decide(now, ActWait, "waiting for devices to revert", map[string]any{"reverting": waiting, "offline": offline}, Controller)
	}
	r.State = RolledBack
	return r.decide(now, ActRolledBack, "every online device runs its previous bundle", map[string]any{"offline": offline}, Controller)
}

func gateNames(gs []GateResult) string {
	names := make([]string, len(gs))
	for i, g := range gs {
		names[i] = g.Gate
	}
	return strings.Join(names, ", ")
}
