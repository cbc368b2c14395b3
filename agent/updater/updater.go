// Package updater is the device's install lifecycle for one model name, a persisted state machine
// in the manner of mender's: desired -> downloading -> verifying -> checking -> unpacking ->
// loading -> smoke_test -> switching -> baking -> committed. Each step is written to disk (atomic
// write) before it acts, so a power cut at any point resumes at the step it was in; any failure
// before the switch leaves the old model serving; a failure during bake switches back by itself.
// The two slots (a, b) hold the active bundle and the previous one, so a rollback needs no
// download.
package updater

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"filippo.io/age"

	"github.com/edgefleet/edgefleet/agent/infer"
	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/golden"
	"github.com/edgefleet/edgefleet/ota/seal"
)

// Steps of the lifecycle. Steps lists every step at which the state is persisted before acting;
// the crash test kills the agent at each of them.
const (
	StepIdle        = "idle"
	StepDownloading = "downloading"
	StepVerifying   = "verifying"
	StepChecking    = "checking"
	StepUnpacking   = "unpacking"
	StepLoading     = "loading"
	StepSmokeTest   = "smoke_test"
	StepSwitching   = "switching"
	StepBaking      = "baking"
	StepCommitted   = "committed"
	StepReverting   = "reverting"
	StepReverted    = "reverted"
	StepFailed      = "failed"
)

// Steps in lifecycle order.
var Steps = []string{StepDownloading, StepVerifying, StepChecking, StepUnpacking, StepLoading, StepSmokeTest, StepSwitching, StepBaking, StepCommitted, StepReverting, StepReverted, StepFailed}

// Reason codes reported with a failure.
const (
	ReasonStalled      = "download_stalled"
	ReasonEndless      = "endless_data"
	ReasonMismatch     = "bundle_mismatch"
	ReasonSignature    = "signature_invalid"
	ReasonDigest       = "digest_mismatch"
	ReasonDiskFull     = "disk_full"
	ReasonRequirements = "requirements_unmet"
	ReasonMemory       = "insufficient_memory"
	ReasonLoad         = "load_failed"
	ReasonSmoke        = "smoke_test_failed"
	ReasonBake         = "bake_failed"
	ReasonTransfer     = "transfer_error"
	// ReasonNotRecipient: the bundle is encrypted and this device holds no key that opens it (none
	// sent, or one wrapped for another device or bundle). Final until the desired state brings
	// another key.
	ReasonNotRecipient = "not_a_recipient"
)

// Target is what the desired state asks for this model.
type Target struct {
	Bundle     string        `json:"bundle"`
	Version    string        `json:"version"`
	Generation uint64        `json:"generation"`
	Rollout    string        `json:"rollout,omitempty"`
	Bake       time.Duration `json:"bake"`
	Carousel   bool          `json:"carousel,omitempty"`
	// Key and Recipient: an encrypted bundle's content key, wrapped to this device's recipient.
	Key       string `json:"key,omitempty"`
	Recipient string `json:"recipient,omitempty"`
}

// Slot is the content of one slot.
type Slot struct {
	Name    string `json:"name"` // "a" or "b"
	Bundle  string `json:"bundle"`
	Version string `json:"version"`
}

// State is the persisted state of one model name.
type State struct {
	Model     string    `json:"model"`
	Active    *Slot     `json:"active,omitempty"`
	Standby   *Slot     `json:"standby,omitempty"` // previous bundle, kept for rollback
	Target    *Target   `json:"target,omitempty"`
	Step      string    `json:"step"`
	Since     time.Time `json:"since"`
	Attempt   int       `json:"attempt"`
	Reason    string    `json:"reason,omitempty"`
	Message   string    `json:"message,omitempty"`
	BakeUntil time.Time `json:"bake_until,omitzero"`
	// WarmedUp is when the target's warm-up inference finished, in step loading and before the
	// smoke test (whose deadline starts after it): the golden inputs run once so that TensorRT
	// builds its engines (cached in the slot) then, never on a live request.
	WarmedUp time.Time `json:"warmed_up,omitzero"`
	// Failed remembers a bundle that failed for good, so it is not retried in a loop; a desired
	// state naming another bundle clears it.
	FailedBundle     string `json:"failed_bundle,omitempty"`
	FailedGeneration uint64 `json:"failed_generation,omitempty"`
	// Progress of the current download (blocks).
	BlocksHave  int64 `json:"blocks_have,omitempty"`
	BlocksTotal int64 `json:"blocks_total,omitempty"`
}

