// Package budget keeps a device's telemetry within a byte budget per rolling day. Every telemetry
// interval the agent hands it the interval's health sample and inference windows; it answers with
// the messages to spool now, or none, holding the summaries back to merge them with later ones.
//
// When the budget cannot carry every window at full detail, detail goes in this order:
//
//  1. Windows get longer: consecutive intervals are merged before they are sent (health keeps the
//     newest sample; inference windows of a model version add their counts, errors, labels,
//     latency and drift histograms exactly), up to MaxStretch intervals per message.
//  2. Past MaxStretch, inference windows go without their drift histograms: each feature keeps its
//     count, missing count, mean, variance and range (telemetry.DriftMoments).
//  3. If even that does not fit, windows keep growing until it does.
//
// Request, error and label counts are never dropped, only delivered later in a coarser window.
// Bytes are counted per message as its MQTT payload plus Config.Overhead (topic and fixed
// header), once, when the message is handed to the spool; re-sends of unacknowledged messages are
// the delivery protocol's cost and are not counted. Two limits apply together: a token bucket
// filled at BytesPerDay/86400 per second and holding at most an hour's worth paces messages
// through the day, and a hard limit keeps the bytes of the last 24 hours (counted in hourly
// buckets, so conservatively) at or under BytesPerDay.
package budget

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/edgefleet/edgefleet/telemetry"
)

// Levels of detail of an emitted message (telemetry.BudgetReport.Level).
const (
	LevelFull      = 0 // one interval, full detail
	LevelStretched = 1 // several intervals merged, full detail
	LevelMoments   = 2 // drift histograms reduced to moments
)

// buckets is how many hourly sums are kept: the current, partial hour and the 24 before it, so
// their sum is at least the bytes of any last 24 hours.
const buckets = 25

// Config of a budget.
type Config struct {
	BytesPerDay int64
	// Interval is the telemetry interval (one Tick each).
	Interval time.Duration
	// Overhead is added to every message's payload: topic, MQTT fixed header, packet id.
	Overhead int
	// MaxStretch is how many intervals a window may span before drift histograms are reduced to
	// moments (0: as many as make an hour, at least 2).
	MaxStretch int
}

// Message is one telemetry message to spool.
type Message struct {
	Kind string
	Body []byte
}

// Decision says what one Tick did, for the caller's log.
type Decision struct {
	Sent  bool // messages were released (else everything is held)
	Level int  // of the released messages
	Bytes int  // counted for them
}

// state is everything that must survive a restart: the spend, and the summaries held back (their
// counts must not be lost).
type state struct {
	Hour     int64                       `json:"hour"`   // unix hour of Spent[0]
	Spent    []int64                     `json:"spent"`  // bytes per hour, newest first
	Tokens   float64                     `json:"tokens"` // pacing bucket
	Refilled time.Time                   `json:"refilled"`
	Health   *telemetry.Health           `json:"health,omitempty"`
	Windows  []telemetry.InferenceWindow `json:"windows,omitempty"`
	Pending  int                         `json:"pending_intervals"`
	Held     uint64                      `json:"held"`
	Reduced  uint64                      `json:"reduced"`
}

// Budget is one device's budget. It is not safe for concurrent use.
type Budget struct {
	cfg Config
	st  state
}

// New returns a budget, restoring saved (from State) if not empty.
func New(cfg Config, saved []byte, now time.Time) (*Budget, error) {
	if cfg.BytesPerDay <= 0 {
		return nil, errors.New("telemetry budget: bytes per day must be positive")
	}
	if cfg.Interval <= 0 {
		return nil, errors.New("telemetry budget: interval must be positive")
	}
	if cfg.MaxStretch <= 0 {
		cfg.MaxStretch = max(2, int(time.Hour/cfg.Interval))
	}
	b := &Budget{cfg: cfg}
	if len(saved) > 0 {
		if err := json.Unmarshal(saved, &b.st); err != nil {
			return nil, fmt.Errorf("telemetry budget state: %w", err)
		}
	}
	if len(b.st.Spent) != buckets {
		b.st.Spent = make([]int64, buckets)
		b.st.Hour = hourOf(now)
		b.st.Tokens, b.st.Refilled = b.capacity(), now
	}
	return b, nil
}

// State is the budget's durable state; the caller writes it atomically after every Tick, before
// spooling what the Tick released.
func (b *Budget) State() []byte {
	out, _ := json.Marshal(b.st)
	return out
}

func hourOf(t time.Time) int64 { return t.Unix() / 3600 }

// rate is the pacing bucket's fill in bytes per second: a full bucket and 25 hours of filling (the
// hourly buckets the hard limit sums) make exactly the budget, so that pacing alone keeps to it
// and the hard limit is only a backstop.
func (b *Budget) rate() float64 {
	return (float64(b.cfg.BytesPerDay) - b.capacity()) / (buckets * 3600)
}

