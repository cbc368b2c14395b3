// Package sim runs a fleet of simulated devices in one process (`agent simulate`): each is a real
// agent — its own identity, MQTT session, sequence numbers, desired-state checks, verified
// downloads and install lifecycle, telemetry — with inference traffic generated in process
// against its served models, and faults keyed by bundle version, fraction and group.
package sim

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/infer"
	"github.com/edgefleet/edgefleet/internal/mqttc"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// Group is a share of the fleet.
type Group struct {
	Name   string
	Weight float64
}

// ParseGroups parses "g1=60%,g2=40%" (or weights without %).
func ParseGroups(s string) ([]Group, error) {
	var out []Group
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, w, ok := strings.Cut(part, "=")
		if !ok {
			out = append(out, Group{Name: part, Weight: 1})
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(w, "%"), 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("--groups %q: weight of %s must be a positive number", s, name)
		}
		out = append(out, Group{Name: name, Weight: v})
	}
	if len(out) == 0 {
		out = []Group{{Name: "default", Weight: 1}}
	}
	return out, nil
}

// Config of a simulation.
type Config struct {
	Count int
	// First is the number of the first device (0: 1), so that several simulator processes can
	// share a fleet: one process holds a socket and a spool file per device, and a process's
	// open-file limit (often 20,000) caps it below ten thousand devices.
	First             int
	Broker            mqttc.Config
	DataDir           string
	Groups            []Group
	TrustKeys         []string
	ControlKey        string
	Root              string
	Prefix            string
	Faults            []agent.Fault
	TelemetryInterval time.Duration
	// RequestsPerSecond is each device's inference rate (0: 2).
	RequestsPerSecond float64
	// Seed makes fault and group assignment reproducible.
	Seed uint64
	// TelemetryBudget is each device's telemetry bytes per day (0: no limit).
	TelemetryBudget int64
	Logger          *slog.Logger
}

// ID is the id of simulated device i (1-based).
func ID(i int) string { return fmt.Sprintf("sim-%05d", i) }

func unit(seed uint64, id, salt string) float64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s/%s", seed, id, salt)
	return float64(h.Sum64()%1_000_000) / 1_000_000
}

// groupOf spreads devices over groups by weight, deterministically.
func groupOf(groups []Group, i, n int) string {
	total := 0.0
	for _, g := range groups {
		total += g.Weight
	}
	pos := (float64(i) + 0.5) / float64(n) * total
	for _, g := range groups {
		if pos < g.Weight {
			return g.Name
		}
		pos -= g.Weight
	}
	return groups[len(groups)-1].Name
}

// faultsFor picks the faults that apply to one device (fraction= and group= narrow them).
func faultsFor(cfg Config, id, group string) (faults []agent.Fault, offline bool) {
	for k, f := range cfg.Faults {
		if f.Group != "" && f.Group != group {
			continue
		}
		if unit(cfg.Seed, id, "fault"+strconv.Itoa(k)) >= f.Fraction {
			continue
		}
		if f.Offline > 0 {
			if unit(cfg.Seed, id, "offline"+strconv.Itoa(k)) < f.Offline {
				offline = true
			}
			continue
		}
		faults = append(faults, f)
	}
	return faults, offline
}

// Run starts the fleet and its traffic until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Count <= 0 {
		return fmt.Errorf("--count must be at least 1")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RequestsPerSecond <= 0 {
		cfg.RequestsPerSecond = 2
	}
	if len(cfg.Groups) == 0 {
		cfg.Groups = []Group{{Name: "default", Weight: 1}}
	}
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Count)
	// One ONNX Runtime session per bundle for the whole simulated fleet (each device still loads,
	// smoke-tests, serves and releases it through its own lifecycle), and one traffic scheduler:
	// per-device sessions and tickers are what kept a simulator to about a thousand devices.
	sessions := newSessionCache()
	// Small fleets keep a session per device: devices sharing one session measure each other's
	// runs (10 baseline devices on one session ran at twice the latency of 2 canaries on another,
	// which hid a simulated 3x slowdown from the latency gate), and the memory a session per
	// device costs only matters from a few hundred devices on.
	var open infer.SessionOpener
	if cfg.Count >= sharedSessionsFrom {
		open = sessions.open
	}
	tr := newTraffic(cfg.RequestsPerSecond, cfg.Seed)
	wg.Add(1)
	go func() { defer wg.Done(); tr.run(ctx) }()
	first := max(cfg.First, 1)
	for i := 1; i <= cfg.Count; i++ {
		id := ID(first + i - 1)
		group := groupOf(cfg.Groups, i-1, cfg.Count)
		faults, offline := faultsFor(cfg, id, group)
		a, err := agent.New(agent.Config{
			ID: id, Broker: cfg.Broker, DataDir: filepath.Join(cfg.DataDir, id), Group: group,
			Labels: map[string]string{"simulated": "true"}, Prefix: cfg.Prefix, TelemetryInterval: cfg.TelemetryInterval,
			Logger: cfg.Logger, TrustKeys: cfg.TrustKeys, ControlKey: cfg.ControlKey, Root: cfg.Root, Faults: faults,
			StallTimeout: 60 * time.Second, SpoolNoSync: true, DrainRate: 50, TelemetryBudget: cfg.TelemetryBudget,
			IntraOpThreads: 1, Serving: infer.LoadOptions{Concurrency: 1, Open: open},
		})
		if err != nil {
			return fmt.Errorf("device %s: %w", id, err)
		}
		dctx, cancel := context.WithCancel(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			if err := a.Run(dctx); err != nil {
				errs <- fmt.Errorf("device %s: %w", id, err)
			}
		}()
		tr.add(dctx, a)
		if offline {
			// Goes offline after it registered: gone mid-rollout, as devices on flaky links do.
			stop := context.AfterFunc(dctx, func() {})
			time.AfterFunc(3*cfg.TelemetryInterval, func() {
				if stop() {
					cfg.Logger.Info("simulated device going offline", "device", id)
					cancel()
				}
			})
		}
		// Stagger connections (500 a second) so a large fleet does not connect in one burst.
		if i%50 == 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	cfg.Logger.Info("simulated fleet started", "devices", cfg.Count, "groups", len(cfg.Groups))
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	return nil
}

