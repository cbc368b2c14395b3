// Package audit is the control plane's append-only audit log: who did what, when, from where and
// with what outcome, for every mutating API call and every automatic rollout decision. Entries
// are only ever appended, in the same store transaction as the change they record where there is
// one.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/store"
)

// Bucket holds the entries under zero-padded sequence numbers.
const Bucket = "audit"

// Entry is one line of the log.
type Entry struct {
	At      time.Time `json:"at"`
	Who     string    `json:"who"`
	Role    string    `json:"role,omitempty"` // the caller's role, for API calls
	Action  string    `json:"action"`
	Target  string    `json:"target,omitempty"`
	Rollout string    `json:"rollout,omitempty"`
	Stage   int       `json:"stage,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	From    string    `json:"from,omitempty"`
	Outcome string    `json:"outcome,omitempty"`
	Seq     uint64    `json:"seq"`
}

// Append adds e inside tx.
func Append(tx store.Tx, e Entry) error {
	seq, err := tx.NextSequence(Bucket)
	if err != nil {
		return fmt.Errorf("audit sequence: %w", err)
	}
	e.Seq = seq
	return store.PutJSON(tx, Bucket, fmt.Sprintf("%020d", seq), e)
}

// Record appends e in its own transaction.
func Record(ctx context.Context, st store.Store, e Entry) error {
	return st.Update(ctx, func(tx store.Tx) error { return Append(tx, e) })
}

// List returns entries at or after since, oldest first, at most limit (the newest ones).
func List(ctx context.Context, st store.Store, since time.Time, limit int) ([]Entry, error) {
	var out []Entry
	err := st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(Bucket, "", func(_ string, v []byte) error {
			var e Entry
			if json.Unmarshal(v, &e) == nil && !e.At.Before(since) {
				out = append(out, e)
			}
			return nil
		})
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, err
}