// Deps are what the updater uses from the rest of the agent.
type Deps struct {
	Fetcher   *Fetcher
	Verifiers func() []bundle.Verifier
	Server    *infer.Server
	LoadOpts  onnxrt.Options
	// Check returns why the device cannot run the bundle ("" when it can).
	Check func(m *bundle.Manifest) (reason, message string)
	// Report is called after every persisted change.
	Report func(State)
	// Faults returns the injected inference error rate for a model version (tests, simulations).
	Faults func(name, version string) float64
	// InstallFault returns "fail" or "smoke-fail" for a model version whose install should fail
	// (simulations and tests), "" otherwise.
	InstallFault func(name, version string) string
	// OnLoad is called for every model loaded from a slot folder (before its smoke test), so the
	// agent can attach its telemetry.
	OnLoad func(m *infer.Model, dir string)
	// CrashAt kills the process with SIGKILL right after the named step is persisted (crash tests).
	CrashAt string
	// BakeErrorMax is the error ratio during bake above which the new model is reverted.
	BakeErrorMax float64
	// BakeMinRequests is how many requests bake needs before the ratio counts.
	BakeMinRequests int64
	// Identity is the device's age identity, which opens the content keys of encrypted bundles.
	Identity age.Identity
	Logger   *slog.Logger
}

// Updater runs the lifecycle of one model name.
type Updater struct {
	name string
	dir  string // DATA/models/<name>
	deps Deps
	log  *slog.Logger

	mu     sync.Mutex
	st     State
	target *Target
	wake   chan struct{}
	model  *infer.Model // the served model this updater loaded
}

// New loads the persisted state of a model name.
func New(dataDir, name string, deps Deps) (*Updater, error) {
	if deps.BakeErrorMax == 0 {
		deps.BakeErrorMax = 0.2
	}
	if deps.BakeMinRequests == 0 {
		deps.BakeMinRequests = 10
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	u := &Updater{name: name, dir: filepath.Join(dataDir, "models", name), deps: deps, wake: make(chan struct{}, 1),
		log: deps.Logger.With("model", name)}
	if err := os.MkdirAll(u.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create model folder: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(u.dir, "state.json"))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &u.st); err != nil {
			return nil, fmt.Errorf("model %s state is corrupt: %w", name, err)
		}
	case errors.Is(err, os.ErrNotExist):
		u.st = State{Model: name, Step: StepIdle}
	default:
		return nil, err
	}
	return u, nil
}

// State returns a copy of the persisted state.
func (u *Updater) State() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st
}

