package spool_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/spool"
)

// fakeClock ticks only when the test says so, so a rate is a count per tick, not a timing.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
	d   time.Duration
	c   chan time.Time
	// ready gets a value when a Drainer has made its ticker, so that the first tick has the
	// Drainer's interval.
	ready chan struct{}
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: t0, c: make(chan time.Time), ready: make(chan struct{}, 1)}
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) NewTicker(d time.Duration) spool.Ticker {
	f.mu.Lock()
	f.d = d
	f.mu.Unlock()
	f.ready <- struct{}{}
	return f
}
func (f *fakeClock) C() <-chan time.Time { return f.c }
func (f *fakeClock) Stop()               {}
func (f *fakeClock) interval() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.d
}

type recorder struct {
	mu   sync.Mutex
	sent []uint64
	fail int // fail the send with this index (1-based); 0: never
}

func (r *recorder) send(ctx context.Context, e spool.Entry) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 && len(r.sent)+1 == r.fail {
		r.fail = 0
		return errors.New("connection lost")
	}
	r.sent = append(r.sent, e.FirstSeq)
	return nil
}

func (r *recorder) got() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

// drain runs a Drainer for exactly ticks ticks, then ends its connection (ctx) and waits for it.
func drain(t *testing.T, d *spool.Drainer, clk *fakeClock, ticks int) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case <-clk.ready:
	case err := <-done:
		cancel()
		return err
	}
	for range ticks {
		select {
		case clk.c <- clk.advance():
		case err := <-done:
			cancel()
			return err
		}
	}
	cancel()
	return <-done
}

func (f *fakeClock) advance() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(f.d)
	return f.now
}

func seqs(from, to uint64) []uint64 {
	var out []uint64
	for q := from; q <= to; q++ {
		out = append(out, q)
	}
	return out
}

func TestDrainRate(t *testing.T) {
	cases := []struct {
		name     string
		pending  int
		rate     float64
		ticks    int
		wantSent int
		wantTick time.Duration
	}{
		{"backlog larger than ticks: one per tick", 100, 50, 20, 20, 20 * time.Millisecond},
		{"backlog smaller than ticks: all of it, no more", 7, 10, 30, 7, 100 * time.Millisecond},
		{"empty spool sends nothing", 0, 5, 10, 0, 200 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustOpen(t, t.TempDir(), spool.Options{})
			for i := range tc.pending {
				mustAppend(t, s, "hist", countBody(1, 0), t0.Add(time.Duration(i)*time.Minute))
			}
			clk := newFakeClock()
			rec := &recorder{}
			d := &spool.Drainer{Spool: s, Send: rec.send, Rate: tc.rate, Clock: clk}
			if err := drain(t, d, clk, tc.ticks); !errors.Is(err, context.Canceled) {
				t.Fatalf("Run: %v", err)
			}
			if got := rec.got(); !slices.Equal(got, seqs(1, uint64(tc.wantSent))) {
				t.Errorf("sent %v in %d ticks, want 1..%d in order", got, tc.ticks, tc.wantSent)
			}
			if clk.interval() != tc.wantTick {
				t.Errorf("tick interval %v, want %v", clk.interval(), tc.wantTick)
			}
		})
	}
}

func TestDrainResumesFromFirstUnacked(t *testing.T) {
	s := mustOpen(t, t.TempDir(), spool.Options{})
	for i := range 10 {
		mustAppend(t, s, "hist", countBody(1, 0), t0.Add(time.Duration(i)*time.Minute))
	}
	clk := newFakeClock()
	rec := &recorder{fail: 6}
	d := &spool.Drainer{Spool: s, Send: rec.send, Rate: 100, Clock: clk}
	// The connection drops on the 6th send: Run returns the send error.
	if err := drain(t, d, clk, 20); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("Run after a failed send: %v", err)
	}
	if got := rec.got(); !slices.Equal(got, seqs(1, 5)) {
		t.Fatalf("sent %v", got)
	}
	// The control plane committed 1..3 before the drop.
	if err := s.Ack(3); err != nil {
		t.Fatal(err)
	}
	rec2 := &recorder{}
	d.Send = rec2.send
	if err := drain(t, d, clk, 20); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if got := rec2.got(); !slices.Equal(got, seqs(4, 10)) {
		t.Errorf("after reconnect sent %v, want 4..10", got)
	}
}

func TestDrainResendsGapAfterStall(t *testing.T) {
	s := mustOpen(t, t.TempDir(), spool.Options{})
	for i := range 3 {
		mustAppend(t, s, "hist", countBody(1, 0), t0.Add(time.Duration(i)*time.Minute))
	}
	clk := newFakeClock()
	rec := &recorder{}
	// 1 tick per second; resend when the ack has not moved for 5 s.
	d := &spool.Drainer{Spool: s, Send: rec.send, Rate: 1, ResendAfter: 5 * time.Second, Clock: clk}
	if err := drain(t, d, clk, 10); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	// Ticks 1-3 send 1..3, tick 4 idles, tick 5 (5 s without an ack) starts over: 1..3 again on
	// ticks 5-7, then 8-9 idle, and tick 10 starts over once more.
	if got, want := rec.got(), []uint64{1, 2, 3, 1, 2, 3, 1}; !slices.Equal(got, want) {
		t.Errorf("sent %v, want %v", got, want)
	}
}

func TestDrainRestartsAfterMerge(t *testing.T) {
	s := mustOpen(t, t.TempDir(), spool.Options{MaxBytes: 400, Merge: sumMerge})
	for i := range 5 {
		mustAppend(t, s, "hist", countBody(1, 20), t0.Add(time.Duration(i)*time.Minute))
	}
	clk := newFakeClock()
	var mu sync.Mutex
	var sent []spool.Entry
	appendAt := 3
	d := &spool.Drainer{Spool: s, Rate: 10, Clock: clk, Send: func(ctx context.Context, e spool.Entry) error {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, e)
		if len(sent) == appendAt {
			// New windows arrive while draining and push the spool over its bound: the oldest
			// merge into an entry behind the cursor.
			for i := range 10 {
				if _, err := s.Append("hist", countBody(1, 20), t0.Add(time.Hour+time.Duration(i)*time.Minute), time.Time{}); err != nil {
					return err
				}
			}
		}
		return nil
	}}
	if err := drain(t, d, clk, 40); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if s.Stats().Merged == 0 {
		t.Fatal("no merge happened; the test needs one")
	}
	// Every sequence number pending must have been sent after the merge.
	delivered := map[uint64]bool{}
	for _, e := range sent {
		for _, r := range e.Seqs {
			for q := r.First; q <= r.Last; q++ {
				delivered[q] = true
			}
		}
	}
	for q := uint64(1); q <= 15; q++ {
		if !delivered[q] {
			t.Errorf("seq %d never sent", q)
		}
	}
}
