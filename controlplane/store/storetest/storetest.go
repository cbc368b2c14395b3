// Package storetest is the conformance suite every store.Store implementation must pass.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/store"
)

// Opener opens a fresh store for one subtest. Reopen, when not nil, closes the store and opens it
// again on the same data, to prove durability; in-memory stores pass nil.
type Opener func(t *testing.T) (s store.Store, reopen func() store.Store)

// Run runs the suite.
func Run(t *testing.T, open Opener) {
	ctx := context.Background()
	put := func(t *testing.T, s store.Store, b, k, v string) {
		t.Helper()
		if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put(b, k, []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	get := func(t *testing.T, s store.Store, b, k string) (string, error) {
		var out []byte
		err := s.View(ctx, func(tx store.Tx) error {
			var err error
			out, err = tx.Get(b, k)
			return err
		})
		return string(out), err
	}

	t.Run("PutGetDelete", func(t *testing.T) {
		s, _ := open(t)
		if _, err := get(t, s, "devices", "a"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("missing key: %v, want ErrNotFound", err)
		}
		put(t, s, "devices", "a", "1")
		if v, err := get(t, s, "devices", "a"); err != nil || v != "1" {
			t.Fatalf("got %q, %v", v, err)
		}
		if err := s.Update(ctx, func(tx store.Tx) error { return tx.Delete("devices", "a") }); err != nil {
			t.Fatal(err)
		}
		if _, err := get(t, s, "devices", "a"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("deleted key: %v", err)
		}
	})

	t.Run("FailedUpdateWritesNothing", func(t *testing.T) {
		s, _ := open(t)
		put(t, s, "b", "keep", "old")
		boom := errors.New("boom")
		err := s.Update(ctx, func(tx store.Tx) error {
			if err := tx.Put("b", "keep", []byte("new")); err != nil {
				return err
			}
			if err := tx.Put("b", "extra", []byte("x")); err != nil {
				return err
			}
			if _, err := tx.NextSequence("b"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("update error %v", err)
		}
		if v, _ := get(t, s, "b", "keep"); v != "old" {
			t.Fatalf("rolled-back write visible: %q", v)
		}
		if _, err := get(t, s, "b", "extra"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("rolled-back key exists: %v", err)
		}
		var seq uint64
		s.Update(ctx, func(tx store.Tx) error { seq, _ = tx.NextSequence("b"); return nil })
		if seq != 1 {
			t.Fatalf("sequence after rollback = %d, want 1", seq)
		}
	})

	t.Run("ReadYourWritesInsideUpdate", func(t *testing.T) {
		s, _ := open(t)
		err := s.Update(ctx, func(tx store.Tx) error {
			tx.Put("b", "k", []byte("v"))
			got, err := tx.Get("b", "k")
			if err != nil || string(got) != "v" {
				return fmt.Errorf("read own write: %q %v", got, err)
			}
			tx.Delete("b", "k")
			if _, err := tx.Get("b", "k"); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("read own delete: %v", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ViewIsReadOnly", func(t *testing.T) {
		s, _ := open(t)
		err := s.View(ctx, func(tx store.Tx) error { return tx.Put("b", "k", []byte("v")) })
		if err == nil {
			t.Fatal("put inside View succeeded")
		}
	})

	t.Run("ForEachPrefixInOrder", func(t *testing.T) {
		s, _ := open(t)
		for _, k := range []string{"dev/c", "dev/a", "grp/x", "dev/b", "de"} {
			put(t, s, "b", k, "v-"+k)
		}
		var keys []string
		s.View(ctx, func(tx store.Tx) error {
			return tx.ForEach("b", "dev/", func(k string, v []byte) error {
				if string(v) != "v-"+k {
					return fmt.Errorf("value of %s is %q", k, v)
				}
				keys = append(keys, k)
				return nil
			})
		})
		if fmt.Sprint(keys) != "[dev/a dev/b dev/c]" {
			t.Fatalf("keys %v", keys)
		}
		n := 0
		s.View(ctx, func(tx store.Tx) error {
			return tx.ForEach("b", "", func(string, []byte) error {
				n++
				if n == 2 {
					return store.ErrStop
				}
				return nil
			})
		})
		if n != 2 {
			t.Fatalf("ErrStop did not stop: %d", n)
		}
		if err := s.View(ctx, func(tx store.Tx) error {
			return tx.ForEach("nobucket", "", func(string, []byte) error { return errors.New("called") })
		}); err != nil {
			t.Fatalf("missing bucket: %v", err)
		}
	})

	t.Run("ForEachFromStartsAtKey", func(t *testing.T) {
		s, _ := open(t)
		for _, k := range []string{"dev/1", "dev/3", "dev/5", "dev/7", "dex/0", "de"} {
			put(t, s, "b", k, "v-"+k)
		}
		cases := []struct{ start, want string }{
			{"dev/3", "[dev/3 dev/5 dev/6]"},
			{"dev/4", "[dev/5 dev/6]"},
			{"", "[dev/1 dev/3 dev/5 dev/6]"},
			{"dev/8", "[]"},
			{"zzz", "[]"},
		}
		for _, c := range cases {
			var keys []string
			err := s.Update(ctx, func(tx store.Tx) error {
				// The transaction's own writes count, as in ForEach.
				if err := tx.Put("b", "dev/6", []byte("v-dev/6")); err != nil {
					return err
				}
				if err := tx.Delete("b", "dev/7"); err != nil {
					return err
				}
				return store.ForEachFrom(tx, "b", "dev/", c.start, func(k string, v []byte) error {
					if string(v) != "v-"+k {
						return fmt.Errorf("value of %s is %q", k, v)
					}
					keys = append(keys, k)
					return nil
				})
			})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(keys) != c.want {
				t.Errorf("from %q: keys %v, want %s", c.start, keys, c.want)
			}
			if err := s.Update(ctx, func(tx store.Tx) error {
				if err := tx.Delete("b", "dev/6"); err != nil {
					return err
				}
				return tx.Put("b", "dev/7", []byte("v-dev/7"))
			}); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("ReturnedBytesAreCopies", func(t *testing.T) {
		s, _ := open(t)
		put(t, s, "b", "k", "abc")
		s.View(ctx, func(tx store.Tx) error {
			v, _ := tx.Get("b", "k")
			v[0] = 'X'
			return nil
		})
		if v, _ := get(t, s, "b", "k"); v != "abc" {
			t.Fatalf("store changed through a returned slice: %q", v)
		}
	})

	t.Run("ConcurrentIncrementsAreSerialised", func(t *testing.T) {
		s, _ := open(t)
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 10; j++ {
					err := s.Update(ctx, func(tx store.Tx) error {
						var n int
						if err := store.GetJSON(tx, "c", "n", &n); err != nil && !errors.Is(err, store.ErrNotFound) {
							return err
						}
						return store.PutJSON(tx, "c", "n", n+1)
					})
					if err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		var n int
		s.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, "c", "n", &n) })
		if n != 200 {
			t.Fatalf("counter %d, want 200 (lost updates)", n)
		}
	})

	t.Run("SequenceGrows", func(t *testing.T) {
		s, reopen := open(t)
		var last uint64
		for i := 0; i < 5; i++ {
			s.Update(ctx, func(tx store.Tx) error {
				n, err := tx.NextSequence("gen")
				if err != nil {
					return err
				}
				if n <= last {
					t.Errorf("sequence %d after %d", n, last)
				}
				last = n
				return nil
			})
		}
		if reopen != nil {
			s = reopen()
			s.Update(ctx, func(tx store.Tx) error {
				n, _ := tx.NextSequence("gen")
				if n <= last {
					t.Errorf("sequence %d after reopen, last was %d", n, last)
				}
				return nil
			})
		}
	})

	t.Run("DurableAcrossReopen", func(t *testing.T) {
		s, reopen := open(t)
		if reopen == nil {
			t.Skip("in-memory store: nothing to reopen")
		}
		put(t, s, "devices", "d1", "payload")
		s = reopen()
		if v, err := get(t, s, "devices", "d1"); err != nil || v != "payload" {
			t.Fatalf("after reopen: %q %v", v, err)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		s, _ := open(t)
		c, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Update(c, func(tx store.Tx) error { return nil }); !errors.Is(err, context.Canceled) {
			t.Fatalf("update with cancelled context: %v", err)
		}
	})
}
