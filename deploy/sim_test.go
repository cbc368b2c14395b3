package deploy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/deploy/stats"
)

// sim is a fake fleet and control plane for the engine's tests: it applies actions to simulated
// devices and produces observations drawn from seeded distributions. It is pure test logic.
type sim struct {
	rng  *rand.Rand
	devs map[string]*simDevice
	ids  []string
	now  time.Time

	newBundle string
	// Faults of the new bundle.
	installFail   float64 // probability an install fails
	latencyFactor float64 // new latency = old * factor
	errRateNew    float64
	outputShift   float64 // fraction of outputs moved to a different region
	// manualInstall leaves assigned devices pending until install() is called.
	manualInstall bool

	errRate   float64
	reqPerSec float64 // per device
	maxSample int     // per cohort (a reservoir in the real control plane)
	ref       []float64
	inputRef  []float64

	// Everything that was ever sent, for assertions.
	assigned map[string]int
	reverted map[string]string
	baseline map[string]string
}

type simDevice struct {
	info    DeviceInfo
	bundle  string
	install InstallState
	online  bool
	gone    time.Time // when it went offline; zero: unknown
	fails   bool
	at      time.Time
}

func newSim(seed uint64, groups, archs, perStratum int) *sim {
	s := &sim{
		rng: rand.New(rand.NewPCG(seed, 0x5eed)), devs: map[string]*simDevice{},
		now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), newBundle: "wake@1.1.0",
		latencyFactor: 1, errRate: 0.01, errRateNew: 0.01, reqPerSec: 2, maxSample: 2000,
		assigned: map[string]int{}, reverted: map[string]string{}, baseline: map[string]string{},
	}
	for g := range groups {
		for a := range archs {
			for k := range perStratum {
				id := fmt.Sprintf("dev-g%d-a%d-%03d", g, a, k)
				arch := []string{"arm64", "amd64", "riscv64"}[a%3]
				s.devs[id] = &simDevice{info: DeviceInfo{ID: id, Group: fmt.Sprintf("line-%d", g), Arch: arch, Online: true,
					Labels: map[string]string{"site": fmt.Sprintf("s%d", k%2)}, CurrentBundle: "wake@1.0.0"},
					bundle: "wake@1.0.0", online: true}
				s.ids = append(s.ids, id)
			}
		}
	}
	s.ref = make([]float64, 5000)
	for i := range s.ref {
		s.ref[i] = s.rng.NormFloat64()
	}
	s.inputRef = make([]float64, 5000)
	for i := range s.inputRef {
		s.inputRef[i] = s.rng.NormFloat64()
	}
	slices.Sort(s.ref)
	slices.Sort(s.inputRef)
	return s
}

func (s *sim) infos() []DeviceInfo {
	out := make([]DeviceInfo, 0, len(s.ids))
	for _, id := range s.ids {
		out = append(out, s.devs[id].info)
	}
	return out
}

func (s *sim) apply(acts []Action) {
	for _, a := range acts {
		switch a := a.(type) {
		case AssignDesired:
			s.assigned[a.Device]++
			d := s.devs[a.Device]
			d.fails = s.rng.Float64() < s.installFail
			d.install = InstallPending
			if !s.manualInstall {
				s.finish(d)
			}
		case RevertDesired:
			s.reverted[a.Device] = a.Bundle
			d := s.devs[a.Device]
			if d.online {
				d.bundle, d.install = a.Bundle, ""
			}
		case SetGroupBaseline:
			s.baseline[a.Group] = a.Bundle
		}
	}
}

func (s *sim) finish(d *simDevice) {
	if d.install != InstallPending && d.install != InstallDownloading {
		return
	}
	if d.fails {
		d.install = InstallFailed
		return
	}
	d.install, d.bundle, d.at = InstallInstalled, s.newBundle, s.now
}

// installAll completes every pending install (manualInstall mode).
func (s *sim) installAll() {
	for _, id := range s.ids {
		s.finish(s.devs[id])
	}
}

func (s *sim) latency(newBundle bool, arch string) float64 {
	v := 20 * math.Exp(0.5*s.rng.NormFloat64())
	if arch == "arm64" {
		v *= 1.2
	}
	if newBundle {
		v *= s.latencyFactor
	}
	return v
}

func (s *sim) output(newBundle bool) float64 {
	if newBundle && s.rng.Float64() < s.outputShift {
		return 4 + s.rng.NormFloat64()
	}
	return s.rng.NormFloat64()
}

