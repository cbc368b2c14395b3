// Package assign owns each device's desired state: it allocates generations by compare-and-swap in
// the store (always above what the device reports, so a control plane restored from a backup can
// never lock devices out), signs the document with the control key, persists it, and publishes it
// retained. It re-publishes when a device reports an older generation and re-issues documents at
// half their lifetime so they never expire while the control plane runs.
package assign

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/ota/desired"
	"github.com/edgefleet/edgefleet/ota/sign"
)

const bucket = "desired"

// Publisher sends a message to the fleet.
type Publisher func(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error

// Record is a device's current desired state as stored.
type Record struct {
	State    desired.State `json:"state"`
	Envelope []byte        `json:"envelope"`
}

// Assigner manages desired states.
type Assigner struct {
	st      store.Store
	signer  *sign.Signer
	publish Publisher
	topics  wire.Topics
	ttl     time.Duration
	now     func() time.Time
	log     *slog.Logger
}

// New returns an Assigner.
func New(st store.Store, signer *sign.Signer, publish Publisher, topics wire.Topics, ttl time.Duration, log *slog.Logger) *Assigner {
	if ttl <= 0 {
		ttl = desired.DefaultTTL
	}
	return &Assigner{st: st, signer: signer, publish: publish, topics: topics, ttl: ttl, now: time.Now, log: log}
}

// ErrUnchanged is returned by Update's function to leave the desired state as it is.
var ErrUnchanged = errors.New("unchanged")

// Update changes a device's models with fn and issues a new generation, above both the stored one
// and reportedGen. The new document is persisted before it is published.
func (a *Assigner) Update(ctx context.Context, device string, reportedGen uint64, fn func(models map[string]desired.Model) error) (Record, error) {
	var rec Record
	err := a.st.Update(ctx, func(tx store.Tx) error {
		var cur Record
		if err := store.GetJSON(tx, bucket, device, &cur); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		models := maps.Clone(cur.State.Models)
		if models == nil {
			models = map[string]desired.Model{}
		}
		if err := fn(models); err != nil {
			return err
		}
		now := a.now().UTC().Truncate(time.Second)
		st := desired.State{Device: device, Generation: max(cur.State.Generation, reportedGen) + 1, IssuedAt: now, ExpiresAt: now.Add(a.ttl), Models: models}
		env, err := desired.Sign(ctx, a.signer, st)
		if err != nil {
			return err
		}
		rec = Record{State: st, Envelope: env}
		return store.PutJSON(tx, bucket, device, rec)
	})
	if errors.Is(err, ErrUnchanged) {
		return a.Get(ctx, device)
	}
	if err != nil {
		return Record{}, fmt.Errorf("issue desired state for %s: %w", device, err)
	}
	a.log.Info("desired state issued", "device", device, "generation", rec.State.Generation, "models", len(rec.State.Models))
	if err := a.publish(ctx, a.topics.Desired(device), rec.Envelope, 1, true); err != nil {
		// Stored: it goes out on the next republish (reconnect, reported generation check).
		a.log.Warn("publish desired state failed; will retry", "device", device, "err", err)
	}
	return rec, nil
}

// Get returns a device's stored desired state.
func (a *Assigner) Get(ctx context.Context, device string) (Record, error) {
	var rec Record
	err := a.st.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, bucket, device, &rec) })
	return rec, err
}

// OnReported re-publishes (or re-issues) a device's desired state when the device reports a
// generation other than the current one: it missed the retained message, or the control plane was
// restored from an older backup and must jump above what the device has accepted.
func (a *Assigner) OnReported(ctx context.Context, device string, reportedGen uint64) {
	rec, err := a.Get(ctx, device)
	if err != nil {
		return // nothing desired for this device
	}
	switch {
	case reportedGen > rec.State.Generation:
		a.log.Warn("device holds a newer generation than the store (restored from backup?); re-issuing above it", "device", device, "reported", reportedGen, "stored", rec.State.Generation)
		a.Update(ctx, device, reportedGen, func(map[string]desired.Model) error { return nil })
	case reportedGen < rec.State.Generation:
		if err := a.publish(ctx, a.topics.Desired(device), rec.Envelope, 1, true); err != nil {
			a.log.Warn("republish desired state failed", "device", device, "err", err)
		}
	}
}

// ResendStale re-publishes the desired state of every online device that still reports an older
// generation than the one stored, issued at least minAge ago. OnReported does this when a report
// comes, but a device that missed its retained desired state (a clustered broker losing a node
// can fail to store it and still acknowledge) has nothing new to report, and would wait forever.
// It returns how many it re-sent.
func (a *Assigner) ResendStale(ctx context.Context, online map[string]uint64, minAge time.Duration) (int, error) {
	var stale []Record
	cutoff := a.now().Add(-minAge)
	err := a.st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucket, "", func(k string, v []byte) error {
			gen, ok := online[k]
			if !ok {
				return nil
			}
			var r Record
			if json.Unmarshal(v, &r) == nil && gen < r.State.Generation && r.State.IssuedAt.Before(cutoff) {
				stale = append(stale, r)
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("read desired states: %w", err)
	}
	n := 0
	for _, r := range stale {
		if err := a.publish(ctx, a.topics.Desired(r.State.Device), r.Envelope, 1, true); err != nil {
			return n, fmt.Errorf("re-send desired state of %s: %w", r.State.Device, err)
		}
		n++
	}
	return n, nil
}

// RepublishAll sends every stored desired state again (at start: an embedded broker forgot them).
func (a *Assigner) RepublishAll(ctx context.Context) error {
	var recs []Record
	err := a.st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucket, "", func(_ string, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err == nil {
				recs = append(recs, r)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := a.publish(ctx, a.topics.Desired(r.State.Device), r.Envelope, 1, true); err != nil {
			return err
		}
	}
	return nil
}

// RefreshExpiring re-issues documents past half their lifetime. Run it periodically.
func (a *Assigner) RefreshExpiring(ctx context.Context) {
	var due []Record
	now := a.now()
	a.st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucket, "", func(_ string, v []byte) error {
			var r Record
			if json.Unmarshal(v, &r) == nil {
				half := r.State.IssuedAt.Add(r.State.ExpiresAt.Sub(r.State.IssuedAt) / 2)
				if now.After(half) {
					due = append(due, r)
				}
			}
			return nil
		})
	})
	for _, r := range due {
		a.Update(ctx, r.State.Device, 0, func(map[string]desired.Model) error { return nil })
	}
}
