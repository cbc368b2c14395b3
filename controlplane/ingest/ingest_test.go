package ingest

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/controlplane/store/pgstore"
	"github.com/edgefleet/edgefleet/internal/pgtest"
	"github.com/edgefleet/edgefleet/internal/wire"
)

type acks struct {
	mu   sync.Mutex
	last map[string]uint64
}

func (a *acks) publish(_ context.Context, topic string, payload []byte, _ byte, _ bool) error {
	var ack wire.Ack
	json.Unmarshal(payload, &ack)
	a.mu.Lock()
	a.last[topic] = ack.Seq
	a.mu.Unlock()
	return nil
}

func msg(dev string, seq, first uint64, kind string) wire.Telemetry {
	return wire.Telemetry{Device: dev, Seq: seq, FirstSeq: first, Kind: kind, At: time.Now(), Body: json.RawMessage(`{}`)}
}

func TestAckOnlyContiguousCommitted(t *testing.T) {
	tp := wire.NewTopics("")
	path := filepath.Join(t.TempDir(), "cp.db")
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	a := &acks{last: map[string]uint64{}}
	in := New(st, a.publish, tp, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	steps := []struct {
		name    string
		msgs    []wire.Telemetry
		wantAck uint64
		dupes   uint64
		gaps    uint64
	}{
		{"in order", []wire.Telemetry{msg("d", 1, 0, "health"), msg("d", 2, 0, "health")}, 2, 0, 0},
		{"gap: 5 arrives, 3 and 4 lost by the broker", []wire.Telemetry{msg("d", 5, 0, "health")}, 2, 0, 1},
		{"duplicate of a committed one", []wire.Telemetry{msg("d", 2, 0, "health"), msg("d", 5, 0, "health")}, 2, 2, 1},
		{"re-sent 3 fills part of the gap", []wire.Telemetry{msg("d", 3, 0, "health")}, 3, 2, 1},
		{"a merged window covering 4 closes it", []wire.Telemetry{msg("d", 4, 4, "inference")}, 5, 2, 1},
		{"merged range 6..9 at once", []wire.Telemetry{msg("d", 9, 6, "inference")}, 9, 2, 1},
		{"device reports 10..11 dropped beside 12", []wire.Telemetry{func() wire.Telemetry {
			m := msg("d", 12, 0, "health")
			m.Dropped = [][2]uint64{{10, 11}}
			return m
		}()}, 12, 2, 1},
		{"merged window with a hole (13, 15); 14 comes later", []wire.Telemetry{func() wire.Telemetry {
			m := msg("d", 15, 0, "inference")
			m.Covers = [][2]uint64{{13, 13}, {15, 15}}
			return m
		}()}, 13, 2, 2},
		{"14 is not a duplicate", []wire.Telemetry{msg("d", 14, 0, "health")}, 15, 2, 2},
	}
	for _, s := range steps {
		for _, m := range s.msgs {
			in.Handle(m)
		}
		if err := in.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		acc, _ := in.Account(ctx, "d")
		if a.last[tp.Ack("d")] != s.wantAck || acc.Contiguous != s.wantAck || acc.Duplicates != s.dupes || acc.Gaps != s.gaps {
			t.Fatalf("%s: ack %d, accounting %+v; want ack %d dupes %d gaps %d", s.name, a.last[tp.Ack("d")], acc, s.wantAck, s.dupes, s.gaps)
		}
	}
	acc, _ := in.Account(ctx, "d")
	if acc.Dropped != 2 {
		t.Fatalf("dropped %d, want 2", acc.Dropped)
	}
	// A restarted control plane knows what it committed: re-sent messages are duplicates.
	st.Close()
	st, _ = store.OpenBolt(path)
	defer st.Close()
	in2 := New(st, a.publish, tp, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	in2.Handle(msg("d", 7, 0, "inference"))
	in2.Handle(msg("d", 16, 0, "health"))
	in2.Flush(ctx)
	acc, _ = in2.Account(ctx, "d")
	if acc.Contiguous != 16 || acc.Duplicates != 3 {
		t.Fatalf("after restart: %+v", acc)
	}
	got, _ := in2.Query(ctx, "d", "health", time.Time{}, 0)
	if len(got) != 7 { // 1, 2, 3, 5, 12, 14, 16
		t.Fatalf("stored health messages: %d", len(got))
	}
	if seqOf(dataKey("d", "health", 42)) != 42 {
		t.Fatal("data key encoding")
	}
}

func TestPrune(t *testing.T) {
	backends := map[string]func(t *testing.T) store.Store{
		"memory": func(*testing.T) store.Store { return store.NewMemory() },
		"postgres": func(t *testing.T) store.Store {
			s, err := pgstore.Open(context.Background(), pgtest.Start(t, pgtest.Options{}).NewDatabase(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
	for name, open := range backends {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			in := New(st, func(context.Context, string, []byte, byte, bool) error { return nil }, wire.NewTopics(""), time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
			for _, dev := range []string{"d", "e"} {
				old := msg(dev, 1, 0, "health")
				old.At = time.Now().Add(-2 * time.Hour)
				in.Handle(old)
				in.Handle(msg(dev, 2, 0, "health"))
			}
			in.Flush(context.Background())
			if err := in.Prune(context.Background(), time.Now()); err != nil {
				t.Fatal(err)
			}
			for _, dev := range []string{"d", "e"} {
				got, _ := in.Query(context.Background(), dev, "", time.Time{}, 0)
				if len(got) != 1 || got[0].Seq != 2 {
					t.Fatalf("%s after prune: %+v", dev, got)
				}
			}
		})
	}
}
