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
	Count             int
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
	for i := 1; i <= cfg.Count; i++ {
		id := ID(i)
		group := groupOf(cfg.Groups, i-1, cfg.Count)
		faults, offline := faultsFor(cfg, id, group)
		a, err := agent.New(agent.Config{
			ID: id, Broker: cfg.Broker, DataDir: filepath.Join(cfg.DataDir, id), Group: group,
			Labels: map[string]string{"simulated": "true"}, Prefix: cfg.Prefix, TelemetryInterval: cfg.TelemetryInterval,
			Logger: cfg.Logger, TrustKeys: cfg.TrustKeys, ControlKey: cfg.ControlKey, Root: cfg.Root, Faults: faults,
			StallTimeout: 60 * time.Second, SpoolNoSync: true, DrainRate: 50, TelemetryBudget: cfg.TelemetryBudget,
		})
		if err != nil {
			return fmt.Errorf("device %s: %w", id, err)
		}
		dctx, cancel := context.WithCancel(ctx)
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := a.Run(dctx); err != nil {
				errs <- fmt.Errorf("device %s: %w", id, err)
			}
		}()
		go func() {
			defer wg.Done()
			defer cancel()
			traffic(dctx, a, cfg.RequestsPerSecond, cfg.Seed+uint64(i))
		}()
		if offline {
			// Goes offline after it registered: gone mid-rollout, as devices on flaky links do.
			go func() {
				select {
				case <-time.After(3 * cfg.TelemetryInterval):
					cfg.Logger.Info("simulated device going offline", "device", id)
					cancel()
				case <-dctx.Done():
				}
			}()
		}
		// Stagger connections a little so a large fleet does not connect in one burst.
		if i%50 == 0 {
			time.Sleep(20 * time.Millisecond)
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

// traffic calls every served model at the given rate with generated inputs.
func traffic(ctx context.Context, a *agent.Agent, rate float64, seed uint64) {
	select {
	case <-a.Ready:
	case <-ctx.Done():
		return
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	inputs := map[string][][]onnxrt.Tensor{} // bundle -> input sets
	interval := time.Duration(float64(time.Second) / rate)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		models := a.Served()
		sort.Slice(models, func(i, j int) bool { return models[i].Name < models[j].Name })
		for _, m := range models {
			sets, ok := inputs[m.Bundle]
			if !ok {
				// A large pool from the reference generator's distribution, so live feature histograms
				// are not a handful of repeated points.
				gen, err := onnxrt.GenerateInputs(m.Schema, 256, seed, nil)
				if err != nil {
					continue
				}
				inputs[m.Bundle], sets = gen, gen
			}
			a.Infer(ctx, m.Name, sets[rng.IntN(len(sets))])
		}
	}
}
