// Package retrain notifies the retraining pipeline: when fleet drift or accuracy for a model
// crosses a threshold, on a schedule, or when a captured dataset completes, it posts a CloudEvents
// (structured JSON) event to a webhook, signed with HMAC-SHA256 over the exact body.
//
// Delivery survives restarts and receivers that are down: every event is persisted in the store
// before the first attempt, retried with exponential backoff, and moved to a dead-letter list after
// its last attempt, from where an operator can send it again. Receivers deduplicate by the event id
// (delivery is at least once).
package retrain

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/store"
)

// Event types.
const (
	TypeDrift    = "io.edgefleet.retrain.drift"
	TypeAccuracy = "io.edgefleet.retrain.accuracy"
	TypeConcept  = "io.edgefleet.retrain.concept_drift"
	TypeSchedule = "io.edgefleet.retrain.schedule"
	TypeDataset  = "io.edgefleet.retrain.dataset"
	TypeManual   = "io.edgefleet.retrain.requested"
)

// SignatureHeader carries "sha256=" + hex(HMAC-SHA256(secret, body)).
const SignatureHeader = "X-Edgefleet-Signature"

const (
	bucketOutbox = "retrain_outbox"
	bucketDead   = "retrain_dead"
	bucketFired  = "retrain_fired" // trigger key -> last time fired, for cooldowns
)

// Data is the event's payload: which model and version, where, and why.
type Data struct {
	Model    string         `json:"model"`
	Version  string         `json:"version,omitempty"`
	Bundle   string         `json:"bundle,omitempty"`
	Groups   []string       `json:"groups,omitempty"`
	Reason   string         `json:"reason"`
	Drift    map[string]any `json:"drift,omitempty"`    // per group: the drift report's scores
	Accuracy map[string]any `json:"accuracy,omitempty"` // per group: accuracy figures
	Datasets []string       `json:"datasets,omitempty"`
}

// CloudEvent is the CloudEvents 1.0 structured-mode JSON envelope.
type CloudEvent struct {
	SpecVersion     string    `json:"specversion"`
	Type            string    `json:"type"`
	Source          string    `json:"source"`
	ID              string    `json:"id"`
	Time            time.Time `json:"time"`
	Subject         string    `json:"subject,omitempty"`
	DataContentType string    `json:"datacontenttype"`
	Data            Data      `json:"data"`
}

// Delivery is a persisted event with its delivery state.
type Delivery struct {
	Event     CloudEvent `json:"event"`
	Attempts  int        `json:"attempts"`
	NextAt    time.Time  `json:"next_at"`
	LastError string     `json:"last_error,omitempty"`
	DeadAt    time.Time  `json:"dead_at,omitzero"`
}

// Config wires a Notifier.
type Config struct {
	URL    string
	Secret string // never logged
	Store  store.Store
	Client *http.Client
	Source string // CloudEvents source; default "edgefleet/controlplane"
	// MaxAttempts before an event goes to the dead-letter list (default 8); Backoff is the first
	// retry's delay, doubled each time up to MaxBackoff (defaults 1s and 5m).
	MaxAttempts int
	Backoff     time.Duration
	MaxBackoff  time.Duration
	Logger      *slog.Logger
	Now         func() time.Time
}

// Notifier persists and delivers events.
type Notifier struct {
	cfg  Config
	poke chan struct{}
	mu   sync.Mutex // one delivery pass at a time
}

// New returns a Notifier; Run delivers.
func New(cfg Config) (*Notifier, error) {
	if cfg.URL == "" {
		return nil, errors.New("retrain webhook: no URL")
	}
	if cfg.Secret == "" {
		return nil, errors.New("retrain webhook: a secret is needed to sign events (--retrain-secret or EDGEFLEET_RETRAIN_SECRET)")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 15 * time.Second}
	}
	if cfg.Source == "" {
		cfg.Source = "edgefleet/controlplane"
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Notifier{cfg: cfg, poke: make(chan struct{}, 1)}, nil
}

// Sign returns the signature header value for body.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a signature header value in constant time; receivers use it.
func Verify(secret string, body []byte, header string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(header))
}

// Notify persists an event of type typ and wakes the sender. It returns the event id.
func (n *Notifier) Notify(ctx context.Context, typ string, d Data) (string, error) {
	id, err := newID()
	if err != nil {
		return "", err
	}
	now := n.cfg.Now().UTC()
	ev := CloudEvent{SpecVersion: "1.0", Type: typ, Source: n.cfg.Source, ID: id, Time: now,
		Subject: d.Model, DataContentType: "application/json", Data: d}
	err = n.cfg.Store.Update(ctx, func(tx store.Tx) error {
		return store.PutJSON(tx, bucketOutbox, key(now, id), Delivery{Event: ev, NextAt: now})
	})
	if err != nil {
		return "", fmt.Errorf("persist retraining event: %w", err)
	}
	n.cfg.Logger.Info("retraining event queued", "type", typ, "id", id, "model", d.Model, "reason", d.Reason)
	n.Poke()
	return id, nil
}

