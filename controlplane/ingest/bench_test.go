package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/controlplane/store/pgstore"
	"github.com/edgefleet/edgefleet/internal/pgtest"
	"github.com/edgefleet/edgefleet/internal/wire"
)

// BenchmarkFlush512 measures one full ingest batch (512 messages from 512 devices: accounting read,
// 512 message writes, 512 accounting writes, one commit) on bbolt and on PostgreSQL as one
// replica of several (SharedStore: the accounting is read from the database in every batch).
func BenchmarkFlush512(b *testing.B) {
	srv := pgtest.Start(b, pgtest.Options{Durable: true})
	backends := []struct {
		name   string
		shared bool
		open   func(b *testing.B) store.Store
	}{
		{"bbolt", false, func(b *testing.B) store.Store {
			s, err := store.OpenBolt(filepath.Join(b.TempDir(), "cp.db"))
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"postgres-shared", true, func(b *testing.B) store.Store {
			s, err := pgstore.Open(context.Background(), srv.NewDatabase(b))
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			st := be.open(b)
			defer st.Close()
			in := New(st, func(context.Context, string, []byte, byte, bool) error { return nil }, wire.NewTopics(""), 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if be.shared {
				in.SharedStore()
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for d := 0; d < 512; d++ {
					in.Handle(msg(fmt.Sprintf("dev-%05d", d), uint64(i+1), 0, "health"))
				}
				if err := in.Flush(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*512)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
