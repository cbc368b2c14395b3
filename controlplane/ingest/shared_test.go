package ingest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/controlplane/store/pgstore"
	"github.com/edgefleet/edgefleet/internal/pgtest"
	"github.com/edgefleet/edgefleet/internal/wire"
)

// Two control planes share one telemetry store; a device's shard moves from A to B and back. Each
// must continue from what the other committed: A's cache of the device's accounting is stale by
// the time the device comes back.
func TestSharedStoreShardMovesAndBack(t *testing.T) {
	backends := []struct {
		name string
		open func(t *testing.T) (a, b store.Store)
	}{
		{"memory", func(t *testing.T) (store.Store, store.Store) { m := store.NewMemory(); return m, m }},
		{"postgres", func(t *testing.T) (store.Store, store.Store) {
			dsn := pgtest.Start(t, pgtest.Options{}).NewDatabase(t)
			var out [2]store.Store
			for i := range out {
				s, err := pgstore.Open(context.Background(), dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				out[i] = s
			}
			return out[0], out[1]
		}},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			sa, sb := be.open(t)
			tp := wire.NewTopics("")
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			acksA, acksB := &acks{last: map[string]uint64{}}, &acks{last: map[string]uint64{}}
			a, b := New(sa, acksA.publish, tp, 0, log), New(sb, acksB.publish, tp, 0, log)
			a.SharedStore()
			b.SharedStore()
			ctx := context.Background()
			steps := []struct {
				at      *Ingest
				acks    *acks
				seqs    []uint64
				wantAck uint64
			}{
				{a, acksA, []uint64{1, 2}, 2},
				{b, acksB, []uint64{3, 4}, 4},
				{a, acksA, []uint64{5}, 5},
				{b, acksB, []uint64{4, 6}, 6}, // 4 is a duplicate although B never saw 5
			}
			for i, s := range steps {
				for _, q := range s.seqs {
					s.at.Handle(msg("d", q, 0, "health"))
				}
				if err := s.at.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				if got := s.acks.last[tp.Ack("d")]; got != s.wantAck {
					t.Fatalf("step %d: ack %d, want %d", i, got, s.wantAck)
				}
			}
			for name, in := range map[string]*Ingest{"A": a, "B": b} {
				acc, err := in.Account(ctx, "d")
				if err != nil || acc.Contiguous != 6 || acc.Duplicates != 1 || acc.Gaps != 0 {
					t.Fatalf("%s's accounting: %+v, %v", name, acc, err)
				}
				got, err := in.Query(ctx, "d", "health", time.Time{}, 0)
				if err != nil || len(got) != 6 {
					t.Fatalf("%s's query: %d messages, %v", name, len(got), err)
				}
			}
		})
	}
}
