package spool_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/spool"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// countBody is a stand-in for a histogram: the number of windows it sums.
func countBody(n uint64, pad int) []byte {
	b := make([]byte, 8+pad)
	binary.BigEndian.PutUint64(b, n)
	return b
}

func bodyCount(b []byte) uint64 { return binary.BigEndian.Uint64(b[:8]) }

// sumMerge is what the telemetry code supplies: "hist" windows sum (and stay the same size),
// anything else cannot be merged.
func sumMerge(older, newer spool.Entry) (spool.Entry, bool) {
	if older.Kind != "hist" {
		return spool.Entry{}, false
	}
	return spool.Entry{Body: countBody(bodyCount(older.Body)+bodyCount(newer.Body), len(older.Body)-8)}, true
}

func mustOpen(t testing.TB, dir string, opts spool.Options) *spool.Spool {
	t.Helper()
	s, err := spool.Open(dir, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustAppend(t testing.TB, s *spool.Spool, kind string, body []byte, start time.Time) uint64 {
	t.Helper()
	seq, err := s.Append(kind, body, start, start.Add(time.Minute))
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return seq
}

func mustPending(t testing.TB, s *spool.Spool) []spool.Entry {
	t.Helper()
	es, err := s.Pending(0, 0)
	if err != nil {
		t.Fatalf("pending: %v", err)
	}
	return es
}

func firsts(es []spool.Entry) []uint64 {
	var out []uint64
	for _, e := range es {
		out = append(out, e.FirstSeq)
	}
	return out
}

func TestAppendPendingAck(t *testing.T) {
	cases := []struct {
		name        string
		appends     int
		acks        []uint64
		wantPending []uint64
		wantLastAck uint64
	}{
		{"no ack", 5, nil, []uint64{1, 2, 3, 4, 5}, 0},
		{"ack middle", 5, []uint64{3}, []uint64{4, 5}, 3},
		{"ack all", 5, []uint64{5}, nil, 5},
		{"acks only move forward", 5, []uint64{4, 2}, []uint64{5}, 4},
		{"ack beyond highest is clamped", 5, []uint64{99}, nil, 5},
		{"ack zero is a no-op", 3, []uint64{0}, []uint64{1, 2, 3}, 0},
		{"ack on empty spool", 0, []uint64{7}, nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustOpen(t, t.TempDir(), spool.Options{})
			for i := range tc.appends {
				if seq := mustAppend(t, s, "hist", countBody(1, 0), t0.Add(time.Duration(i)*time.Minute)); seq != uint64(i+1) {
					t.Fatalf("append %d got seq %d", i, seq)
				}
			}
			for _, a := range tc.acks {
				if err := s.Ack(a); err != nil {
					t.Fatal(err)
				}
			}
			if got := firsts(mustPending(t, s)); !slices.Equal(got, tc.wantPending) {
				t.Errorf("pending %v, want %v", got, tc.wantPending)
			}
			st := s.Stats()
			if st.LastAck != tc.wantLastAck || st.Pending != len(tc.wantPending) {
				t.Errorf("stats %+v, want LastAck %d Pending %d", st, tc.wantLastAck, len(tc.wantPending))
			}
			// A clamped ack must not make the spool skip sequence numbers.
			if seq := mustAppend(t, s, "hist", countBody(1, 0), t0); seq != uint64(tc.appends+1) {
				t.Errorf("next seq %d, want %d", seq, tc.appends+1)
			}
		})
	}
}

func TestPendingPages(t *testing.T) {
	s := mustOpen(t, t.TempDir(), spool.Options{})
	for i := range 10 {
		mustAppend(t, s, "hist", countBody(uint64(i), 0), t0)
	}
	cases := []struct {
		after uint64
		max   int
		want  []uint64
	}{
		{0, 3, []uint64{1, 2, 3}},
		{3, 3, []uint64{4, 5, 6}},
		{8, 5, []uint64{9, 10}},
		{10, 5, nil},
		{0, 0, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
	}
	for _, tc := range cases {
		es, err := s.Pending(tc.after, tc.max)
		if err != nil {
			t.Fatal(err)
		}
		if got := firsts(es); !slices.Equal(got, tc.want) {
			t.Errorf("Pending(%d, %d) = %v, want %v", tc.after, tc.max, got, tc.want)
		}
		for _, e := range es {
			if bodyCount(e.Body) != e.FirstSeq-1 || e.Kind != "hist" || !e.WindowStart.Equal(t0) || e.Merged() {
				t.Errorf("entry %d: %+v", e.FirstSeq, e)
			}
		}
	}
}

func TestRestartKeepsSeqAndEntries(t *testing.T) {
	dir := t.TempDir()
	s, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		mustAppend(t, s, fmt.Sprintf("k%d", i), []byte(fmt.Sprintf("body-%d", i)), t0.Add(time.Duration(i)*time.Minute))
	}
	if err := s.Ack(2); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, spool.Options{})
	st := s.Stats()
	if st.NextSeq != 5 || st.LastAck != 2 || st.Pending != 2 {
		t.Fatalf("after restart %+v", st)
	}
	es := mustPending(t, s)
	for i, e := range es {
		n := i + 2
		if e.FirstSeq != uint64(n+1) || e.Kind != fmt.Sprintf("k%d", n) || string(e.Body) != fmt.Sprintf("body-%d", n) ||
			!e.WindowStart.Equal(t0.Add(time.Duration(n)*time.Minute)) || !e.WindowEnd.Equal(t0.Add(time.Duration(n+1)*time.Minute)) {
			t.Errorf("entry %d: %+v", i, e)
		}
	}
	if seq := mustAppend(t, s, "k", nil, t0); seq != 5 {
		t.Errorf("seq after restart %d, want 5", seq)
	}
}

