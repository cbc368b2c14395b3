package store_test

import (
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/controlplane/store/storetest"
)

func TestBolt(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		path := filepath.Join(t.TempDir(), "cp.db")
		s, err := store.OpenBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		cur := s
		t.Cleanup(func() { cur.Close() })
		return s, func() store.Store {
			cur.Close()
			n, err := store.OpenBolt(path)
			if err != nil {
				t.Fatal(err)
			}
			cur = n
			return n
		}
	})
}

func TestMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		return store.NewMemory(), nil
	})
}

func TestBoltSecondOpenerIsRefusedClearly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cp.db")
	s, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := store.OpenBolt(path); err == nil {
		t.Fatal("second open of a held store succeeded")
	}
}
