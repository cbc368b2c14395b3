package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/controlplane/store/pgstore"
	"github.com/edgefleet/edgefleet/internal/pgtest"
	"github.com/edgefleet/edgefleet/internal/wire"
)

// A copy kept up to date from QueryChanged holds what Query returns after every kind of write:
// appends, a gap filled below the newest seq, a merged window rewriting a finer one's key, other
// kinds' messages, duplicates and dropped ranges.
func TestQueryChangedKeepsACopyCurrent(t *testing.T) {
	backends := map[string]func(t *testing.T) store.Store{
		"bbolt": func(t *testing.T) store.Store {
			s, err := store.OpenBolt(filepath.Join(t.TempDir(), "cp.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
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
		t.Run(name, func(t *testing.T) { testQueryChanged(t, open(t)) })
	}
}

func testQueryChanged(t *testing.T, st store.Store) {
	in := New(st, func(context.Context, string, []byte, byte, bool) error { return nil }, wire.NewTopics(""), 0,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	body := func(m wire.Telemetry, v string) wire.Telemetry { m.Body = json.RawMessage(`"` + v + `"`); return m }
	covers := func(m wire.Telemetry, r ...[2]uint64) wire.Telemetry { m.Covers = r; return m }
	steps := []struct {
		name     string
		msgs     []wire.Telemetry
		changed  bool
		wantFrom uint64
	}{
		{"nothing stored yet", nil, true, 0},
		{"still nothing", nil, false, 0},
		{"appends", []wire.Telemetry{msg("d", 1, 0, "inference"), msg("d", 2, 0, "inference"), msg("d", 4, 0, "inference")}, true, 1},
		{"another kind only", []wire.Telemetry{msg("d", 5, 0, "health")}, true, 5},
		{"duplicate", []wire.Telemetry{msg("d", 4, 0, "inference")}, false, 0},
		{"gap below the newest filled", []wire.Telemetry{body(msg("d", 3, 0, "inference"), "late")}, true, 3},
		{"append past a gap", []wire.Telemetry{msg("d", 8, 0, "inference")}, true, 8},
		{"merged window 6..8 rewrites key 8", []wire.Telemetry{body(msg("d", 8, 6, "inference"), "merged")}, true, 6},
		{"merged window with holes rewrites key 11", []wire.Telemetry{msg("d", 11, 0, "inference"),
			body(covers(msg("d", 11, 0, "inference"), [2]uint64{9, 9}, [2]uint64{11, 11}), "merged2")}, true, 9},
		{"a range past the message's own seq is not accounted", []wire.Telemetry{covers(msg("d", 12, 0, "inference"), [2]uint64{13, 13})}, false, 0},
		{"dropped range beside a new one", []wire.Telemetry{func() wire.Telemetry {
			m := msg("d", 14, 0, "inference")
			m.Dropped = [][2]uint64{{10, 10}}
			return m
		}()}, true, 10},
	}
	var mark Mark
	var held []wire.Telemetry
	for _, s := range steps {
		for _, m := range s.msgs {
			in.Handle(m)
			if err := in.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		ch, err := in.QueryChanged(ctx, "d", "inference", mark)
		if err != nil {
			t.Fatal(err)
		}
		if ch.Changed != s.changed || ch.From != s.wantFrom {
			t.Errorf("%s: changed %v from %d, want %v from %d", s.name, ch.Changed, ch.From, s.changed, s.wantFrom)
		}
		mark = ch.Mark
		if ch.Changed {
			k := 0
			for k < len(held) && held[k].Seq < ch.From {
				k++
			}
			held = append(held[:k:k], ch.Msgs...)
		}
		all, err := in.Query(ctx, "d", "inference", time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		sort.SliceStable(all, func(i, j int) bool { return all[i].Seq < all[j].Seq })
		if got, want := describe(held), describe(all); got != want {
			t.Errorf("%s: copy %s, store %s", s.name, got, want)
		}
	}
}

func describe(ms []wire.Telemetry) string {
	s := ""
	for _, m := range ms {
		s += fmt.Sprintf("%d:%s ", m.Seq, m.Body)
	}
	return s
}
