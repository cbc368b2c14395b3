// Package runtimeup is the agent's side of updating itself: a runtime bundle (the agent binary,
// optionally the ONNX Runtime library) assigned under the reserved model name
// bundle.RuntimeName goes through download, verification and requirement checks like a model,
// is unpacked into the inactive runtime slot (DATA/runtime/a or b), and then the agent asks the
// launcher (agent/launcher) to switch, by writing request.json and exiting with status 75. The
// new agent, started on trial, writes healthy.json once it connected and published its reported
// state; the launcher commits it, or reverts to the previous agent, which reports why.
//
// The lifecycle's state (DATA/runtime/update.json) is persisted before each step acts, like a
// model's (agent/updater), and the steps and reasons it reports are the same words, so rollouts,
// gates and group rollback treat a runtime bundle like any model.
package runtimeup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/edgefleet/edgefleet/agent/launcher"
	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

const stateFile = "update.json"

// State is the persisted lifecycle of the runtime bundle.
type State struct {
	Step    string          `json:"step"`
	Target  *updater.Target `json:"target,omitempty"`
	Slot    string          `json:"slot,omitempty"` // where the target was unpacked
	Since   time.Time       `json:"since"`
	Attempt int             `json:"attempt"`
	Reason  string          `json:"reason,omitempty"`
	Message string          `json:"message,omitempty"`
	// FailedBundle failed for good; it is not tried again until the desired state names another.
	FailedBundle string `json:"failed_bundle,omitempty"`
}

// Deps are what the lifecycle uses from the rest of the agent.
type Deps struct {
	DataDir   string
	Fetcher   *updater.Fetcher
	Verifiers func() []bundle.Verifier
	// Report is called after every persisted change.
	Report func()
	// Restart makes the agent exit with launcher.ExitSwitch.
	Restart func()
	// Version is this agent's version (internal/cli.Version).
	Version string
	// Slot is the runtime slot this process runs from ($EDGEFLEET_LAUNCH_SLOT); "" when no
	// launcher supervises it.
	Slot string
	// CrashAt kills the process right after the named step is persisted (crash tests).
	CrashAt string
	Logger  *slog.Logger
}

// Updater runs the runtime lifecycle.
type Updater struct {
	deps Deps
	log  *slog.Logger

	mu       sync.Mutex
	st       State
	target   *updater.Target
	started  time.Time // this process's start: a trial's bake counts from it
	reported bool      // connected, and reported state reached the broker
	healthy  bool      // healthy.json written for the trial this process is
	wake     chan struct{}
}

// New loads the persisted state.
func New(deps Deps) (*Updater, error) {
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	u := &Updater{deps: deps, log: deps.Logger.With("model", bundle.RuntimeName), wake: make(chan struct{}, 1), started: time.Now()}
	if err := os.MkdirAll(launcher.RuntimeDir(deps.DataDir), 0o700); err != nil {
		return nil, fmt.Errorf("create runtime folder: %w", err)
	}
	b, err := os.ReadFile(u.path())
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &u.st); err != nil {
			return nil, fmt.Errorf("runtime update state %s is corrupt: %w", u.path(), err)
		}
	case errors.Is(err, os.ErrNotExist):
		u.st = State{Step: updater.StepIdle}
	default:
		return nil, err
	}
	return u, nil
}

func (u *Updater) path() string { return filepath.Join(launcher.RuntimeDir(u.deps.DataDir), stateFile) }

