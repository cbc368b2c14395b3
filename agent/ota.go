package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"github.com/shirou/gopsutil/v3/mem"

	"github.com/edgefleet/edgefleet/agent/infer"
	"github.com/edgefleet/edgefleet/agent/runtimeup"
	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/internal/cli"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/desired"
	"github.com/edgefleet/edgefleet/ota/seal"
	"github.com/edgefleet/edgefleet/ota/sign"
	"github.com/edgefleet/edgefleet/ota/transfer"
	"github.com/edgefleet/edgefleet/ota/trust"
	"github.com/edgefleet/edgefleet/telemetry"
)

// maxOpsetByORT is the highest default-domain opset each ONNX Runtime minor release implements
// (from ONNX Runtime's release notes); newer releases are assumed to keep up.
var maxOpsetByORT = map[int]int{16: 18, 17: 20, 18: 21, 19: 21, 20: 21, 21: 22, 22: 22, 23: 23, 24: 23}

func maxOpset(ortVersion string) int {
	parts := strings.Split(ortVersion, ".")
	if len(parts) < 2 {
		return 0
	}
	minor, _ := strconv.Atoi(parts[1])
	best := 0
	for m, o := range maxOpsetByORT {
		if m <= minor && o > best {
			best = o
		}
	}
	return best
}

// otaState is the agent's side of delivery and serving.
type otaState struct {
	// desiredMu serialises desired-state handling: the retained copy and a live one can arrive
	// at once on separate goroutines.
	desiredMu sync.Mutex
	mu        sync.Mutex
	accepted  desired.Accepted
	refused   string // why the last desired state was refused
	updaters  map[string]*updater.Updater
	runtime   *runtimeup.Updater // the agent's own updates (runtime bundles)
	facts     *wire.RuntimeFacts
	ortErr    error

	server    *infer.Server
	fetcher   *updater.Fetcher
	carousels map[string]bool
	// trust holds the release and control keys: pinned by flag, or from root-signed trust
	// documents received on {p}/trust.
	trust     *trust.Store
	reportReq chan struct{}
	// identity is the device's age identity (DATA/age.key): encrypted bundles' keys are wrapped
	// to its recipient, which the device reports.
	identity *age.X25519Identity
}

const desiredFile = "desired.json"

// ageKeyFile holds the device's age identity (0600), made at first start.
const ageKeyFile = "age.key"