// traffic calls every served model of every device at the given rate per device, with inputs
// drawn from one generated pool per bundle, from a single goroutine: devices are visited round
// robin in small steps, so the calls spread evenly over each interval.
type traffic struct {
	rate float64
	seed uint64
	rng  *rand.Rand

	mu      sync.Mutex
	devices []*simDevice
	inputs  map[string][][]onnxrt.Tensor // bundle -> input sets, shared by all devices
}

type simDevice struct {
	ctx context.Context
	a   *agent.Agent
}

func newTraffic(rate float64, seed uint64) *traffic {
	return &traffic{rate: rate, seed: seed, rng: rand.New(rand.NewPCG(seed, 7)), inputs: map[string][][]onnxrt.Tensor{}}
}

func (t *traffic) add(ctx context.Context, a *agent.Agent) {
	t.mu.Lock()
	t.devices = append(t.devices, &simDevice{ctx: ctx, a: a})
	t.mu.Unlock()
}

const trafficStep = 20 * time.Millisecond

func (t *traffic) run(ctx context.Context) {
	tick := time.NewTicker(trafficStep)
	defer tick.Stop()
	next, due := 0, 0.0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.mu.Lock()
		devs := t.devices
		t.mu.Unlock()
		if len(devs) == 0 {
			continue
		}
		// Each device is due rate times a second: this step's share of the fleet, carried over in
		// fractions so that small fleets and low rates come out right too.
		due += float64(len(devs)) * t.rate * trafficStep.Seconds()
		for ; due >= 1; due-- {
			d := devs[next%len(devs)]
			next++
			t.call(ctx, d)
		}
	}
}

func (t *traffic) call(ctx context.Context, d *simDevice) {
	if d.ctx.Err() != nil {
		return
	}
	select {
	case <-d.a.Ready:
	default:
		return
	}
	models := d.a.Served()
	sort.Slice(models, func(i, j int) bool { return models[i].Name < models[j].Name })
	for _, m := range models {
		sets, ok := t.inputs[m.Bundle]
		if !ok {
			// A large pool from the reference generator's distribution, so live feature histograms
			// are not a handful of repeated points.
			gen, err := onnxrt.GenerateInputs(m.Schema, 256, t.seed, nil)
			if err != nil {
				continue
			}
			t.inputs[m.Bundle], sets = gen, gen
		}
		d.a.Infer(ctx, m.Name, sets[t.rng.IntN(len(sets))])
	}
}

// sessionCache shares ONNX Runtime sessions among simulated devices: one per bundle id, session
// index and options, opened by the first device that loads the bundle and closed when the last
// one releases it (ORT sessions take concurrent runs).
type sessionCache struct {
	mu sync.Mutex
	m  map[sessionKey]*sharedSession
}

type sessionKey struct {
	id    string
	index int
	opts  onnxrt.Options
}

type sharedSession struct {
	sess *onnxrt.Session
	refs int
}

// sharedSessionsFrom is the fleet size from which simulated devices share sessions per bundle.
const sharedSessionsFrom = 200

func newSessionCache() *sessionCache { return &sessionCache{m: map[sessionKey]*sharedSession{}} }

func (c *sessionCache) open(id string, index int, model []byte, opts onnxrt.Options) (*onnxrt.Session, func(), error) {
	k := sessionKey{id, index, opts}
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[k]
	if !ok {
		sess, err := onnxrt.NewSession(model, opts)
		if err != nil {
			return nil, nil, err
		}
		s = &sharedSession{sess: sess}
		c.m[k] = s
	}
	s.refs++
	var once sync.Once
	return s.sess, func() { once.Do(func() { c.release(k, s) }) }, nil
}

func (c *sessionCache) release(k sessionKey, s *sharedSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.refs--; s.refs == 0 {
		delete(c.m, k)
		s.sess.Close()
	}
}