func TestTooLarge(t *testing.T) {
	s := mustOpen(t, t.TempDir(), spool.Options{MaxBytes: 100})
	if _, err := s.Append("hist", make([]byte, 200), t0, t0); !errors.Is(err, spool.ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	// A refused append does not use up a sequence number.
	if seq := mustAppend(t, s, "hist", countBody(1, 0), t0); seq != 1 {
		t.Errorf("seq %d", seq)
	}
}

// accounting checks that pending entries, dropped ranges and the acked prefix cover 1..n exactly
// once: no sequence number missing, none counted twice (past the ack).
func accounting(t *testing.T, s *spool.Spool, n uint64) (pending, merged, dropped uint64) {
	t.Helper()
	st := s.Stats()
	seen := make([]string, n+1)
	mark := func(seq uint64, how string) {
		if seq == 0 || seq > n {
			t.Errorf("seq %d (%s) outside 1..%d", seq, how, n)
			return
		}
		if seq <= st.LastAck {
			return // acknowledged; a partly acknowledged merged entry may still hold it
		}
		if seen[seq] != "" {
			t.Errorf("seq %d both %s and %s", seq, seen[seq], how)
		}
		seen[seq] = how
	}
	for _, e := range mustPending(t, s) {
		how := "pending"
		if e.Merged() {
			how = fmt.Sprintf("merged into %d", e.FirstSeq)
			merged += e.Count()
		}
		for _, r := range e.Seqs {
			for q := r.First; q <= r.Last; q++ {
				mark(q, how)
			}
		}
		pending += e.Count()
	}
	for _, r := range s.DroppedRanges() {
		for q := r.First; q <= r.Last; q++ {
			mark(q, "dropped")
			dropped++
		}
	}
	for q := st.LastAck + 1; q <= n; q++ {
		if seen[q] == "" {
			t.Errorf("seq %d is neither acknowledged, pending, merged nor dropped", q)
		}
	}
	return pending, merged, dropped
}

func TestFullSpoolMerges(t *testing.T) {
	cases := []struct {
		name       string
		merge      func(older, newer spool.Entry) (spool.Entry, bool)
		kinds      []string // appended in turn
		n          int
		pad        int
		maxBytes   int64
		ackEvery   int // 0: never
		wantDrops  bool
		wantMerges bool
		keepAll    string // a kind none of whose windows may be dropped
	}{
		{name: "one mergeable kind", merge: sumMerge, kinds: []string{"hist"}, n: 500, pad: 100, maxBytes: 2000, wantMerges: true},
		{name: "interleaved kinds", merge: sumMerge, kinds: []string{"hist", "hist2", "hist"}, n: 600, pad: 50, maxBytes: 3000, wantMerges: true},
		{name: "unmergeable kind is dropped", merge: sumMerge, kinds: []string{"hist", "raw"}, n: 400, pad: 60, maxBytes: 2000, wantDrops: true, wantMerges: true, keepAll: "hist"},
		{name: "no merge func drops oldest", merge: nil, kinds: []string{"hist"}, n: 300, pad: 60, maxBytes: 1500, wantDrops: true},
		{name: "acks while full", merge: sumMerge, kinds: []string{"hist", "raw", "hist2"}, n: 600, pad: 40, maxBytes: 1500, ackEvery: 97, wantDrops: true, wantMerges: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			merge := tc.merge
			if merge != nil {
				// hist2 sums like hist; the spool must pair only same kinds.
				merge = func(o, n spool.Entry) (spool.Entry, bool) {
					if o.Kind != n.Kind {
						t.Errorf("asked to merge %s with %s", o.Kind, n.Kind)
					}
					if o.Kind == "hist2" {
						o.Kind = "hist"
					}
					return tc.merge(o, n)
				}
			}
			dir := t.TempDir()
			opts := spool.Options{MaxBytes: tc.maxBytes, Merge: merge}
			s := mustOpen(t, dir, opts)
			appended := map[string]uint64{}
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range tc.n {
				kind := tc.kinds[i%len(tc.kinds)]
				mustAppend(t, s, kind, countBody(1, tc.pad), t0.Add(time.Duration(i)*time.Minute))
				appended[kind]++
				if st := s.Stats(); st.Bytes > tc.maxBytes {
					t.Fatalf("after append %d: %d bytes over %d", i+1, st.Bytes, tc.maxBytes)
				}
				if tc.ackEvery > 0 && i%tc.ackEvery == 0 {
					// The control plane's contiguous ack trails what was appended.
					if err := s.Ack(uint64(i+1) - uint64(rng.IntN(30))); err != nil {
						t.Fatal(err)
					}
				}
			}
			pending, merged, dropped := accounting(t, s, uint64(tc.n))
			st := s.Stats()
			t.Logf("%d appended: %d entries standing for %d seqs (%d inside merged entries), %d dropped, %d merges, %d bytes",
				tc.n, st.Pending, pending, merged, st.Dropped, st.Merged, st.Bytes)
			if (st.Dropped > 0) != tc.wantDrops || (st.Merged > 0) != tc.wantMerges {
				t.Errorf("dropped %d merged %d, want drops %v merges %v", st.Dropped, st.Merged, tc.wantDrops, tc.wantMerges)
			}
			if tc.ackEvery == 0 && dropped != st.Dropped {
				t.Errorf("dropped ranges hold %d seqs, Stats.Dropped %d", dropped, st.Dropped)
			}
			if tc.ackEvery == 0 {
				// Sums survive merging: each pending hist entry counts the windows it stands for.
				for _, e := range mustPending(t, s) {
					if e.Kind != "raw" && bodyCount(e.Body) != e.Count() {
						t.Errorf("entry %d stands for %d windows but sums %d", e.FirstSeq, e.Count(), bodyCount(e.Body))
					}
				}
			}
			if tc.keepAll != "" {
				var kept uint64
				for _, e := range mustPending(t, s) {
					if e.Kind == tc.keepAll {
						kept += e.Count()
					}
				}
				if kept != appended[tc.keepAll] {
					t.Errorf("%s: %d of %d windows kept; a mergeable kind lost data to an unmergeable one", tc.keepAll, kept, appended[tc.keepAll])
				}
			}
			// The binary-counter rule keeps the newest windows fine-grained.
			es := mustPending(t, s)
			if last := es[len(es)-1]; last.Merged() && tc.merge != nil {
				t.Errorf("newest entry already merged: %+v", last.Seqs)
			}
			// And it all survives a restart.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2 := mustOpen(t, dir, opts)
			p2, _, d2 := accounting(t, s2, uint64(tc.n))
			if p2 != pending || d2 != dropped || s2.Stats().Bytes != st.Bytes {
				t.Errorf("after restart pending %d dropped %d bytes %d, before %d %d %d", p2, d2, s2.Stats().Bytes, pending, dropped, st.Bytes)
			}
		})
	}
}

