package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/telemetry"
	"github.com/edgefleet/edgefleet/telemetry/budget"
)

// budgetFile holds the telemetry budget's spend and the summaries it is holding back.
const budgetFile = "telemetry-budget.json"

// openBudget loads the telemetry byte budget (Config.TelemetryBudget) and its saved state.
func (a *Agent) openBudget(now time.Time) error {
	if a.cfg.TelemetryBudget <= 0 {
		return nil
	}
	saved, err := os.ReadFile(filepath.Join(a.cfg.DataDir, budgetFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read telemetry budget state: %w", err)
	}
	b, err := budget.New(budget.Config{BytesPerDay: a.cfg.TelemetryBudget, Interval: a.cfg.TelemetryInterval, Overhead: a.telemetryOverhead(now)}, saved, now)
	if err != nil {
		return fmt.Errorf("%w (move %s away to start the budget afresh)", err, filepath.Join(a.cfg.DataDir, budgetFile))
	}
	a.budget = b
	return nil
}

// telemetryOverhead is what a telemetry message costs beyond its body: the envelope with a large
// sequence number, the longest kind's topic, and the MQTT fixed header, packet id and topic length.
func (a *Agent) telemetryOverhead(now time.Time) int {
	env, _ := json.Marshal(wire.Telemetry{Device: a.cfg.ID, Seq: 1 << 40, Session: 1 << 20, Kind: telemetry.KindInference, At: now.UTC(), Body: json.RawMessage("{}")})
	return len(env) - 2 + len(a.topics.Telemetry(a.cfg.ID, telemetry.KindInference)) + 2 + 2 + 5
}

// budgetedTelemetry passes one interval's summaries through the byte budget and spools what it
// releases. The budget's state (spend, held summaries) is written before the spool, so a crash in
// between loses at most that one release rather than sending it twice.
func (a *Agent) budgetedTelemetry(ctx context.Context, h telemetry.Health, windows []telemetry.InferenceWindow) {
	now := time.Now()
	msgs, d, err := a.budget.Tick(now, &h, windows)
	if err != nil {
		a.log.Error("telemetry budget", "err", err)
		return
	}
	if err := atomicfile.WriteFile(filepath.Join(a.cfg.DataDir, budgetFile), a.budget.State(), 0o600); err != nil {
		a.log.Warn("telemetry budget state not saved", "err", err)
	}
	level := -1 // held
	if d.Sent {
		level = d.Level
	}
	if level != a.budgetLevel {
		switch {
		case level == budget.LevelFull:
			a.log.Info("telemetry back within its byte budget at full detail", "bytes_per_day", a.cfg.TelemetryBudget)
		case level == -1 && a.budgetLevel == budget.LevelFull:
			a.log.Warn("telemetry over its byte budget: windows are lengthened (merged) before they are sent", "bytes_per_day", a.cfg.TelemetryBudget, "used_24h", a.budget.Used(now))
		case level == budget.LevelMoments:
			a.log.Warn("telemetry over its byte budget: drift histograms reduced to moments, counts kept", "bytes_per_day", a.cfg.TelemetryBudget, "used_24h", a.budget.Used(now))
		}
		a.budgetLevel = level
	}
	for _, m := range msgs {
		if err := a.spoolRaw(m.Kind, m.Body, now); err != nil && ctx.Err() == nil {
			a.log.Warn("telemetry not spooled", "kind", m.Kind, "err", err)
		}
	}
}