func (a *Agent) initOTA(ctx context.Context) error {
	infer.SetDefaults(a.cfg.Serving)
	o := &otaState{updaters: map[string]*updater.Updater{}, server: infer.NewServer(a.cfgVersion()), carousels: map[string]bool{}, reportReq: make(chan struct{}, 1)}
	a.ota = o
	ts, err := a.loadTrust(ctx)
	if err != nil {
		return err
	}
	o.trust = ts
	if len(ts.ReleaseVerifiers()) == 0 || len(ts.ControlVerifiers()) == 0 {
		a.log.Warn("no release or control key yet (--trust and --control-key, or --root and a trust document): every desired state and bundle is refused until then")
	}
	if b, err := os.ReadFile(filepath.Join(a.cfg.DataDir, desiredFile)); err == nil {
		if err := json.Unmarshal(b, &o.accepted); err != nil {
			return fmt.Errorf("accepted desired state %s is corrupt: %w", desiredFile, err)
		}
	}
	// ONNX Runtime: without it the agent still connects and reports why it cannot serve.
	rt := &wire.RuntimeFacts{ExecutionProviders: []string{onnxrt.ProviderCPU}}
	if err := onnxrt.Init(a.cfg.ORTLib); err != nil {
		o.ortErr = err
		rt.Error = err.Error()
		a.log.Error("ONNX Runtime not available: models cannot be installed or served", "err", err)
	} else {
		rt.ORTVersion = onnxrt.Version()
		rt.MaxOpset = maxOpset(rt.ORTVersion)
		// Probing GPU providers makes ONNX Runtime print errors when their libraries are absent;
		// only probe where there is a GPU or one was asked for.
		if len(onnxrt.DetectAccelerators()) > 0 || (a.cfg.EP != "" && a.cfg.EP != onnxrt.ProviderCPU) {
			if p := onnxrt.AvailableProviders(); len(p) > 0 {
				rt.ExecutionProviders = p
			}
		}
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		rt.FreeMemory = vm.Available
	}
	id, err := seal.LoadOrCreate(filepath.Join(a.cfg.DataDir, ageKeyFile), "")
	if err != nil {
		return fmt.Errorf("device encryption identity: %w", err)
	}
	o.identity = id
	rt.AgeRecipient = id.Recipient().String()
	o.facts = rt
	o.fetcher = &updater.Fetcher{
		Dir: filepath.Join(a.cfg.DataDir, "downloads"),
		Request: func(ctx context.Context, r transfer.Request) error {
			b, _ := json.Marshal(r)
			c, _ := a.current()
			if c == nil {
				return errors.New("not connected")
			}
			return waitToken(ctx, c.Publish(a.topics.BlocksReq(a.cfg.ID), 1, false, b))
		},
		Subscribe:    func(id string) error { return a.carousel(id, true) },
		Unsubscribe:  func(id string) error { return a.carousel(id, false) },
		StallTimeout: a.cfg.StallTimeout,
	}
	o.runtime, err = runtimeup.New(runtimeup.Deps{
		DataDir: a.cfg.DataDir, Fetcher: o.fetcher, Verifiers: a.verifiers, Report: a.requestReport,
		Restart: a.requestRestart, Version: cli.Version, Slot: a.cfg.LaunchSlot, CrashAt: a.cfg.CrashAt, Logger: a.log,
	})
	if err != nil {
		return err
	}
	// Models already installed: serve them before anything else.
	ents, _ := os.ReadDir(filepath.Join(a.cfg.DataDir, "models"))
	for _, e := range ents {
		if e.IsDir() {
			if _, err := a.updater(e.Name()); err != nil {
				return err
			}
		}
	}
	if o.ortErr == nil {
		for name, u := range o.updaters {
			if err := u.Boot(ctx); err != nil {
				a.log.Error("cannot serve installed model", "model", name, "err", err)
			}
		}
	}
	if o.accepted.State != nil {
		a.applyTargets(*o.accepted.State)
	}
	return nil
}

func (a *Agent) cfgVersion() string { return "edgefleet-agent" }

func (a *Agent) verifiers() []bundle.Verifier {
	rel := a.ota.trust.ReleaseVerifiers()
	out := make([]bundle.Verifier, 0, len(rel))
	for _, v := range rel {
		out = append(out, v)
	}
	return out
}

const trustFile = "trust.json"

// loadTrust builds the key store: keys pinned by flag, or a root (--root) whose signed trust
// documents arrive on {p}/trust; an accepted document is persisted and restored at start, so a
// rotation survives a restart.
func (a *Agent) loadTrust(ctx context.Context) (*trust.Store, error) {
	if a.cfg.Enrolled && a.cfg.Root == "" {
		b, err := os.ReadFile(filepath.Join(a.cfg.DataDir, trustFile))
		if err != nil {
			return nil, fmt.Errorf("enrolled device without its trust document (%w): move %s away and enroll again", err, CredentialsFile)
		}
		st, err := trust.Restore(ctx, b)
		if err != nil {
			return nil, fmt.Errorf("stored trust document does not verify (%w): move %s away and enroll again", err, CredentialsFile)
		}
		return st, nil
	}
	if a.cfg.Root == "" {
		var release, control []*sign.Verifier
		for _, p := range a.cfg.TrustKeys {
			v, err := sign.LoadVerifier(p)
			if err != nil {
				return nil, fmt.Errorf("--trust %s: %w", p, err)
			}
			release = append(release, v)
		}
		if a.cfg.ControlKey != "" {
			v, err := sign.LoadVerifier(a.cfg.ControlKey)
			if err != nil {
				return nil, fmt.Errorf("--control-key %s: %w", a.cfg.ControlKey, err)
			}
			control = append(control, v)
		}
		return trust.NewPinned(release, control), nil
	}
	if b, err := os.ReadFile(filepath.Join(a.cfg.DataDir, trustFile)); err == nil {
		st, err := trust.Restore(ctx, b)
		if err == nil {
			return st, nil
		}
		a.log.Error("stored trust document does not verify; starting from the root key", "err", err)
	}
	root, err := sign.LoadVerifier(a.cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("--root %s: %w", a.cfg.Root, err)
	}
	return trust.NewStore(root)
}

