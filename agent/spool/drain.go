package spool

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Clock is what a Drainer needs of time; tests pass a fake one so a rate is counted in ticks, not
// measured on a wall clock.
type Clock interface {
	Now() time.Time
	NewTicker(d time.Duration) Ticker
}

// Ticker is the part of *time.Ticker a Drainer uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// SystemClock is the real clock.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
func (systemClock) NewTicker(d time.Duration) Ticker {
	return realTicker{time.NewTicker(d)}
}

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

// Drainer sends a spool's entries in order at a bounded rate, for as long as one connection
// lasts. It does not trim: the spool is trimmed only by acks, which the caller feeds to
// Spool.Ack as the control plane sends them.
type Drainer struct {
	Spool *Spool
	// Send publishes one entry (with its Seqs and the spool's DroppedRanges, as the wire format
	// says). An error means the connection is lost: Run returns it.
	Send func(ctx context.Context, e Entry) error
	// Rate is the most entries sent per second; a reconnecting fleet must not flood the broker
	// with its backlog (DESIGN.md: brokers drop under overload).
	Rate float64
	// ResendAfter: when entries have been sent and the ack has not moved for this long, start
	// again from the first unacknowledged entry, since the control plane is waiting on a gap.
	// 0: never (only a new Run resends).
	ResendAfter time.Duration
	// Clock; nil: SystemClock().
	Clock Clock
	// IdleWait: with nothing to send and nothing awaiting an ack, sleep until the next Append
	// instead of waking at Rate to find nothing (the agent sets it; a simulator runs thousands
	// of drainers in one process).
	IdleWait bool
}

// Run sends from the first unacknowledged entry, one per tick of 1/Rate, until ctx ends (the
// connection is lost or the agent stops; it returns ctx's error) or Send fails (it returns that
// error). Call it again on the next connection: it resumes from the first unacknowledged entry.
func (d *Drainer) Run(ctx context.Context) error {
	if d.Rate <= 0 || d.Spool == nil || d.Send == nil {
		return errors.New("drainer: Spool, Send and a positive Rate are required")
	}
	clock := d.Clock
	if clock == nil {
		clock = SystemClock()
	}
	// cursor is the FirstSeq of the last entry sent; 0 is "before the first unacknowledged".
	var cursor uint64
	gen, ack := d.Spool.generation()
	progress := clock.Now()
	t := clock.NewTicker(time.Duration(float64(time.Second) / d.Rate))
	defer t.Stop()
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now = <-t.C(): // the tick's own time, so a fake clock is exact
		}
		g, a := d.Spool.generation()
		if a != ack {
			ack, progress = a, now
		}
		switch {
		case g != gen:
			// A merge can put a new entry behind the cursor (it takes its oldest part's key),
			// and a drop can remove one: resend from the head, duplicates are ignored upstream.
			gen, cursor = g, 0
		case cursor > ack && d.ResendAfter > 0 && now.Sub(progress) >= d.ResendAfter:
			cursor, progress = 0, now
		}
		es, err := d.Spool.Pending(cursor, 1)
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		if len(es) == 0 {
			if d.IdleWait && (cursor <= ack || d.ResendAfter == 0) {
				// Nothing to send and nothing awaiting an ack: sleep until an Append rather than
				// wake at the rate for nothing (ten thousand simulated devices in one process
				// spent most of their CPU here). The next send still waits for a tick.
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-d.Spool.Appended():
				}
			}
			continue
		}
		if err := d.Send(ctx, es[0]); err != nil {
			return fmt.Errorf("drain: send seq %d: %w", es[0].FirstSeq, err)
		}
		cursor = es[0].FirstSeq
	}
}
