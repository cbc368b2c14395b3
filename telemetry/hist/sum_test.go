package hist

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// Sum gives what folding with Merge gives (keeping the fold on a merge error, as callers do), and
// never changes its inputs or a snapshot it returned.
func TestSumEqualsMergeFold(t *testing.T) {
	snap := func(ds ...time.Duration) Snapshot {
		h := NewLatency()
		for _, d := range ds {
			h.Observe(d)
		}
		return h.Snapshot()
	}
	a := snap(time.Millisecond, 3*time.Millisecond, 90*time.Second)
	b := snap(500*time.Nanosecond, 2*time.Millisecond)
	c := snap(40 * time.Millisecond)
	empty := Snapshot{}
	alien := snap(time.Millisecond)
	alien.Layout = 7
	cases := []struct {
		name string
		in   []Snapshot
	}{
		{"none", nil},
		{"one", []Snapshot{a}},
		{"several", []Snapshot{a, b, c, a}},
		{"empty ones among them", []Snapshot{empty, a, empty, b}},
		{"only empty", []Snapshot{empty, empty}},
		{"a layout that does not merge is skipped", []Snapshot{a, alien, b}},
	}
	for _, tc := range cases {
		before := make([]Snapshot, len(tc.in))
		for i, s := range tc.in {
			before[i] = s.clone()
			before[i].Layout = s.Layout
		}
		var fold Snapshot
		var sum Sum
		var early Snapshot
		for i, s := range tc.in {
			if m, err := fold.Merge(s); err == nil {
				fold = m
			}
			if err := sum.Add(s); err != nil && !errors.Is(err, ErrLayout) {
				t.Fatal(err)
			}
			if i == 1 {
				early = sum.Snapshot()
			}
		}
		earlyCopy := early.clone()
		earlyCopy.Layout = early.Layout
		if got := sum.Snapshot(); !reflect.DeepEqual(got, fold) {
			t.Errorf("%s: sum %+v, merge fold %+v", tc.name, got, fold)
		}
		if sum.Count() != fold.Count {
			t.Errorf("%s: count %d, want %d", tc.name, sum.Count(), fold.Count)
		}
		if !reflect.DeepEqual(early, earlyCopy) {
			t.Errorf("%s: a returned snapshot changed after Add", tc.name)
		}
		for i := range tc.in {
			if !reflect.DeepEqual(tc.in[i], before[i]) {
				t.Errorf("%s: input %d changed", tc.name, i)
			}
		}
	}
}