// capacity is an hour's worth: a device that just started reports at once.
func (b *Budget) capacity() float64 { return float64(b.cfg.BytesPerDay) / 24 }

// advance moves the hourly buckets and the token bucket to now.
func (b *Budget) advance(now time.Time) {
	if h := hourOf(now); h > b.st.Hour {
		shift := min(h-b.st.Hour, buckets)
		copy(b.st.Spent[shift:], b.st.Spent[:buckets-shift])
		for i := int64(0); i < shift; i++ {
			b.st.Spent[i] = 0
		}
		b.st.Hour = h
	}
	if d := now.Sub(b.st.Refilled); d > 0 {
		b.st.Tokens = min(b.capacity(), b.st.Tokens+d.Seconds()*b.rate())
		b.st.Refilled = now
	}
}

// Used is the bytes spent in the last 24 hours (and up to one hour more).
func (b *Budget) Used(now time.Time) int64 {
	b.advance(now)
	var n int64
	for _, v := range b.st.Spent {
		n += v
	}
	return n
}

// affordable: within the rolling day, and paced. A last resort (the least detail there is) may
// also go when the pacing bucket is full, into debt, so that a budget too small for even one
// message an hour still gets one through now and then.
func (b *Budget) affordable(cost int64, now time.Time, lastResort bool) bool {
	if b.Used(now)+cost > b.cfg.BytesPerDay {
		return false
	}
	return float64(cost) <= b.st.Tokens || (lastResort && b.st.Tokens >= b.capacity())
}

// Tick adds one interval's health sample (may be nil) and inference windows and returns the
// messages to spool now. Health is sent as the newest sample, with the budget's report in it.
func (b *Budget) Tick(now time.Time, health *telemetry.Health, windows []telemetry.InferenceWindow) ([]Message, Decision, error) {
	b.advance(now)
	if health != nil {
		h := *health
		b.st.Health = &h
	}
	for _, w := range windows {
		if err := b.hold(w); err != nil {
			return nil, Decision{}, err
		}
	}
	b.st.Pending++
	levels := []int{LevelFull}
	if b.st.Pending >= b.cfg.MaxStretch {
		levels = append(levels, LevelMoments)
	}
	for k, lv := range levels {
		if lv == LevelFull && b.st.Pending > 1 {
			lv = LevelStretched
		}
		msgs, cost, err := b.encode(now, lv)
		if err != nil {
			return nil, Decision{}, err
		}
		if !b.affordable(cost, now, k == len(levels)-1 && lv == LevelMoments) {
			continue
		}
		b.st.Spent[0] += cost
		b.st.Tokens -= float64(cost)
		if lv == LevelMoments {
			b.st.Reduced += uint64(len(b.st.Windows))
		}
		b.st.Health, b.st.Windows, b.st.Pending = nil, nil, 0
		return msgs, Decision{Sent: true, Level: lv, Bytes: int(cost)}, nil
	}
	b.st.Held++
	return nil, Decision{}, nil
}

// hold merges w into the held window of its model version.
func (b *Budget) hold(w telemetry.InferenceWindow) error {
	for i, h := range b.st.Windows {
		if h.Bundle == w.Bundle && h.Model == w.Model {
			m, err := telemetry.MergeInference(h, w)
			if err != nil {
				return err
			}
			b.st.Windows[i] = m
			return nil
		}
	}
	b.st.Windows = append(b.st.Windows, w)
	sort.Slice(b.st.Windows, func(i, j int) bool { return b.st.Windows[i].Bundle < b.st.Windows[j].Bundle })
	return nil
}

// encode renders the held summaries at a level and returns them with their cost.
func (b *Budget) encode(now time.Time, level int) ([]Message, int64, error) {
	var msgs []Message
	var cost int64
	add := func(kind string, v any) error {
		raw, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode %s telemetry: %w", kind, err)
		}
		msgs = append(msgs, Message{Kind: kind, Body: raw})
		cost += int64(len(raw) + b.cfg.Overhead)
		return nil
	}
	if b.st.Health != nil {
		h := *b.st.Health
		reduced := b.st.Reduced
		if level == LevelMoments {
			reduced += uint64(len(b.st.Windows))
		}
		h.Budget = &telemetry.BudgetReport{BytesPerDay: b.cfg.BytesPerDay, Used: b.Used(now), Level: level, Stretch: b.st.Pending,
			Held: b.st.Held, Reduced: reduced}
		if err := add(telemetry.KindHealth, h); err != nil {
			return nil, 0, err
		}
	}
	for _, w := range b.st.Windows {
		if level == LevelMoments {
			w = w.WithoutHistograms()
		}
		if err := add(telemetry.KindInference, w); err != nil {
			return nil, 0, err
		}
	}
	return msgs, cost, nil
}
