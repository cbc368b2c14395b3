package spool

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/edgefleet/edgefleet/agent/spool/store"
)

// enforce applies MaxAge, then MaxBytes, inside the caller's transaction: the append that crossed
// a limit and the merges or drops that restore it commit together.
func (s *Spool) enforce(tx *store.Tx, now time.Time) error {
	if s.opts.MaxAge > 0 {
		if err := s.enforceAge(tx, now.Add(-s.opts.MaxAge)); err != nil {
			return err
		}
	}
	if s.opts.MaxBytes <= 0 {
		return nil
	}
	refused := map[[2]uint64]bool{}
	for s.bytes > s.opts.MaxBytes && len(s.slots) > 0 {
		ok, err := s.mergeForSpace(tx, refused)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		// Nothing left that merging can shrink: one entry goes, counted and reported.
		if err := s.drop(tx, s.dropVictim(refused)); err != nil {
			return err
		}
	}
	return nil
}

// dropVictim picks the oldest entry of a kind that could not be merged this round (Merge refused
// it, or merging it freed nothing), so that a kind which cannot be merged gives up its own windows
// before the coarse summary of a kind that can. Failing that, the oldest entry.
func (s *Spool) dropVictim(refused map[[2]uint64]bool) int {
	if s.opts.Merge == nil {
		return 0
	}
	stuck := map[uint64]bool{}
	for pair := range refused {
		stuck[pair[0]] = true
	}
	for i, sl := range s.slots {
		if stuck[sl.first] {
			return i
		}
	}
	return 0
}

// enforceAge folds, per kind, the windows that ended before cut into one coarse entry (the newest
// expired window of the kind absorbs the older ones, so old data is kept at a coarser grain
// instead of thrown away). An expired window Merge refuses is dropped; without Merge every expired
// window is.
func (s *Spool) enforceAge(tx *store.Tx, cut time.Time) error {
	var kinds []string
	byKind := map[string][]uint64{}
	for _, sl := range s.slots {
		if !sl.end.Before(cut) {
			continue
		}
		if _, ok := byKind[sl.kind]; !ok {
			kinds = append(kinds, sl.kind)
		}
		byKind[sl.kind] = append(byKind[sl.kind], sl.first)
	}
	for _, k := range kinds {
		firsts := byKind[k]
		acc := firsts[0]
		for _, next := range firsts[1:] {
			ok := false
			if s.opts.Merge != nil {
				var err error
				if ok, err = s.merge(tx, acc, next, false); err != nil {
					return err
				}
			}
			if !ok {
				if err := s.drop(tx, s.find(acc)); err != nil {
					return err
				}
				acc = next
			}
		}
		if s.opts.Merge == nil {
			if err := s.drop(tx, s.find(acc)); err != nil {
				return err
			}
		}
	}
	return nil
}

// mergeForSpace merges one pair of same-kind neighbours that frees space, and reports whether it
// found one. It prefers, oldest first, a pair whose older part is no coarser than the newer: the
// binary-counter rule, which leaves windows coarser the older they are (1 recent window stays
// fine, the last hour in a few entries, the day before in one) instead of growing one huge entry
// at the head. Failing that, any pair, oldest first. refused remembers pairs Merge turned down in
// this round, so each is asked once.
func (s *Spool) mergeForSpace(tx *store.Tx, refused map[[2]uint64]bool) (bool, error) {
	if s.opts.Merge == nil {
		return false, nil
	}
	next := make([]int, len(s.slots))
	last := map[string]int{}
	for i := len(s.slots) - 1; i >= 0; i-- {
		next[i] = -1
		if j, ok := last[s.slots[i].kind]; ok {
			next[i] = j
		}
		last[s.slots[i].kind] = i
	}
	for pass := 0; pass < 2; pass++ {
		for i, j := range next {
			if j < 0 {
				continue
			}
			a, b := s.slots[i], s.slots[j]
			pair := [2]uint64{a.first, b.first}
			if (pass == 0 && a.count > b.count) || refused[pair] {
				continue
			}
			ok, err := s.merge(tx, a.first, b.first, true)
			if err != nil || ok {
				return ok, err
			}
			refused[pair] = true
		}
	}
	return false, nil
}

// merge folds the entry at key bf into the older one at af, if Merge agrees (and, with
// mustShrink, if the result is smaller than the two). The merged entry keeps af as its key and
// the union of both sequence sets, so no sequence number leaves the accounting.
func (s *Spool) merge(tx *store.Tx, af, bf uint64, mustShrink bool) (bool, error) {
	i, j := s.find(af), s.find(bf)
	ea, err := decode(af, tx.Get(af), true)
	if err != nil {
		return false, fmt.Errorf("merge: %w: %w", ErrCorrupt, err)
	}
	eb, err := decode(bf, tx.Get(bf), true)
	if err != nil {
		return false, fmt.Errorf("merge: %w: %w", ErrCorrupt, err)
	}
	m, ok := s.opts.Merge(ea, eb)
	if !ok {
		return false, nil
	}
	ne := Entry{
		FirstSeq: af, Seqs: addRanges(ea.Seqs, eb.Seqs), Kind: ea.Kind, Body: m.Body,
		WindowStart: minTime(ea.WindowStart, eb.WindowStart), WindowEnd: maxTime(ea.WindowEnd, eb.WindowEnd),
	}
	ne.LastSeq = ne.Seqs[len(ne.Seqs)-1].Last
	rec := encode(&ne)
	size := int64(8 + len(rec))
	if mustShrink && size >= s.slots[i].size+s.slots[j].size {
		return false, nil
	}
	if err := tx.Put(af, rec); err != nil {
		return false, err
	}
	if err := tx.Delete(bf); err != nil {
		return false, err
	}
	s.bytes += size - s.slots[i].size - s.slots[j].size
	s.slots[i] = slotOf(&ne, size)
	s.slots = slices.Delete(s.slots, j, j+1)
	s.st.merged++
	return true, nil
}

// drop removes slot i and records its sequence numbers as dropped.
func (s *Spool) drop(tx *store.Tx, i int) error {
	sl := s.slots[i]
	e, err := decode(sl.first, tx.Get(sl.first), false)
	if err != nil {
		return fmt.Errorf("drop: %w: %w", ErrCorrupt, err)
	}
	if err := tx.Delete(sl.first); err != nil {
		return err
	}
	s.st.droppedRanges = addRanges(s.st.droppedRanges, e.Seqs)
	s.st.dropped += sl.count
	s.bytes -= sl.size
	s.slots = slices.Delete(s.slots, i, i+1)
	return nil
}

// find returns the index of the slot keyed first; it must exist.
func (s *Spool) find(first uint64) int {
	i := sort.Search(len(s.slots), func(i int) bool { return s.slots[i].first >= first })
	if i == len(s.slots) || s.slots[i].first != first {
		panic(fmt.Sprintf("spool: no slot %d", first)) // an index bug, not a disk state
	}
	return i
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