func (u *Updater) persist(change func(*State)) error {
	u.mu.Lock()
	prev := u.st.Step
	change(&u.st)
	if u.st.Step != prev {
		u.st.Since = time.Now().UTC()
	}
	st := u.st
	b, _ := json.MarshalIndent(st, "", "  ")
	err := atomicfile.WriteFile(u.path(), b, 0o600)
	u.mu.Unlock()
	if err != nil {
		return fmt.Errorf("persist runtime update state: %w", err)
	}
	if u.deps.CrashAt != "" && u.deps.CrashAt == "runtime-"+st.Step {
		u.log.Warn("crash point reached; killing the process", "step", st.Step)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	if u.deps.Report != nil {
		u.deps.Report()
	}
	return nil
}

// SetTarget hands the lifecycle what the desired state asks for (nil: nothing).
func (u *Updater) SetTarget(t *updater.Target) {
	u.mu.Lock()
	u.target = t
	u.mu.Unlock()
	u.poke()
}

func (u *Updater) poke() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// Reported tells the lifecycle that the agent is connected and its reported state (with its
// version) reached the broker: an agent on trial is then healthy, once it also ran for the
// assignment's bake.
func (u *Updater) Reported() {
	u.mu.Lock()
	u.reported = true
	u.mu.Unlock()
	u.tryHealthy()
}

// tryHealthy writes healthy.json for the launcher when this process is on trial, reported, and
// baked.
func (u *Updater) tryHealthy() {
	u.mu.Lock()
	done, reported := u.healthy, u.reported
	u.mu.Unlock()
	if done || !reported || u.deps.Slot == "" {
		return
	}
	ls, err := launcher.ReadState(u.deps.DataDir)
	if err != nil || ls.Trial == nil || ls.Trial.Name != u.deps.Slot || time.Since(u.started) < ls.Trial.Bake {
		return
	}
	if ls.Trial.Version != u.deps.Version {
		u.log.Warn("the runtime bundle's version differs from the agent binary's", "bundle_version", ls.Trial.Version, "agent_version", u.deps.Version)
	}
	if err := launcher.WriteHealthy(u.deps.DataDir, launcher.Healthy{Bundle: ls.Trial.Bundle, Version: u.deps.Version, At: time.Now().UTC()}); err != nil {
		u.log.Error("cannot tell the launcher that this agent is healthy", "err", err)
		return
	}
	u.mu.Lock()
	u.healthy = true
	u.mu.Unlock()
	u.log.Info("on trial: connected, reported and baked; told the launcher", "bundle", ls.Trial.Bundle, "bake", ls.Trial.Bake)
	u.poke()
}

// Report is the runtime's entry in reported models, or false when there is nothing to say.
func (u *Updater) Report() (wire.ModelReport, bool) {
	u.mu.Lock()
	st := u.st
	u.mu.Unlock()
	ls, _ := launcher.ReadState(u.deps.DataDir)
	r := wire.ModelReport{State: st.Step, Reason: st.Reason, Message: st.Message}
	if st.Target != nil {
		r.Target, r.Rollout = st.Target.Bundle, st.Target.Rollout
	}
	switch {
	case ls.Trial != nil && ls.Trial.Name == u.deps.Slot:
		r.Active, r.Version, r.Slot = ls.Trial.Bundle, ls.Trial.Version, ls.Trial.Name
		if ls.Active != nil {
			r.Previous = ls.Active.Bundle
		}
	case ls.Active != nil:
		r.Active, r.Version, r.Slot = ls.Active.Bundle, ls.Active.Version, ls.Active.Name
		if ls.Previous != nil {
			r.Previous = ls.Previous.Bundle
		}
	}
	if r.Active == "" && st.Target == nil && st.Step == updater.StepIdle {
		return r, false
	}
	if r.Active == "" {
		r.Version, r.Slot = u.deps.Version, launcher.Installed
	}
	return r, true
}

// Run drives the lifecycle until ctx ends.
func (u *Updater) Run(ctx context.Context) {
	backoff := time.Second
	for {
		next, err := u.step(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := next
		if err != nil {
			u.log.Warn("runtime update step failed; retrying", "step", u.State().Step, "in", backoff, "err", err)
			wait = backoff
			backoff = min(backoff*2, 5*time.Minute)
		} else if next == 0 {
			backoff = time.Second
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-u.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// State returns a copy of the persisted state.
func (u *Updater) State() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st
}

const idleWait = time.Hour

func (u *Updater) fail(t *updater.Target, reason string, err error) (time.Duration, error) {
	u.log.Error("runtime update failed; this agent keeps running", "bundle", t.Bundle, "reason", reason, "err", err)
	return idleWait, u.persist(func(x *State) {
		x.Step, x.Reason, x.Message, x.FailedBundle = updater.StepFailed, reason, err.Error(), t.Bundle
	})
}

func (u *Updater) step(ctx context.Context) (time.Duration, error) {
	u.mu.Lock()
	st, t := u.st, u.target
	u.mu.Unlock()
	ls, err := launcher.ReadState(u.deps.DataDir)
	if err != nil {
		return 0, err
	}

	// This process is the new agent on trial: it reports itself as baking until the launcher
	// commits it (it then reads committed below, on its next look).
	if ls.Trial != nil && u.deps.Slot != "" && ls.Trial.Name == u.deps.Slot {
		if st.Step != updater.StepBaking || st.Target == nil || st.Target.Bundle != ls.Trial.Bundle {
			tgt := st.Target
			if tgt == nil || tgt.Bundle != ls.Trial.Bundle {
				tgt = &updater.Target{Bundle: ls.Trial.Bundle, Version: ls.Trial.Version}
			}
			return time.Second, u.persist(func(x *State) { x.Step, x.Target, x.Reason, x.Message = updater.StepBaking, tgt, "", "" })
		}
		u.tryHealthy()
		return time.Second, nil
	}

	// A switch this agent asked for has ended: committed (this process may be the new agent,
	// or a later restart of it) or reverted (this is the previous agent again).
	if (st.Step == updater.StepSwitching || st.Step == updater.StepBaking) && st.Target != nil {
		if ls.Active != nil && ls.Active.Bundle == st.Target.Bundle && ls.Trial == nil {
			u.log.Info("runtime committed", "bundle", st.Target.Bundle, "version", ls.Active.Version)
			return 0, u.persist(func(x *State) { x.Step, x.Reason, x.Message = updater.StepCommitted, "", "" })
		}
		if l := ls.Last; l != nil && l.Result == launcher.ResultReverted && l.Bundle == st.Target.Bundle && ls.Trial == nil {
			u.log.Error("the new agent was reverted by the launcher", "bundle", l.Bundle, "reason", l.Reason, "why", l.Message)
			return idleWait, u.persist(func(x *State) {
				x.Step, x.Reason, x.Message, x.FailedBundle = updater.StepReverted, l.Reason, l.Message, st.Target.Bundle
			})
		}
	}

	if t == nil {
		return idleWait, nil
	}
	if ls.Active != nil && ls.Active.Bundle == t.Bundle {
		if st.Step != updater.StepCommitted || st.Target == nil || st.Target.Generation != t.Generation {
			return idleWait, u.persist(func(x *State) { x.Step, x.Target, x.Reason, x.Message = updater.StepCommitted, t, "", "" })
		}
		return idleWait, nil
	}
	if l := ls.Last; l != nil && l.Result == launcher.ResultSuperseded && l.Bundle == t.Bundle && st.FailedBundle != t.Bundle {
		// The package manager installed another agent over this bundle: the newer action wins
		// until the desired state names another runtime bundle.
		u.log.Warn("runtime bundle superseded by the agent package; not installing it again", "bundle", t.Bundle, "why", l.Message)
		return idleWait, u.persist(func(x *State) {
			x.Step, x.Target, x.Reason, x.Message, x.FailedBundle = updater.StepFailed, t, launcher.ReasonPackage, l.Message, t.Bundle
		})
	}
	if st.FailedBundle == t.Bundle {
		return idleWait, nil
	}
	if st.Target == nil || st.Target.Bundle != t.Bundle || slices.Contains([]string{updater.StepIdle, updater.StepCommitted, updater.StepFailed, updater.StepReverted}, st.Step) {
		if u.deps.Slot == "" {
			return u.fail(t, launcher.ReasonNoLauncher, errors.New("this agent runs without `agent launch`, which alone can switch to a new agent; start it with `agent launch` (the packaged unit does) or upgrade it with the .deb"))
		}
		if p := ls.Previous; p != nil && p.Bundle == t.Bundle {
			if _, err := updater.VerifyDir(ctx, launcher.SlotDir(u.deps.DataDir, p.Name), t.Bundle, u.deps.Verifiers()); err == nil {
				// Back to the previous agent, still in its slot: no download.
				return 0, u.persist(func(x *State) {
					x.Target, x.Slot, x.Step, x.Attempt, x.Reason, x.Message, x.FailedBundle = t, p.Name, updater.StepSwitching, 0, "", "", ""
				})
			}
		}
		return 0, u.persist(func(x *State) {
			x.Target, x.Slot, x.Step, x.Attempt, x.Reason, x.Message, x.FailedBundle = t, "", updater.StepDownloading, 0, "", "", ""
		})
	}
	if st.Target.Generation != t.Generation {
		u.persist(func(x *State) { x.Target = t })
	}
	switch st.Step {
	case updater.StepDownloading:
		return u.download(ctx, t)
	case updater.StepVerifying, updater.StepChecking, updater.StepUnpacking:
		return u.prepare(ctx, st.Step, t)
	case updater.StepSwitching, updater.StepBaking:
		return u.switchTo(t, st.Slot)
	}
	return idleWait, nil
}

func (u *Updater) downloadDir(id string) string { return filepath.Join(u.deps.Fetcher.Dir, id) }

func (u *Updater) download(ctx context.Context, t *updater.Target) (time.Duration, error) {
	_, _, _, err := u.deps.Fetcher.Fetch(ctx, t.Bundle, t.Carousel, u.deps.Verifiers())
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		reason, transient := updater.ReasonOf(err)
		if !transient {
			return u.fail(t, reason, err)
		}
		u.persist(func(x *State) { x.Attempt++; x.Reason, x.Message = reason, err.Error() })
		return 0, err
	}
	return 0, u.persist(func(x *State) { x.Step, x.Reason, x.Message = updater.StepVerifying, "", "" })
}

func (u *Updater) prepare(ctx context.Context, step string, t *updater.Target) (time.Duration, error) {
	dl := u.downloadDir(t.Bundle)
	m, err := updater.VerifyDir(ctx, dl, t.Bundle, u.deps.Verifiers())
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, u.persist(func(x *State) { x.Step = updater.StepDownloading })
		}
		reason, _ := updater.ReasonOf(err)
		os.RemoveAll(dl)
		return u.fail(t, reason, err)
	}
	switch step {
	case updater.StepVerifying:
		return 0, u.persist(func(x *State) { x.Step = updater.StepChecking })
	case updater.StepChecking:
		if err := Check(m); err != nil {
			return u.fail(t, updater.ReasonRequirements, err)
		}
		return 0, u.persist(func(x *State) { x.Step = updater.StepUnpacking })
	}
	// Unpack into the slot that is not running. The launcher's state names the active one;
	// the previous agent's slot is overwritten (rolling back past it needs a download).
	ls, err := launcher.ReadState(u.deps.DataDir)
	if err != nil {
		return 0, err
	}
	slot := "a"
	if ls.Active != nil {
		slot = launcher.Other(ls.Active.Name)
	}
	dir := launcher.SlotDir(u.deps.DataDir, slot)
	if err := updater.InstallSlot(dl, dir, m); err != nil {
		return 0, fmt.Errorf("unpack into runtime slot %s: %w", slot, err)
	}
	if err := os.Chmod(filepath.Join(dir, launcher.AgentFile), 0o700); err != nil {
		return 0, err
	}
	os.RemoveAll(dl)
	return 0, u.persist(func(x *State) { x.Step, x.Slot = updater.StepSwitching, slot })
}

// switchTo asks the launcher for the switch and ends this process; it runs again after a
// restart in this step (the request is idempotent).
func (u *Updater) switchTo(t *updater.Target, slot string) (time.Duration, error) {
	if slot == "" {
		return 0, u.persist(func(x *State) { x.Step = updater.StepDownloading })
	}
	if err := launcher.WriteRequest(u.deps.DataDir, launcher.Request{Slot: launcher.Slot{Name: slot, Bundle: t.Bundle, Version: t.Version}, Bake: t.Bake}); err != nil {
		return 0, fmt.Errorf("ask the launcher to switch: %w", err)
	}
	u.log.Info("runtime unpacked; exiting so that the launcher starts the new agent", "slot", slot, "bundle", t.Bundle, "version", t.Version)
	if u.deps.Restart != nil {
		u.deps.Restart()
	}
	return idleWait, nil
}

// Check refuses a bundle this device cannot run as its agent.
func Check(m *bundle.Manifest) error {
	if m.Kind != bundle.KindRuntime {
		return fmt.Errorf("bundle %s is a %s bundle; only runtime bundles may be assigned as %s", m.Ref(), m.Kind, bundle.RuntimeName)
	}
	f := m.File(launcher.AgentFile)
	if f == nil || f.Role != bundle.RoleRuntime {
		return fmt.Errorf("runtime bundle %s carries no %q file", m.Ref(), launcher.AgentFile)
	}
	if !slices.Contains(m.Requirements.Arch, runtime.GOARCH) {
		return fmt.Errorf("runtime bundle %s is built for %v, this device is %s", m.Ref(), m.Requirements.Arch, runtime.GOARCH)
	}
	return nil
}