// handleTrust applies a trust document from {p}/trust.
func (a *Agent) handleTrust(ctx context.Context, payload []byte) {
	st := a.ota.trust
	if st.Pinned() || len(payload) == 0 {
		return
	}
	changed, err := st.Accept(ctx, payload)
	if err != nil {
		a.log.Warn("refused trust document", "err", err)
		return
	}
	if !changed {
		return
	}
	if err := atomicfile.WriteFile(filepath.Join(a.cfg.DataDir, trustFile), st.Envelope(), 0o600); err != nil {
		a.log.Error("cannot persist the trust document; it applies until restart", "err", err)
	}
	a.log.Info("trust document accepted", "version", st.Version(), "release_keys", len(st.ReleaseVerifiers()), "control_keys", len(st.ControlVerifiers()))
	a.requestReport()
}

// updater returns (creating) the updater of a model name.
func (a *Agent) updater(name string) (*updater.Updater, error) {
	o := a.ota
	o.mu.Lock()
	defer o.mu.Unlock()
	if u, ok := o.updaters[name]; ok {
		return u, nil
	}
	if err := bundle.CheckName(name); err != nil {
		return nil, fmt.Errorf("model name %q: %w", name, err)
	}
	u, err := updater.New(a.cfg.DataDir, name, updater.Deps{
		Fetcher:      o.fetcher,
		Verifiers:    a.verifiers,
		Server:       o.server,
		LoadOpts:     onnxrt.Options{IntraOpThreads: a.cfg.IntraOpThreads, ExecutionProvider: a.cfg.EP},
		Check:        a.checkRequirements,
		Report:       a.onInstallChange,
		Faults:       ErrorRate(a.cfg.Faults),
		InstallFault: InstallFault(a.cfg.Faults),
		OnLoad:       a.attachTelemetry,
		CrashAt:      a.cfg.CrashAt,
		Identity:     o.identity,
		Logger:       a.log,
	})
	if err != nil {
		return nil, err
	}
	o.updaters[name] = u
	if a.runCtx != nil {
		go u.Run(a.runCtx)
	}
	return u, nil
}

// checkRequirements: can this device run the bundle, with memory for a second session?
func (a *Agent) checkRequirements(m *bundle.Manifest) (string, string) {
	rt := a.ota.facts
	if m.Kind != bundle.KindModel {
		return updater.ReasonRequirements, fmt.Sprintf("bundle %s is a %s bundle; assign runtime bundles under the name %s", m.Ref(), m.Kind, bundle.RuntimeName)
	}
	if a.ota.ortErr != nil {
		return updater.ReasonRequirements, "ONNX Runtime is not available: " + a.ota.ortErr.Error()
	}
	req := m.Requirements
	if len(req.Arch) > 0 {
		ok := false
		for _, arch := range req.Arch {
			ok = ok || arch == runtime.GOARCH
		}
		if !ok {
			return updater.ReasonRequirements, fmt.Sprintf("bundle needs arch %v, this device is %s", req.Arch, runtime.GOARCH)
		}
	}
	if req.MinORTVersion != "" && versionLess(rt.ORTVersion, req.MinORTVersion) {
		return updater.ReasonRequirements, fmt.Sprintf("bundle needs ONNX Runtime >= %s, this device has %s", req.MinORTVersion, rt.ORTVersion)
	}
	if req.MinOpset > 0 && rt.MaxOpset > 0 && req.MinOpset > int64(rt.MaxOpset) {
		return updater.ReasonRequirements, fmt.Sprintf("bundle needs opset %d, ONNX Runtime %s implements up to %d", req.MinOpset, rt.ORTVersion, rt.MaxOpset)
	}
	if req.PeakMemoryBytes > 0 {
		if vm, err := mem.VirtualMemory(); err == nil && vm.Available < uint64(req.PeakMemoryBytes)+a.cfg.MemoryReserve {
			return updater.ReasonMemory, fmt.Sprintf("a second session needs %d MiB, %d MiB available (reserve %d MiB): refusing rather than swapping", req.PeakMemoryBytes>>20, vm.Available>>20, a.cfg.MemoryReserve>>20)
		}
	}
	return "", ""
}

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

