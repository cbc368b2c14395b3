package pgstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/controlplane/store/pgstore"
	"github.com/edgefleet/edgefleet/controlplane/store/storetest"
	"github.com/edgefleet/edgefleet/internal/pgtest"
)

func open(t testing.TB, dsn string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		dsn := srv.NewDatabase(t)
		cur := open(t, dsn)
		t.Cleanup(func() { cur.Close() })
		return cur, func() store.Store {
			cur.Close()
			cur = open(t, dsn)
			return cur
		}
	})
}

// Keys sort by their bytes, including bytes that are not valid UTF-8 and prefixes that end in
// 0xff, as in bbolt; a walk longer than one page merges the transaction's own writes in order.
func TestForEachBytesAndPages(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	s := open(t, srv.NewDatabase(t))
	defer s.Close()
	ctx := context.Background()
	odd := []string{"a\xff", "a\xff\x00", "a\xfe", "b", "a\x00", "a"}
	if err := s.Update(ctx, func(tx store.Tx) error {
		for _, k := range odd {
			if err := tx.Put("odd", k, []byte(k)); err != nil {
				return err
			}
		}
		for i := 0; i < 2500; i += 2 {
			if err := tx.Put("many", fmt.Sprintf("k%05d", i), []byte("db")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var got []string
	s.View(ctx, func(tx store.Tx) error {
		return tx.ForEach("odd", "a\xff", func(k string, _ []byte) error { got = append(got, k); return nil })
	})
	if fmt.Sprintf("%q", got) != `["a\xff" "a\xff\x00"]` {
		t.Fatalf("prefix a\\xff: %q", got)
	}
	err := s.Update(ctx, func(tx store.Tx) error {
		for i := 1; i < 2500; i += 2 {
			tx.Put("many", fmt.Sprintf("k%05d", i), []byte("own"))
		}
		tx.Delete("many", "k00000")
		tx.Put("many", "k02498", []byte("own"))
		var keys []string
		if err := tx.ForEach("many", "k", func(k string, v []byte) error {
			if strings.HasSuffix(k, "1") || strings.HasSuffix(k, "3") || k == "k02498" {
				if string(v) != "own" {
					return fmt.Errorf("%s = %q, want own write", k, v)
				}
			}
			keys = append(keys, k)
			return nil
		}); err != nil {
			return err
		}
		if len(keys) != 2499 || keys[0] != "k00001" || keys[len(keys)-1] != "k02499" {
			return fmt.Errorf("walk saw %d keys, %s..%s", len(keys), keys[0], keys[len(keys)-1])
		}
		for i := 1; i < len(keys); i++ {
			if keys[i-1] >= keys[i] {
				return fmt.Errorf("out of order: %s then %s", keys[i-1], keys[i])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Two stores on one database are two replicas: each sees what the other committed, and their
// concurrent read-modify-write transactions on one key lose no update.
func TestTwoReplicasShareData(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	dsn := srv.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	done := make(chan error, 2)
	for _, s := range []*pgstore.Store{a, b} {
		go func() {
			for i := 0; i < 25; i++ {
				if err := s.Update(ctx, func(tx store.Tx) error {
					var n int
					store.GetJSON(tx, "c", "n", &n)
					return store.PutJSON(tx, "c", "n", n+1)
				}); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*pgstore.Store{a, b} {
		var n int
		if err := s.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, "c", "n", &n) }); err != nil || n != 50 {
			t.Fatalf("counter %d, %v; want 50", n, err)
		}
	}
}

// BenchmarkBatchUpdate512 measures one ingest-sized commit (512 telemetry-sized puts in one
// Update) on bbolt and on PostgreSQL, both with fsync on, in the same run.
func BenchmarkBatchUpdate512(b *testing.B) {
	value := []byte(`{"device":"dev-000123","kind":"inference","seq":123456,"at":"2026-11-23T18:00:00.000000001Z","model":"mobilenet","latency_ms":4.2,"top1":"class-17","confidence":0.87,"input_mean":0.51,"input_std":0.22}`)
	run := func(b *testing.B, s store.Store) {
		ctx := context.Background()
		n := 0
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := s.Update(ctx, func(tx store.Tx) error {
				for j := 0; j < 512; j++ {
					n++
					if err := tx.Put("telemetry", fmt.Sprintf("dev-%06d/inference/%020d", n%1000, n), value); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*512)/b.Elapsed().Seconds(), "msgs/s")
	}
	srv := pgtest.Start(b, pgtest.Options{Durable: true}) // once: sub-benchmarks run several times
	b.Run("bbolt", func(b *testing.B) {
		s, err := store.OpenBolt(filepath.Join(b.TempDir(), "cp.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
	b.Run("postgres", func(b *testing.B) {
		s := open(b, srv.NewDatabase(b))
		defer s.Close()
		run(b, s)
	})
}
