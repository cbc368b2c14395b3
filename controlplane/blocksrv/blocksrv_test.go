package blocksrv

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/transfer"
)

// memSource serves every block of any file as a few bytes naming it.
type memSource struct{}

func (memSource) Head(string) ([]byte, []byte, error) { return []byte("{}"), []byte("sig"), nil }
func (memSource) Manifest(context.Context, string) (*bundle.Manifest, error) {
	return nil, fmt.Errorf("not used")
}
func (memSource) ReadBlock(_ context.Context, _, file string, idx int64) ([]byte, error) {
	return fmt.Appendf(nil, "%s#%d", file, idx), nil
}

// sent records who got which frame, in order.
type sent struct {
	mu     sync.Mutex
	frames []string // "device file index"
	all    chan struct{}
	want   int
}

func (s *sent) publish(_ context.Context, topic string, payload []byte, _ byte, _ bool) error {
	f, err := transfer.DecodeFrame(payload)
	if err != nil {
		return err
	}
	dev := strings.Split(topic, "/")[2]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames = append(s.frames, fmt.Sprintf("%s %s %d", dev, f.File, f.Index))
	if len(s.frames) == s.want {
		close(s.all)
	}
	return nil
}

var bundleID = strings.Repeat("ab", 32)

func request(t *testing.T, file string, blocks ...int64) []byte {
	t.Helper()
	b, err := json.Marshal(transfer.Request{Bundle: bundleID, File: file, Blocks: blocks})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTurnsAreFair: with many devices asking for whole files at once, every device gets its
// first block before any gets a second (a first-come queue sent device 1 its whole file first and
// let the last device wait for everyone: at 2,500 devices, past the stall timeout). A device that
// asks again replaces its request without losing its place; past MaxPending requests are dropped.
func TestTurnsAreFair(t *testing.T) {
	const devices, blocks = 50, 8
	rec := &sent{all: make(chan struct{}), want: devices*blocks + 2}
	s := New(Config{Source: memSource{}, Publish: rec.publish, Topics: wire.NewTopics("edgefleet"),
		Allowed: func(string, string) bool { return true }, BytesPerSecond: 1 << 30, Workers: 1, MaxPending: devices + 1})
	all := []int64{0, 1, 2, 3, 4, 5, 6, 7}
	for d := range devices {
		s.Handle(fmt.Sprintf("dev-%02d", d), request(t, "model.onnx", all...))
	}
	// dev-00 asks again for what it misses: it keeps its place and is not served twice.
	s.Handle("dev-00", request(t, "model.onnx", all...))
	s.Handle("late", request(t, transfer.HeadManifest))
	s.Handle("one-too-many", request(t, "model.onnx", 0))
	if st := s.Stats(); st.Dropped != 1 || st.Requests != devices+3 {
		t.Fatalf("stats %+v: want 1 dropped of %d", st, devices+3)
	}
	if s.Pending() != devices+1 {
		t.Fatalf("%d devices pending, want %d", s.Pending(), devices+1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	select {
	case <-rec.all:
	case <-time.After(30 * time.Second):
		t.Fatalf("only %d of %d frames sent", len(rec.frames), rec.want)
	}
	cancel()
	<-done
	rec.mu.Lock()
	defer rec.mu.Unlock()
	got := map[string]int{}
	for i, f := range rec.frames {
		dev := strings.Fields(f)[0]
		got[dev]++
		// Turn k (0-based) of a device comes only after every device had turn k-1.
		if i < devices && got[dev] > 1 {
			t.Fatalf("frame %d: %s got a second block before every device had its first: %v", i, dev, rec.frames[:i+1])
		}
	}
	for d := range devices {
		if n := got[fmt.Sprintf("dev-%02d", d)]; n != blocks {
			t.Fatalf("dev-%02d got %d frames, want %d", d, n, blocks)
		}
	}
	if got["late"] != 2 || got["one-too-many"] != 0 {
		t.Fatalf("late device got %d frames (want manifest and signature), dropped one got %d", got["late"], got["one-too-many"])
	}
	if s.Pending() != 0 {
		t.Fatalf("%d devices still pending", s.Pending())
	}
}