// persist writes the state before the step acts, then reports it.
func (u *Updater) persist(change func(*State)) error {
	u.mu.Lock()
	prev := u.st.Step
	change(&u.st)
	if u.st.Step != prev {
		u.st.Since = time.Now().UTC()
	}
	st := u.st
	b, _ := json.MarshalIndent(st, "", "  ")
	err := atomicfile.WriteFile(filepath.Join(u.dir, "state.json"), b, 0o600)
	u.mu.Unlock()
	if err != nil {
		return fmt.Errorf("persist model state: %w", err)
	}
	if u.deps.CrashAt != "" && u.deps.CrashAt == st.Step {
		// A power cut right after the step was recorded: no cleanup, no goodbye.
		u.log.Warn("crash point reached; killing the process", "step", st.Step)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	if u.deps.Report != nil {
		u.deps.Report(st)
	}
	return nil
}

// SetTarget hands the updater what the desired state now asks for (nil: nothing).
func (u *Updater) SetTarget(t *Target) {
	u.mu.Lock()
	u.target = t
	u.mu.Unlock()
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

func (u *Updater) slotDir(name string) string { return filepath.Join(u.dir, "slot-"+name) }

func other(slot string) string {
	if slot == "a" {
		return "b"
	}
	return "a"
}

// Boot loads the active slot's model after verifying it again (a disk can rot), falling back to the
// standby slot. It returns an error only when nothing can be served and something should be.
func (u *Updater) Boot(ctx context.Context) error {
	st := u.State()
	for _, s := range []*Slot{st.Active, st.Standby} {
		if s == nil {
			continue
		}
		m, err := u.loadSlot(ctx, s)
		if err == nil {
			// The engine comes from the slot's cache now, but still on a first run.
			if err = u.warmUp(ctx, u.slotDir(s.Name), m); err != nil {
				m.Close()
			}
		}
		if err != nil {
			u.log.Error("installed bundle failed verification or loading at start", "slot", s.Name, "bundle", s.Bundle, "err", err)
			continue
		}
		u.serve(m)
		if s != st.Active {
			u.persist(func(x *State) {
				x.Active, x.Standby = s, nil
				x.Reason, x.Message = ReasonDigest, "active slot failed verification at start; serving the previous bundle"
			})
		}
		return nil
	}
	if st.Active != nil {
		return fmt.Errorf("model %s: no installed bundle passes verification", u.name)
	}
	return nil
}

// loadSlot verifies a slot's files against its signed manifest and loads the model.
func (u *Updater) loadSlot(ctx context.Context, s *Slot) (*infer.Model, error) {
	dir := u.slotDir(s.Name)
	m, err := verifyDir(ctx, dir, s.Bundle, u.deps.Verifiers(), true)
	if err != nil {
		return nil, err
	}
	return u.load(dir, s.Bundle, m)
}

// TensorRTCacheName is the folder, inside a slot, where TensorRT keeps the engines built for
// that slot's model: a new bundle gets a new slot folder (and engine); an A/B revert to the
// standby slot finds its engine still there.
const TensorRTCacheName = "trt-cache"

// loadOptions are the session options for the model in slot folder dir.
func (u *Updater) loadOptions(dir string) onnxrt.Options {
	o := u.deps.LoadOpts
	if strings.EqualFold(o.ExecutionProvider, onnxrt.ProviderTensorRT) {
		o.TensorRTCacheDir = filepath.Join(dir, TensorRTCacheName)
	}
	return o
}

func (u *Updater) load(dir, id string, m *bundle.Manifest) (*infer.Model, error) {
	opts := u.loadOptions(dir)
	if opts.TensorRTCacheDir != "" {
		if err := os.MkdirAll(opts.TensorRTCacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("create TensorRT engine cache: %w", err)
		}
	}
	mod, err := infer.Load(dir, id, m, opts)
	if err != nil {
		return nil, err
	}
	if u.deps.Faults != nil {
		mod.FaultErrorRate = u.deps.Faults(m.Name, m.Version)
	}
	if u.deps.OnLoad != nil {
		u.deps.OnLoad(mod, dir)
	}
	return mod, nil
}

// serve swaps m in; the previous model closes once its in-flight calls are done.
func (u *Updater) serve(m *infer.Model) {
	old := u.deps.Server.Swap(u.name, m)
	u.mu.Lock()
	u.model = m
	u.mu.Unlock()
	if old != nil && old != m {
		go old.Close()
	}
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
			u.log.Warn("install step failed; retrying", "step", u.State().Step, "in", backoff, "err", err)
			wait = backoff
			backoff = min(backoff*2, 5*time.Minute)
		} else if next == 0 {
			backoff = time.Second
			continue // progress: go on at once
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

// idleWait is how long the loop sleeps when there is nothing to do (a wake-up comes earlier).
const idleWait = time.Hour

// step does one unit of work. It returns how long to wait before the next (0: at once) or a
// transient error to retry with backoff.
func (u *Updater) step(ctx context.Context) (time.Duration, error) {
	u.mu.Lock()
	st, t := u.st, u.target
	u.mu.Unlock()

	// A bake in progress is watched, and a revert in progress finished, whatever else happens.
	switch st.Step {
	case StepBaking:
		if t == nil || st.Active == nil || t.Bundle == st.Active.Bundle {
			return u.bake(ctx, st)
		}
		// The desired state moved on mid-bake (a rollback, a newer release): stop watching this
		// bundle and act on the new target now rather than after the bake window.
		if err := u.persist(func(x *State) {
			x.Step, x.Reason, x.Message = StepCommitted, "", "bake cut short: the desired state names another bundle"
		}); err != nil {
			return 0, err
		}
		return 0, nil
	case StepReverting:
		return u.revert(ctx, st.Message)
	}
	if t == nil {
		return idleWait, nil
	}
	if st.Active != nil && st.Active.Bundle == t.Bundle {
		if st.Step != StepCommitted && st.Step != StepIdle && st.Step != StepReverted && st.Step != StepFailed {
			return 0, u.persist(func(x *State) { x.Step, x.Target, x.Reason, x.Message = StepCommitted, t, "", "" })
		}
		if st.Target == nil || st.Target.Generation != t.Generation {
			return idleWait, u.persist(func(x *State) { x.Target = t })
		}
		return idleWait, nil
	}
	if st.FailedBundle == t.Bundle && !newKey(st, t) {
		// Failed for good (verification, smoke test, bake): retrying the same bundle would fail
		// the same way, so wait until the desired state names another one.
		return idleWait, nil
	}
	// A new target, or the one in progress.
	if st.Target == nil || st.Target.Bundle != t.Bundle || st.Step == StepIdle || st.Step == StepCommitted || st.Step == StepFailed || st.Step == StepReverted {
		if st.Standby != nil && st.Standby.Bundle == t.Bundle {
			// Rollback to the cached previous bundle: no download.
			return 0, u.persist(func(x *State) {
				x.Target, x.Step, x.Attempt, x.Reason, x.Message, x.FailedBundle, x.FailedGeneration = t, StepLoading, 0, "", "", "", 0
				x.WarmedUp = time.Time{}
			})
		}
		return 0, u.persist(func(x *State) {
			x.Target, x.Step, x.Attempt, x.Reason, x.Message, x.FailedBundle, x.FailedGeneration = t, StepDownloading, 0, "", "", "", 0
			x.WarmedUp = time.Time{}
		})
	}
	if st.Target.Generation != t.Generation {
		u.persist(func(x *State) { x.Target = t })
	}
	switch st.Step {
	case StepDownloading:
		return u.download(ctx, t)
	case StepVerifying, StepChecking, StepUnpacking:
		return u.prepare(ctx, st.Step, t)
	case StepLoading, StepSmokeTest, StepSwitching:
		return u.activate(ctx, t)
	}
	return idleWait, nil
}

// newKey: a bundle refused for want of a key is tried again when the desired state brings another
// key (the control plane learned the device's recipient after assigning it, say).
func newKey(st State, t *Target) bool {
	return st.Reason == ReasonNotRecipient && st.Target != nil && st.Target.Key != t.Key && t.Key != ""
}

// contentKey opens the content key of an encrypted bundle with the device's identity. Any failure
// means this device is not a recipient: no key, a key for another device, or one for another bundle.
func (u *Updater) contentKey(t *Target, m *bundle.Manifest) (age.Identity, error) {
	if u.deps.Identity == nil {
		return nil, fmt.Errorf("this agent has no encryption identity: %w", seal.ErrNotRecipient)
	}
	if t.Recipient != "" {
		if x, ok := u.deps.Identity.(*age.X25519Identity); ok && x.Recipient().String() != t.Recipient {
			return nil, fmt.Errorf("the bundle key was wrapped for %s, this device is %s: %w", t.Recipient, x.Recipient(), seal.ErrNotRecipient)
		}
	}
	k, err := seal.Unwrap(t.Key, u.deps.Identity, m.Encryption.ContentRecipient)
	if err != nil {
		return nil, fmt.Errorf("bundle %s is encrypted and this device cannot open its key: %w", m.Ref(), err)
	}
	return k, nil
}

func (u *Updater) downloadDir(id string) string { return filepath.Join(u.deps.Fetcher.Dir, id) }

func (u *Updater) fail(t *Target, reason string, err error) (time.Duration, error) {
	u.log.Error("install failed; the previous model keeps serving", "bundle", t.Bundle, "reason", reason, "err", err)
	return idleWait, u.persist(func(x *State) {
		x.Step, x.Reason, x.Message = StepFailed, reason, err.Error()
		x.FailedBundle, x.FailedGeneration = t.Bundle, t.Generation
	})
}

func reasonOf(err error) (string, bool) {
	switch {
	case errors.Is(err, ErrStalled):
		return ReasonStalled, true
	case errors.Is(err, ErrEndless):
		return ReasonEndless, true
	case errors.Is(err, ErrDiskFull):
		return ReasonDiskFull, true
	case errors.Is(err, ErrMismatch):
		return ReasonMismatch, false
	case errors.Is(err, bundle.ErrSignature):
		return ReasonSignature, false
	case errors.Is(err, bundle.ErrDigest), errors.Is(err, bundle.ErrSize):
		return ReasonDigest, false
	}
	return ReasonTransfer, true
}

func (u *Updater) download(ctx context.Context, t *Target) (time.Duration, error) {
	_, _, p, err := u.deps.Fetcher.Fetch(ctx, t.Bundle, t.Carousel, u.deps.Verifiers())
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		reason, transient := reasonOf(err)
		if !transient {
			return u.fail(t, reason, err)
		}
		u.persist(func(x *State) {
			x.Attempt++
			x.Reason, x.Message = reason, err.Error()
			x.BlocksHave, x.BlocksTotal = p.BlocksHave, p.BlocksTotal
		})
		return 0, err
	}
	return 0, u.persist(func(x *State) {
		x.Step, x.Reason, x.Message = StepVerifying, "", ""
		x.BlocksHave, x.BlocksTotal = p.BlocksTotal, p.BlocksTotal
	})
}

// prepare runs verifying, checking and unpacking; each is idempotent, so a restart redoes the one
// it was in.
func (u *Updater) prepare(ctx context.Context, step string, t *Target) (time.Duration, error) {
	dl := u.downloadDir(t.Bundle)
	m, err := verifyDir(ctx, dl, t.Bundle, u.deps.Verifiers(), false)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			// The download vanished (cleaned up, disk replaced): fetch again.
			return 0, u.persist(func(x *State) { x.Step = StepDownloading })
		}
		reason, _ := reasonOf(err)
		os.RemoveAll(dl) // bad data must not be resumed from
		return u.fail(t, reason, err)
	}
	if step == StepVerifying {
		return 0, u.persist(func(x *State) { x.Step = StepChecking })
	}
	var content age.Identity
	if m.Encryption != nil {
		// Before the requirements and again before unpacking: the key is never stored, only
		// the wrapped form in the target.
		if content, err = u.contentKey(t, m); err != nil {
			return u.fail(t, ReasonNotRecipient, err)
		}
	}
	if step == StepChecking {
		if u.deps.InstallFault != nil && u.deps.InstallFault(m.Name, m.Version) == "fail" {
			return u.fail(t, ReasonRequirements, errors.New("simulated install failure (--fault install=fail)"))
		}
		if u.deps.Check != nil {
			if reason, msg := u.deps.Check(m); reason != "" {
				return u.fail(t, reason, errors.New(msg))
			}
		}
		return 0, u.persist(func(x *State) { x.Step = StepUnpacking })
	}
	// Unpacking into the inactive slot, which drops the standby bundle it held.
	st := u.State()
	slot := "a"
	if st.Active != nil {
		slot = other(st.Active.Name)
	}
	if st.Standby != nil && st.Standby.Name == slot {
		if err := u.persist(func(x *State) { x.Standby = nil }); err != nil {
			return 0, err
		}
	}
	if err := installSlot(dl, u.slotDir(slot), m, content); err != nil {
		return 0, fmt.Errorf("unpack into slot %s: %w", slot, err)
	}
	return 0, u.persist(func(x *State) { x.Step = StepLoading })
}

