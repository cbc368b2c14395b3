package etcdstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/controlplane/store/etcdstore"
	"github.com/edgefleet/edgefleet/controlplane/store/storetest"
	"github.com/edgefleet/edgefleet/internal/etcdtest"
)

// Each store gets its own key prefix on a shared cluster.
var prefixSeq atomic.Int64

func openStore(t *testing.T, c *etcdtest.Cluster) (*etcdstore.Store, string) {
	t.Helper()
	prefix := fmt.Sprintf("test%d", prefixSeq.Add(1))
	s, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: c.Endpoints(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s, prefix
}

func TestEtcdConformance(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		s, prefix := openStore(t, c)
		cur := s
		t.Cleanup(func() { cur.Close() })
		return s, func() store.Store {
			cur.Close()
			n, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: c.Endpoints(), Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			cur = n
			return n
		}
	})

	ctx := context.Background()

	t.Run("LargeValueRefused", func(t *testing.T) {
		s, _ := openStore(t, c)
		defer s.Close()
		err := s.Update(ctx, func(tx store.Tx) error {
			return tx.Put("b", "big", bytes.Repeat([]byte("x"), 1536*1024+1))
		})
		if err == nil || !strings.Contains(err.Error(), "--max-request-bytes") {
			t.Fatalf("1.5 MiB value: %v, want a refusal naming --max-request-bytes", err)
		}
		// A value that fits is taken.
		if err := s.Update(ctx, func(tx store.Tx) error {
			return tx.Put("b", "ok", bytes.Repeat([]byte("x"), 1024*1024))
		}); err != nil {
			t.Fatalf("1 MiB value: %v", err)
		}
	})

	t.Run("ReservedBucketNames", func(t *testing.T) {
		s, _ := openStore(t, c)
		defer s.Close()
		for _, b := range []string{"", "a/b", "_seq"} {
			err := s.Update(ctx, func(tx store.Tx) error { return tx.Put(b, "k", []byte("v")) })
			if err == nil {
				t.Errorf("bucket %q accepted", b)
			}
		}
	})

	t.Run("ForEachPagesAndMergesOwnWrites", func(t *testing.T) {
		s, _ := openStore(t, c)
		defer s.Close()
		// More keys than one page, written in batches small enough for --max-txn-ops.
		const n = 1203
		for i := 0; i < n; i += 100 {
			if err := s.Update(ctx, func(tx store.Tx) error {
				for j := i; j < min(i+100, n); j++ {
					if err := tx.Put("devices", fmt.Sprintf("d%05d", j), []byte("v")); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		var keys []string
		err := s.Update(ctx, func(tx store.Tx) error {
			keys = keys[:0]
			tx.Delete("devices", "d00000")
			tx.Put("devices", "d00500", []byte("changed"))
			tx.Put("devices", "d00500a", []byte("new"))
			tx.Put("devices", "e", []byte("outside the prefix"))
			return tx.ForEach("devices", "d", func(k string, v []byte) error {
				if k == "d00500" && string(v) != "changed" {
					return fmt.Errorf("own write not seen: %q", v)
				}
				keys = append(keys, k)
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != n || keys[0] != "d00001" || keys[500] != "d00500a" || keys[n-1] != fmt.Sprintf("d%05d", n-1) {
			t.Fatalf("walk saw %d keys, first %q, [500] %q, last %q", len(keys), keys[0], keys[500], keys[n-1])
		}
		for i := 1; i < len(keys); i++ {
			if keys[i-1] >= keys[i] {
				t.Fatalf("out of order: %q before %q", keys[i-1], keys[i])
			}
		}
	})

	t.Run("WalkConflictsWithInsertIntoRange", func(t *testing.T) {
		// Write skew: two transactions each count the bucket and add a key when it holds fewer
		// than two. Serializable execution leaves exactly two keys.
		s, _ := openStore(t, c)
		defer s.Close()
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := s.Update(ctx, func(tx store.Tx) error {
					n := 0
					if err := tx.ForEach("slots", "", func(string, []byte) error { n++; return nil }); err != nil {
						return err
					}
					if n >= 2 {
						return nil
					}
					return tx.Put("slots", fmt.Sprintf("s%d", i), []byte("taken"))
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		n := 0
		s.View(ctx, func(tx store.Tx) error {
			return tx.ForEach("slots", "", func(string, []byte) error { n++; return nil })
		})
		if n != 2 {
			t.Fatalf("%d slots taken, want 2 (write skew)", n)
		}
	})

	t.Run("DeleteOfReadKeyConflicts", func(t *testing.T) {
		s, _ := openStore(t, c)
		defer s.Close()
		if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", "k", []byte("1")) }); err != nil {
			t.Fatal(err)
		}
		runs := 0
		err := s.Update(ctx, func(tx store.Tx) error {
			runs++
			_, err := tx.Get("b", "k")
			if runs == 1 {
				// Another writer deletes the key between this read and the commit.
				if err := s.Update(ctx, func(tx store.Tx) error { return tx.Delete("b", "k") }); err != nil {
					return err
				}
			}
			if errors.Is(err, store.ErrNotFound) {
				return tx.Put("b", "seen", []byte("missing"))
			}
			return tx.Put("b", "seen", []byte("present"))
		})
		if err != nil {
			t.Fatal(err)
		}
		var seen []byte
		s.View(ctx, func(tx store.Tx) error { seen, err = tx.Get("b", "seen"); return err })
		if runs != 2 || string(seen) != "missing" {
			t.Fatalf("runs %d, seen %q: the deletion did not invalidate the read", runs, seen)
		}
	})

	t.Run("ClosedStore", func(t *testing.T) {
		s, _ := openStore(t, c)
		s.Close()
		if err := s.View(ctx, func(store.Tx) error { return nil }); !errors.Is(err, store.ErrClosed) {
			t.Fatalf("view after close: %v", err)
		}
	})
}

// TestEtcdLargeTransactionOnRecommendedCluster: with the member flags docs/OPERATIONS.md asks
// for, one transaction holds a rollout stage for 5,000 devices; on etcd's defaults the refusal
// names the flag to raise.
func TestEtcdLargeTransactionOnRecommendedCluster(t *testing.T) {
	ctx := context.Background()
	stage := func(s store.Store, n int) error {
		return s.Update(ctx, func(tx store.Tx) error {
			for i := 0; i < n; i++ {
				seq, err := tx.NextSequence("rollout_outbox")
				if err != nil {
					return err
				}
				entry := fmt.Sprintf(`{"kind":"assign","assign":{"device":"sim-%05d","model":"wake","bundle":"sha256:%064d","rollout":"r-1"}}`, i, i)
				if err := tx.Put("rollout_outbox", fmt.Sprintf("%020d", seq), []byte(entry)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	t.Run("recommended", func(t *testing.T) {
		c := etcdtest.StartCluster(t, 3, etcdtest.Recommended...)
		s, _ := openStore(t, c)
		defer s.Close()
		if err := stage(s, 5000); err != nil {
			t.Fatal(err)
		}
		n := 0
		s.View(ctx, func(tx store.Tx) error {
			return tx.ForEach("rollout_outbox", "", func(string, []byte) error { n++; return nil })
		})
		if n != 5000 {
			t.Fatalf("%d outbox entries stored, want 5000", n)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		c := etcdtest.StartCluster(t, 3)
		s, _ := openStore(t, c)
		defer s.Close()
		if err := stage(s, 500); err == nil || !strings.Contains(err.Error(), "--max-txn-ops") {
			t.Fatalf("500 writes on etcd's defaults: %v, want a refusal naming --max-txn-ops", err)
		}
	})
}

func TestEtcdUnreachable(t *testing.T) {
	_, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: 500e6})
	if err == nil || !strings.Contains(err.Error(), "majority") {
		t.Fatalf("open of a missing cluster: %v", err)
	}
}

// TestEtcdSurvivesMemberLoss kills one member of three; a majority remains, so the store keeps
// reading and writing through the client's fail-over.
func TestEtcdSurvivesMemberLoss(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	ctx := context.Background()
	s, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: c.Endpoints(), Prefix: "loss"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	incr := func() error {
		return s.Update(ctx, func(tx store.Tx) error {
			var n int
			if err := store.GetJSON(tx, "c", "n", &n); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if _, err := tx.NextSequence("c"); err != nil {
				return err
			}
			return store.PutJSON(tx, "c", "n", n+1)
		})
	}
	for i := 0; i < 10; i++ {
		if err := incr(); err != nil {
			t.Fatal(err)
		}
	}
	// Kill the member the client most likely talks to (the first endpoint) as a crash would.
	c.Members[0].Kill()
	for i := 0; i < 10; i++ {
		if err := incr(); err != nil {
			t.Fatalf("write %d after losing a member: %v", i, err)
		}
	}
	var n int
	var seq uint64
	if err := s.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, "c", "n", &n) }); err != nil {
		t.Fatal(err)
	}
	s.Update(ctx, func(tx store.Tx) error { seq, err = tx.NextSequence("c"); return err })
	if n != 20 || seq != 21 {
		t.Fatalf("counter %d, sequence %d after losing a member; want 20 and 21", n, seq)
	}
}

// BenchmarkEtcdUpdate measures one Update on a 3-member loopback cluster: a blind write, and a
// read-modify-write of one key by 8 writers at once (conflicts/op counts the runs lost to them).
func BenchmarkEtcdUpdate(b *testing.B) {
	c := etcdtest.StartCluster(b, 3)
	ctx := context.Background()
	s, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: c.Endpoints(), Prefix: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.Run("put", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", fmt.Sprint(i%100), []byte("v")) }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("contended-increment", func(b *testing.B) {
		before := s.Conflicts()
		b.SetParallelism(4) // 4 x GOMAXPROCS writers
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				err := s.Update(ctx, func(tx store.Tx) error {
					var n int
					if err := store.GetJSON(tx, "c", "n", &n); err != nil && !errors.Is(err, store.ErrNotFound) {
						return err
					}
					return store.PutJSON(tx, "c", "n", n+1)
				})
				if err != nil {
					b.Error(err)
				}
			}
		})
		b.ReportMetric(float64(s.Conflicts()-before)/float64(b.N), "conflicts/op")
	})
}