// handleDesired checks a desired state and, when new, persists it and hands each model its target.
func (a *Agent) handleDesired(ctx context.Context, payload []byte) {
	o := a.ota
	if len(payload) == 0 {
		return
	}
	o.desiredMu.Lock()
	defer o.desiredMu.Unlock()
	o.mu.Lock()
	prev := o.accepted
	o.mu.Unlock()
	st, verdict, err := desired.Check(ctx, a.cfg.ID, payload, prev, time.Now(), o.trust.ControlVerifiers())
	if errors.Is(err, desired.ErrReplay) && len(payload) > 0 && prev.State != nil {
		// The broker's retained copy of an older generation can arrive after a newer one (both in
		// flight at a reconnect); only the control plane may publish there, so this is stale, not
		// an attack. It is still refused, just not reported as a problem.
		a.log.Debug("ignored an older desired state", "err", err)
		return
	}
	if err != nil {
		a.log.Warn("refused desired state", "err", err)
		o.mu.Lock()
		o.refused = err.Error()
		o.mu.Unlock()
		a.requestReport()
		return
	}
	if verdict == desired.Same {
		return
	}
	acc := desired.Accept(prev, st, payload)
	b, _ := json.Marshal(acc)
	if err := atomicfile.WriteFile(filepath.Join(a.cfg.DataDir, desiredFile), b, 0o600); err != nil {
		a.log.Error("cannot persist the desired state; it will be applied when it arrives again", "err", err)
		return
	}
	o.mu.Lock()
	o.accepted, o.refused = acc, ""
	o.mu.Unlock()
	a.log.Info("desired state accepted", "generation", st.Generation, "models", len(st.Models))
	a.applyTargets(st)
	a.requestReport()
}

func (a *Agent) applyTargets(st desired.State) {
	o := a.ota
	var rtTarget *updater.Target
	for name, m := range st.Models {
		if name == bundle.RuntimeName {
			rtTarget = &updater.Target{Bundle: m.Bundle, Version: m.Version, Generation: st.Generation, Rollout: m.Rollout, Bake: time.Duration(m.Bake), Carousel: m.Carousel}
			continue
		}
		u, err := a.updater(name)
		if err != nil {
			a.log.Warn("cannot manage model", "model", name, "err", err)
			continue
		}
		u.SetTarget(&updater.Target{Bundle: m.Bundle, Version: m.Version, Generation: st.Generation, Rollout: m.Rollout, Bake: time.Duration(m.Bake), Carousel: m.Carousel,
			Key: m.Key, Recipient: m.Recipient})
	}
	o.mu.Lock()
	var gone []*updater.Updater
	for name, u := range o.updaters {
		if _, ok := st.Models[name]; !ok {
			gone = append(gone, u)
		}
	}
	o.mu.Unlock()
	for _, u := range gone {
		u.SetTarget(nil) // keeps serving what it has; nothing new is installed
	}
	o.runtime.SetTarget(rtTarget)
}

// onInstallChange reports every persisted lifecycle change: reported state, and an install event.
func (a *Agent) onInstallChange(st updater.State) {
	a.requestReport()
	ev := map[string]any{"model": st.Model, "step": st.Step, "reason": st.Reason, "message": st.Message, "attempt": st.Attempt}
	if st.Target != nil {
		ev["bundle"], ev["version"], ev["rollout"] = st.Target.Bundle, st.Target.Version, st.Target.Rollout
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.SendTelemetry(ctx, telemetry.KindInstall, ev); err != nil {
			a.log.Debug("install event not sent", "err", err)
		}
	}()
}