// targetSlot is where the target bundle sits: the standby slot for a rollback, else the
// inactive one.
func (u *Updater) targetSlot(t *Target) *Slot {
	st := u.State()
	if st.Standby != nil && st.Standby.Bundle == t.Bundle {
		return st.Standby
	}
	name := "a"
	if st.Active != nil {
		name = other(st.Active.Name)
	}
	return &Slot{Name: name, Bundle: t.Bundle, Version: t.Version}
}

// activate loads the target slot, runs the smoke test and switches. A restart in any of these
// steps redoes them from the load: the loaded session died with the process.
func (u *Updater) activate(ctx context.Context, t *Target) (time.Duration, error) {
	slot := u.targetSlot(t)
	if st := u.State(); st.Step != StepLoading || !st.WarmedUp.IsZero() {
		// A restart after loading redoes it, warm-up included: the session died with the process.
		if err := u.persist(func(x *State) { x.Step, x.WarmedUp = StepLoading, time.Time{} }); err != nil {
			return 0, err
		}
	}
	m, err := u.loadSlot(ctx, slot)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, u.persist(func(x *State) { x.Step = StepDownloading })
		}
		reason := ReasonLoad
		if r, _ := reasonOf(err); r == ReasonSignature || r == ReasonDigest {
			reason = r
		}
		return u.fail(t, reason, err)
	}
	if err := u.warmUp(ctx, u.slotDir(slot.Name), m); err != nil {
		m.Close()
		if ctx.Err() != nil {
			return 0, err
		}
		return u.fail(t, ReasonLoad, err)
	}
	if err := u.persist(func(x *State) { x.WarmedUp = time.Now().UTC() }); err != nil {
		m.Close()
		return 0, err
	}
	if err := u.persist(func(x *State) { x.Step = StepSmokeTest }); err != nil {
		m.Close()
		return 0, err
	}
	err = smokeTest(ctx, u.slotDir(slot.Name), m)
	if err == nil && u.deps.InstallFault != nil && u.deps.InstallFault(m.Name, m.Version) == "smoke-fail" {
		err = errors.New("simulated smoke test failure (--fault install=smoke-fail)")
	}
	if err != nil {
		m.Close()
		return u.fail(t, ReasonSmoke, err)
	}
	if err := u.persist(func(x *State) { x.Step = StepSwitching }); err != nil {
		m.Close()
		return 0, err
	}
	prev := u.State().Active
	u.serve(m)
	os.RemoveAll(u.downloadDir(t.Bundle))
	err = u.persist(func(x *State) {
		x.Standby = prev
		x.Active = &Slot{Name: slot.Name, Bundle: t.Bundle, Version: m.Version}
		x.Step = StepBaking
		x.BakeUntil = time.Now().Add(t.Bake).UTC()
		x.Reason, x.Message = "", ""
	})
	u.log.Info("switched to the new model; baking", "bundle", t.Bundle, "version", m.Version, "bake", t.Bake)
	return 0, err
}

