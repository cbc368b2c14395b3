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

// Moving telemetry to a new store carries each device's accounting over (where the new store has
// none), so the device is acknowledged from where it was, not asked for its whole history.
func TestCarryAccounting(t *testing.T) {
	dsn := pgtest.Start(t, pgtest.Options{}).NewDatabase(t)
	pg, err := pgstore.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	ctx := context.Background()
	tp := wire.NewTopics("")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	old := store.NewMemory()
	a := &acks{last: map[string]uint64{}}
	before := New(old, a.publish, tp, 0, log)
	for q := uint64(1); q <= 5; q++ {
		before.Handle(msg("moved", q, 0, "health"))
		before.Handle(msg("both", q, 0, "health"))
	}
	before.Flush(ctx)
	// "both" already has accounting in the new store (another replica committed there first).
	repl := New(pg, a.publish, tp, 0, log)
	repl.SharedStore()
	repl.Handle(msg("both", 9, 9, "health"))
	repl.Flush(ctx)

	for i, want := range []int{1, 0} { // a second start copies nothing
		n, err := CarryAccounting(ctx, old, pg)
		if err != nil || n != want {
			t.Fatalf("start %d: copied %d, %v; want %d", i, n, err, want)
		}
	}
	after := New(pg, a.publish, tp, 0, log)
	after.SharedStore()
	after.Handle(msg("moved", 6, 0, "health"))
	after.Flush(ctx)
	if got := a.last[tp.Ack("moved")]; got != 6 {
		t.Fatalf("ack after the move %d, want 6", got)
	}
	if acc, _ := after.Account(ctx, "both"); acc.Contiguous != 0 || acc.Pending != 1 {
		t.Fatalf("accounting the new store already had was overwritten: %+v", acc)
	}
}