func (a *Agent) requestReport() {
	select {
	case a.ota.reportReq <- struct{}{}:
	default:
	}
}

// modelReports builds the models section of reported.
func (a *Agent) modelReports() (map[string]wire.ModelReport, uint64, string) {
	o := a.ota
	o.mu.Lock()
	us := make(map[string]*updater.Updater, len(o.updaters))
	for k, v := range o.updaters {
		us[k] = v
	}
	gen, refused := o.accepted.Generation, o.refused
	o.mu.Unlock()
	out := map[string]wire.ModelReport{}
	for name, u := range us {
		st := u.State()
		r := wire.ModelReport{State: st.Step, Reason: st.Reason, Message: st.Message}
		if st.Active != nil {
			r.Active, r.Version, r.Slot = st.Active.Bundle, st.Active.Version, st.Active.Name
		}
		if st.Standby != nil {
			r.Previous = st.Standby.Bundle
		}
		if st.Target != nil {
			r.Target, r.Rollout = st.Target.Bundle, st.Target.Rollout
		}
		if st.BlocksTotal > 0 && st.Step == updater.StepDownloading {
			r.Progress = fmt.Sprintf("%d/%d blocks", st.BlocksHave, st.BlocksTotal)
		}
		if m, ok := o.server.Get(name); ok {
			r.Provider = m.Provider()
		}
		out[name] = r
	}
	if r, ok := o.runtime.Report(); ok {
		out[bundle.RuntimeName] = r
	}
	return out, gen, refused
}

// carousel subscribes to or leaves a bundle's carousel topic.
func (a *Agent) carousel(id string, on bool) error {
	a.ota.mu.Lock()
	if on {
		a.ota.carousels[id] = true
	} else {
		delete(a.ota.carousels, id)
	}
	a.ota.mu.Unlock()
	c, _ := a.current()
	if c == nil {
		return nil // subscribed on the next connection
	}
	topic := a.topics.Carousel(id)
	if on {
		return waitToken(context.Background(), c.Subscribe(topic, 0, func(_ pahoClient, m pahoMessage) { a.ota.fetcher.OnFrame(m.Payload()) }))
	}
	return waitToken(context.Background(), c.Unsubscribe(topic))
}

// servedBundles is the set of bundle ids being served now.
func (a *Agent) servedBundles() map[string]bool {
	out := map[string]bool{}
	for _, name := range a.ota.server.Names() {
		if m, ok := a.ota.server.Get(name); ok {
			out[m.Bundle] = true
		}
	}
	return out
}

// ServedModel describes a model being served.
type ServedModel struct {
	Name, Version, Bundle string
	Schema                onnxrt.Schema
}

// Served lists the models being served now.
func (a *Agent) Served() []ServedModel {
	var out []ServedModel
	for _, name := range a.ota.server.Names() {
		if m, ok := a.ota.server.Get(name); ok {
			out = append(out, ServedModel{Name: m.Name, Version: m.Version, Bundle: m.Bundle, Schema: m.Schema()})
		}
	}
	return out
}

// Infer runs one inference in process, through the same path (and telemetry) as the local API.
func (a *Agent) Infer(ctx context.Context, model string, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	out, _, err := a.ota.server.Infer(ctx, model, in)
	return out, err
}

// attachTelemetry makes every call of a loaded model feed its telemetry window.
func (a *Agent) attachTelemetry(m *infer.Model, dir string) {
	c := a.infTel.collector(m.Name, m.Version, m.Bundle, dir, m.Manifest)
	slow := LatencyFactor(a.cfg.Faults)(m.Name, m.Version)
	m.Observer = func(d time.Duration, err error, in, out []onnxrt.Tensor) {
		if slow > 1 {
			// Simulated slowness is reported, not slept: a fleet of simulated devices stays cheap.
			d = time.Duration(float64(d) * slow)
		}
		a.infTel.observe(c, m.Name, m.Version, d, err, in, out)
	}
	m.LabelObserver = c.ObserveLabel
}
