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
		if json.Unmarshal(older.Body, &o) != nil || json.Unmarshal(newer.Body, &n) != nil {
			return spool.Entry{}, false
		}
		m, err := telemetry.MergeInference(o, n)
		if err != nil {
			return spool.Entry{}, false
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
	return a.spoolRaw(kind, raw, time.Now())
}

// spoolRaw appends an encoded telemetry body.
func (a *Agent) spoolRaw(kind string, raw []byte, now time.Time) error {
	now = now.UTC()
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
				c, session := a.current()
				if c == nil {
					return errors.New("not connected")
				}
				m := wire.Telemetry{Device: a.cfg.ID, Seq: e.LastSeq, Session: session, Kind: e.Kind, At: e.WindowEnd, Body: e.Body}
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