// NotifyOnce is Notify unless the same trigger fired within cooldown; it reports whether it sent.
func (n *Notifier) NotifyOnce(ctx context.Context, trigger string, cooldown time.Duration, typ string, d Data) (bool, error) {
	now := n.cfg.Now().UTC()
	fire := false
	err := n.cfg.Store.Update(ctx, func(tx store.Tx) error {
		var last time.Time
		if err := store.GetJSON(tx, bucketFired, trigger, &last); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if !last.IsZero() && now.Sub(last) < cooldown {
			return nil
		}
		fire = true
		return store.PutJSON(tx, bucketFired, trigger, now)
	})
	if err != nil || !fire {
		return false, err
	}
	_, err = n.Notify(ctx, typ, d)
	return err == nil, err
}

// Poke makes Run look at the outbox now.
func (n *Notifier) Poke() {
	select {
	case n.poke <- struct{}{}:
	default:
	}
}

// Run delivers due events until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		n.DeliverDue(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.poke:
		}
	}
}

// DeliverDue attempts every event whose next attempt is due.
func (n *Notifier) DeliverDue(ctx context.Context) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.cfg.Now()
	type item struct {
		k string
		d Delivery
	}
	var due []item
	n.cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucketOutbox, "", func(k string, v []byte) error {
			var d Delivery
			if json.Unmarshal(v, &d) == nil && !d.NextAt.After(now) {
				due = append(due, item{k, d})
			}
			return nil
		})
	})
	for _, it := range due {
		if ctx.Err() != nil {
			return
		}
		err := n.send(ctx, it.d.Event)
		d := it.d
		d.Attempts++
		err = n.cfg.Store.Update(ctx, func(tx store.Tx) error {
			if err == nil {
				return tx.Delete(bucketOutbox, it.k)
			}
			d.LastError = err.Error()
			if d.Attempts >= n.cfg.MaxAttempts {
				d.DeadAt = n.cfg.Now().UTC()
				if err := tx.Delete(bucketOutbox, it.k); err != nil {
					return err
				}
				return store.PutJSON(tx, bucketDead, it.k, d)
			}
			d.NextAt = n.cfg.Now().Add(n.backoff(d.Attempts))
			return store.PutJSON(tx, bucketOutbox, it.k, d)
		})
		switch {
		case err != nil:
			n.cfg.Logger.Error("record retraining event delivery", "id", d.Event.ID, "err", err)
		case d.LastError == "":
			n.cfg.Logger.Info("retraining event delivered", "id", d.Event.ID, "type", d.Event.Type, "attempts", d.Attempts)
		case !d.DeadAt.IsZero():
			n.cfg.Logger.Error("retraining event undeliverable; kept in the dead-letter list (GET /api/v1/retrain/dead)", "id", d.Event.ID, "attempts", d.Attempts, "err", d.LastError)
		default:
			n.cfg.Logger.Warn("retraining webhook failed; will retry", "id", d.Event.ID, "attempt", d.Attempts, "next", d.NextAt, "err", d.LastError)
		}
	}
}

func (n *Notifier) backoff(attempts int) time.Duration {
	d := n.cfg.Backoff
	for i := 1; i < attempts && d < n.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, n.cfg.MaxBackoff)
}

func (n *Notifier) send(ctx context.Context, ev CloudEvent) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	req.Header.Set(SignatureHeader, Sign(n.cfg.Secret, body))
	req.Header.Set("Ce-Id", ev.ID) // lets a receiver deduplicate before parsing
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("post to webhook: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// Pending returns the events still to deliver, oldest first.
func (n *Notifier) Pending(ctx context.Context) ([]Delivery, error) { return n.list(ctx, bucketOutbox) }

// Dead returns the dead-letter list, oldest first.
func (n *Notifier) Dead(ctx context.Context) ([]Delivery, error) { return n.list(ctx, bucketDead) }

func (n *Notifier) list(ctx context.Context, bucket string) ([]Delivery, error) {
	out := []Delivery{}
	err := n.cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucket, "", func(_ string, v []byte) error {
			var d Delivery
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("decode retraining event: %w", err)
			}
			out = append(out, d)
			return nil
		})
	})
	return out, err
}

// ErrNotFound: no dead letter with that id.
var ErrNotFound = errors.New("no such dead-lettered event")

// Redeliver moves a dead-lettered event back to the outbox with a fresh attempt count.
func (n *Notifier) Redeliver(ctx context.Context, id string) error {
	err := n.cfg.Store.Update(ctx, func(tx store.Tx) error {
		var found string
		var d Delivery
		err := tx.ForEach(bucketDead, "", func(k string, v []byte) error {
			if err := json.Unmarshal(v, &d); err == nil && d.Event.ID == id {
				found = k
				return store.ErrStop
			}
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrStop) {
			return err
		}
		if found == "" {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		d.Attempts, d.DeadAt, d.NextAt = 0, time.Time{}, n.cfg.Now().UTC()
		if err := tx.Delete(bucketDead, found); err != nil {
			return err
		}
		return store.PutJSON(tx, bucketOutbox, found, d)
	})
	if err == nil {
		n.Poke()
	}
	return err
}

// key orders events by creation time.
func key(t time.Time, id string) string {
	return fmt.Sprintf("%020d-%s", t.UnixNano(), id)
}

func newID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("event id: %w", err)
	}
	return hex.EncodeToString(b), nil
}