func (s *sim) window(ids []string, newBundle bool, n int) Window {
	w := Window{}
	rate := s.errRate
	if newBundle {
		rate = s.errRateNew
	}
	for i := range n {
		w.Requests++
		if s.rng.Float64() < rate {
			w.Errors++
		}
		w.LatenciesMS = append(w.LatenciesMS, s.latency(newBundle, s.devs[ids[i%len(ids)]].info.Arch))
	}
	return w
}

func (s *sim) cohort(ids []string, newBundle bool, n int) Cohort {
	if len(ids) == 0 {
		return Cohort{}
	}
	c := Cohort{Devices: len(ids), Window: s.window(ids, newBundle, n)}
	outs := make([]float64, n)
	ins := make([]float64, n)
	for i := range n {
		outs[i] = s.output(newBundle)
		ins[i] = s.rng.NormFloat64()
		if s.rng.Float64() < 0.25 {
			c.Labeled++
			if s.rng.Float64() < 0.9 {
				c.Correct++
			}
		}
	}
	c.OutputShift = &Score{Value: stats.KSDistance(outs, s.ref), Samples: int64(n), RefSamples: int64(len(s.ref))}
	c.InputDrift = &Score{Value: stats.KSDistance(ins, s.inputRef), Samples: int64(n), RefSamples: int64(len(s.inputRef))}
	return c
}

func (s *sim) observe(r *Rollout) Observation {
	obs := Observation{Devices: map[string]DeviceState{}}
	for _, id := range s.ids {
		d := s.devs[id]
		obs.Devices[id] = DeviceState{Online: d.online, Bundle: d.bundle, Install: d.install, SwitchedAt: d.at}
		if !d.online {
			st := obs.Devices[id]
			st.OfflineSince = d.gone
			obs.Devices[id] = st
		}
	}
	q := r.Cohorts()
	if q.Since.IsZero() || len(q.Canary) == 0 || !s.lookDue(r) {
		return obs
	}
	secs := s.now.Sub(q.Since).Seconds()
	n := func(devs int) int { return min(s.maxSample, int(float64(devs)*s.reqPerSec*secs)) }
	obs.Metrics.Canary = s.cohort(q.Canary, true, n(len(q.Canary)))
	obs.Metrics.Baseline = s.cohort(q.Baseline, false, n(len(q.Baseline)))
	obs.Metrics.PerDevice = map[string]BeforeAfter{}
	per := max(1, n(len(q.Canary))/len(q.Canary))
	for _, id := range q.Canary {
		one := []string{id}
		obs.Metrics.PerDevice[id] = BeforeAfter{Before: s.window(one, false, per), After: s.window(one, true, per)}
	}
	return obs
}

// lookDue mirrors Step's schedule so the sim draws metrics only when a look will read them: the
// draws are what makes the measurements slow, and Step ignores metrics between looks.
func (s *sim) lookDue(r *Rollout) bool {
	if r.State != Running {
		return false
	}
	p := r.Stages[r.Stage]
	l := r.Spec.StageGates(r.Stage).limits()
	bake := r.Spec.Stages[r.Stage].Bake.D()
	for _, g := range modelGates {
		k := p.GateLooks[g]
		if k < l.evaluations && !s.now.Before(p.BakeStart.Add(bake*time.Duration(k+1)/time.Duration(l.evaluations))) {
			return true
		}
	}
	return false
}

// run drives a rollout with a ticker until it ends or limit passes.
func (s *sim) run(t testing.TB, r *Rollout, tick, limit time.Duration) {
	t.Helper()
	end := s.now.Add(limit)
	for ; s.now.Before(end); s.now = s.now.Add(tick) {
		switch r.State {
		case Completed, RolledBack, Aborted, Paused, WaitingApproval:
			return
		}
		acts, err := Step(s.now, r, s.observe(r))
		if err != nil {
			t.Fatal(err)
		}
		s.apply(acts)
	}
}

func fourStages(bake time.Duration) []Stage {
	return []Stage{
		{Devices: 2, Bake: Duration(bake)},
		{Percent: 10, Bake: Duration(bake)},
		{Percent: 50, Bake: Duration(bake)},
		{Percent: 100, Bake: Duration(bake)},
	}
}

func testSpec() Spec {
	return Spec{Bundle: "wake@1.1.0", Target: Target{Groups: []string{"line-0", "line-1", "line-2", "line-3"}},
		Stages: fourStages(2 * time.Minute), Seed: 7}
}

func lastDecision(r *Rollout) Decision { return r.Decisions[len(r.Decisions)-1] }

func findDecision(r *Rollout, action string) (Decision, bool) {
	for _, d := range r.Decisions {
		if d.Action == action {
			return d, true
		}
	}
	return Decision{}, false
}