// SmokeTimeout is the smoke test's deadline. It starts after the warm-up, so that it judges the
// model, not how long TensorRT takes to build an engine.
const SmokeTimeout = 2 * time.Minute

// WarmupTimeout bounds the warm-up inference: a TensorRT engine build of a large model on a
// Jetson can take many minutes.
const WarmupTimeout = 30 * time.Minute

func readGolden(dir string, m *infer.Model) (*golden.File, error) {
	gf := m.Manifest.FileByRole(bundle.RoleGolden)
	if gf == nil {
		return nil, errors.New("bundle has no golden cases to smoke-test with")
	}
	b, err := os.ReadFile(filepath.Join(dir, gf.Path))
	if err != nil {
		return nil, err
	}
	return golden.Parse(b)
}

func smokeTest(ctx context.Context, dir string, m *infer.Model) error {
	g, err := readGolden(dir, m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, SmokeTimeout)
	defer cancel()
	return g.SmokeTest(ctx, m.RunUnfaulted)
}

// warmUp runs every golden case's inputs once, outputs unchecked (that is the smoke test's
// job): the first run of each input shape is where TensorRT builds its engine (or loads it from
// the slot's cache) and where any provider allocates its buffers. A bundle without golden cases
// is left to the smoke test to refuse.
func (u *Updater) warmUp(ctx context.Context, dir string, m *infer.Model) error {
	g, err := readGolden(dir, m)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, WarmupTimeout)
	defer cancel()
	start := time.Now()
	for i, c := range g.Cases {
		var in []onnxrt.Tensor
		for _, t := range c.Inputs {
			rt, err := t.ToTensor()
			if err != nil {
				return fmt.Errorf("warm-up: golden case %d: %w", i, err)
			}
			in = append(in, rt)
		}
		if _, err := m.RunUnfaulted(ctx, in); err != nil {
			return fmt.Errorf("warm-up inference (golden case %d) on %s: %w", i, m.Provider(), err)
		}
	}
	u.log.Info("warm-up inference done", "bundle", m.Bundle, "version", m.Version, "provider", m.Provider(),
		"cases", len(g.Cases), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// bake watches the new model's error ratio until the bake window ends, then commits; too many
// errors switch back to the previous bundle.
func (u *Updater) bake(ctx context.Context, st State) (time.Duration, error) {
	u.mu.Lock()
	m := u.model
	u.mu.Unlock()
	if m != nil && st.Active != nil && m.Bundle == st.Active.Bundle {
		req, errs := m.Counts()
		if req >= u.deps.BakeMinRequests && float64(errs)/float64(req) > u.deps.BakeErrorMax {
			msg := fmt.Sprintf("%d of %d requests failed during bake (limit %.0f%%)", errs, req, 100*u.deps.BakeErrorMax)
			if err := u.persist(func(x *State) { x.Step, x.Reason, x.Message = StepReverting, ReasonBake, msg }); err != nil {
				return 0, err
			}
			return u.revert(ctx, msg)
		}
	}
	left := time.Until(st.BakeUntil)
	if left <= 0 {
		u.log.Info("bake passed; committed", "bundle", st.Active.Bundle)
		return 0, u.persist(func(x *State) { x.Step, x.Reason, x.Message = StepCommitted, "", "" })
	}
	return min(left, time.Second), nil
}

// revert switches back to the standby bundle and marks the target failed.
func (u *Updater) revert(ctx context.Context, why string) (time.Duration, error) {
	st := u.State()
	if st.Standby == nil {
		// Nothing to go back to: keep serving and say so.
		return idleWait, u.persist(func(x *State) {
			x.Step, x.Reason, x.Message = StepFailed, ReasonBake, why+"; no previous bundle to revert to"
			if x.Target != nil {
				x.FailedBundle, x.FailedGeneration = x.Target.Bundle, x.Target.Generation
			}
		})
	}
	m, err := u.loadSlot(ctx, st.Standby)
	if err != nil {
		return 0, fmt.Errorf("load previous bundle to revert: %w", err)
	}
	u.serve(m)
	bad := st.Active
	u.log.Warn("reverted to the previous model", "bad", bad.Bundle, "now", st.Standby.Bundle, "why", why)
	return idleWait, u.persist(func(x *State) {
		x.Active, x.Standby = st.Standby, bad
		x.Step, x.Reason, x.Message = StepReverted, ReasonBake, why
		if x.Target != nil {
			x.FailedBundle, x.FailedGeneration = x.Target.Bundle, x.Target.Generation
		}
	})
}