func TestDroppedRangesTrimmedByAck(t *testing.T) {
	s := mustOpen(t, t.TempDir(), spool.Options{MaxBytes: 200})
	for i := range 20 {
		mustAppend(t, s, "raw", make([]byte, 30), t0.Add(time.Duration(i)*time.Minute))
	}
	dr := s.DroppedRanges()
	if len(dr) != 1 || dr[0].First != 1 {
		t.Fatalf("dropped ranges %v", dr)
	}
	if err := s.Ack(dr[0].Last); err != nil {
		t.Fatal(err)
	}
	if got := s.DroppedRanges(); len(got) != 0 {
		t.Errorf("after ack past them, dropped ranges %v", got)
	}
	if st := s.Stats(); st.Dropped != dr[0].Len() {
		t.Errorf("Stats.Dropped %d, want the cumulative %d", st.Dropped, dr[0].Len())
	}
}

type fakeNow struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeNow) Now() time.Time  { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeNow) set(t time.Time) { f.mu.Lock(); f.now = t; f.mu.Unlock() }

func TestMaxAge(t *testing.T) {
	cases := []struct {
		name  string
		merge func(older, newer spool.Entry) (spool.Entry, bool)
		kinds []string
		// per kind, after 60 one-minute windows with a 10-minute limit
		wantExpired map[string]int // entries per kind that ended before the cut
		wantDrops   bool
	}{
		{"merged into one per kind", sumMerge, []string{"hist"}, map[string]int{"hist": 1}, false},
		{"unmergeable kind keeps only its newest expired", sumMerge, []string{"hist", "raw"}, map[string]int{"hist": 1, "raw": 1}, true},
		{"no merge drops expired", nil, []string{"hist"}, map[string]int{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeNow{now: t0}
			s := mustOpen(t, t.TempDir(), spool.Options{MaxAge: 10 * time.Minute, Merge: tc.merge, Now: clk.Now})
			const n = 60
			for i := range n {
				start := t0.Add(time.Duration(i) * time.Minute)
				clk.set(start.Add(time.Minute)) // the window has just ended
				mustAppend(t, s, tc.kinds[i%len(tc.kinds)], countBody(1, 0), start)
			}
			accounting(t, s, n)
			cut := clk.Now().Add(-10 * time.Minute)
			expired := map[string]int{}
			for _, e := range mustPending(t, s) {
				if e.WindowEnd.Before(cut) {
					expired[e.Kind]++
					if e.Kind == "hist" && (bodyCount(e.Body) != e.Count() || !e.WindowStart.Equal(t0)) {
						t.Errorf("coarse entry %+v sums %d", e.Seqs, bodyCount(e.Body))
					}
				} else if e.Merged() {
					t.Errorf("entry %d within MaxAge was merged", e.FirstSeq)
				}
			}
			for k, want := range tc.wantExpired {
				if expired[k] != want {
					t.Errorf("kind %s: %d expired entries, want %d", k, expired[k], want)
				}
			}
			if len(tc.wantExpired) == 0 && len(expired) != 0 {
				t.Errorf("expired entries kept: %v", expired)
			}
			st := s.Stats()
			if (st.Dropped > 0) != tc.wantDrops {
				t.Errorf("dropped %d, want drops %v", st.Dropped, tc.wantDrops)
			}
			wantOldest := clk.Now().Sub(t0)
			if len(tc.wantExpired) == 0 {
				wantOldest = 11 * time.Minute
			}
			if st.OldestAge != wantOldest {
				t.Errorf("OldestAge %v, want %v", st.OldestAge, wantOldest)
			}
		})
	}
}
