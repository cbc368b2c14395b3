package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/agent/spool"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/telemetry"
	"github.com/edgefleet/edgefleet/telemetry/drift"
)

// openSpool opens the telemetry spool: every message gets its sequence number there and stays on
// disk until the control plane acknowledges it.
func (a *Agent) openSpool() error {
	sp, err := spool.Open(filepath.Join(a.cfg.DataDir, "spool"), spool.Options{
		MaxBytes: a.cfg.SpoolMaxBytes, MaxAge: a.cfg.SpoolMaxAge, Merge: mergeTelemetry,
		Quarantine: true, NoSync: a.cfg.SpoolNoSync, Logger: a.log,
	})
	if err != nil {
		return fmt.Errorf("open telemetry spool: %w", err)
	}
	a.spool = sp
	return nil
}

// mergeTelemetry folds two windows of one kind when the spool is full or old: health keeps the
// newer sample; inference windows of the same model version add up (counts, latency histograms,
// drift histograms); anything else is not merged (and may be dropped, counted).
func mergeTelemetry(older, newer spool.Entry) (spool.Entry, bool) {
	switch older.Kind {
	case telemetry.KindHealth:
		return newer, true
	case telemetry.KindInference:
		var o, n telemetry.InferenceWindow
		if json.Unmarshal(older.Body, &o) != nil || json.Unmarshal(newer.Body, &n) != nil || o.Bundle != n.Bundle || o.Model != n.Model {
			return spool.Entry{}, false
		}
		m := n
		m.Start = o.Start
		m.Requests += o.Requests
		m.Errors += o.Errors
		if len(o.ErrorsByReason) > 0 {
			m.ErrorsByReason = map[string]uint64{}
			for k, v := range o.ErrorsByReason {
				m.ErrorsByReason[k] += v
			}
			for k, v := range n.ErrorsByReason {
				m.ErrorsByReason[k] += v
			}
		}
		if o.Latency.Count > 0 {
			if n.Latency.Count == 0 {
				m.Latency = o.Latency
			} else if l, err := o.Latency.Merge(n.Latency); err == nil {
				m.Latency = l
			} else {
				return spool.Entry{}, false
			}
		}
		if o.Drift != nil && n.Drift != nil {
			d, err := drift.Merge(*o.Drift, *n.Drift)
			if err != nil {
				return spool.Entry{}, false
			}
			m.Drift = &d
		}
		b, err := json.Marshal(m)
		if err != nil {
			return spool.Entry{}, false
		}
		newer.Body = b
		return newer, true
	}
	return spool.Entry{}, false
}

// SendTelemetry puts one telemetry message in the spool; the drainer sends it (again, until it is
// acknowledged).
func (a *Agent) SendTelemetry(ctx context.Context, kind string, body any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode %s telemetry: %w", kind, err)
	}
	now := time.Now().UTC()
	if _, err := a.spool.Append(kind, raw, now, now); err != nil {
		return fmt.Errorf("spool %s telemetry: %w", kind, err)
	}
	return nil
}

// drainLoop sends the spool's backlog in order at a bounded rate whenever the device is connected.
func (a *Agent) drainLoop(ctx context.Context) {
	for ctx.Err() == nil {
		c, _ := a.current()
		if c == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		d := spool.Drainer{Spool: a.spool, Rate: a.cfg.DrainRate, ResendAfter: 10 * time.Second, IdleWait: true,
			Send: func(ctx context.Context, e spool.Entry) error {
				c, _ := a.current()
				if c == nil {
					return errors.New("not connected")
				}
				m := wire.Telemetry{Device: a.cfg.ID, Seq: e.LastSeq, Kind: e.Kind, At: e.WindowEnd, Body: e.Body}
				if e.Merged() {
					for _, r := range e.Seqs {
						m.Covers = append(m.Covers, [2]uint64{r.First, r.Last})
					}
				}
				for _, r := range a.spool.DroppedRanges() {
					m.Dropped = append(m.Dropped, [2]uint64{r.First, r.Last})
				}
				b, err := json.Marshal(m)
				if err != nil {
					return err
				}
				return waitToken(ctx, c.Publish(a.topics.Telemetry(a.cfg.ID, e.Kind), 1, false, b))
			}}
		if err := d.Run(ctx); err != nil && ctx.Err() == nil {
			a.log.Debug("telemetry drain paused", "err", err)
		}
	}
}

// handleAck trims the spool up to what the control plane committed.
func (a *Agent) handleAck(payload []byte) {
	var ack wire.Ack
	if json.Unmarshal(payload, &ack) != nil || ack.Seq == 0 {
		return
	}
	if err := a.spool.Ack(ack.Seq); err != nil {
		a.log.Warn("spool ack failed", "seq", ack.Seq, "err", err)
	}
}
