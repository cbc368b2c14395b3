// Package blocksrv answers devices' block requests with bundle blocks on their own topic at QoS 0
// (a broker never queues bundle data for an offline session; a device re-requests what it missed)
// and broadcasts a bundle on its carousel topic when a wave of devices needs it at once. Total
// bundle bandwidth is bounded so telemetry keeps flowing.
package blocksrv

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"

	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/transfer"
)

// Source is where bundles come from (the registry).
type Source interface {
	Head(id string) (manifest, sig []byte, err error)
	Manifest(ctx context.Context, id string) (*bundle.Manifest, error)
	ReadBlock(ctx context.Context, id, file string, idx int64) ([]byte, error)
}

// Publisher sends a message.
type Publisher func(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error

// Config of the server.
type Config struct {
	Source  Source
	Publish Publisher
	Topics  wire.Topics
	// Allowed reports whether a device may fetch a bundle: deny by default, a device gets only
	// what its desired state names.
	Allowed func(device, bundle string) bool
	// BytesPerSecond bounds all bundle traffic together (0: 8 MiB/s).
	BytesPerSecond int
	Workers        int
	// MaxPending bounds the devices with a request waiting (0: 100,000); past it a request is
	// dropped and the device asks again.
	MaxPending int
	Logger     *slog.Logger
}

// Stats count what was sent.
type Stats struct {
	Requests, Refused, Dropped, Frames, Bytes, CarouselFrames, CarouselBytes int64
}

// Server serves blocks. Devices take turns: each turn sends one block (or a bundle's manifest
// and signature) to the device at the head of the line, which goes to the back if it wants more.
// With N devices downloading at once each gets 1/N of the bandwidth and a block every N turns, so
// none goes a whole stall timeout without one while N x block size stays under bandwidth x
// --stall-timeout (7,680 devices at 8 MiB/s, 64 KiB blocks and 60 s). A first-come queue instead
// sends whole bundles in arrival order and drops what overflows: at 2,500 devices at once some
// waited past the timeout and stalled.
type Server struct {
	cfg     Config
	limiter *rate.Limiter
	wg      sync.WaitGroup

	requests, refused, dropped, frames, bytes, cFrames, cBytes atomic.Int64

	mu        sync.Mutex
	pending   map[string]*pendingReq // device -> what it still asks for
	turns     []string               // devices in line, each at most once
	wake      chan struct{}
	perDevice map[string]int64 // frames sent per device, for tests and diagnostics
	carousels map[string]bool
}

// pendingReq is a device's latest request and how far its turns have got through it.
type pendingReq struct {
	req  transfer.Request
	next int // index into req.Blocks of the next block to send
}

// New returns a server; call Run to start its workers.
func New(cfg Config) *Server {
	if cfg.BytesPerSecond <= 0 {
		cfg.BytesPerSecond = 8 << 20
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 100_000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// The burst must cover one frame (a block plus its header), or WaitN could never succeed
	// for a full block; it is at least an eighth of a second of the rate so that small frames
	// do not serialize on the limiter. A frame larger than the burst (the manifest of a bundle
	// can be up to 1 MiB) is charged as one whole burst.
	burst := max(cfg.BytesPerSecond/8, 66<<10)
	return &Server{cfg: cfg, limiter: rate.NewLimiter(rate.Limit(cfg.BytesPerSecond), burst),
		pending: map[string]*pendingReq{}, wake: make(chan struct{}, 1),
		perDevice: map[string]int64{}, carousels: map[string]bool{}}
}

// Run serves requests until ctx ends.
func (s *Server) Run(ctx context.Context) {
	for i := 0; i < s.cfg.Workers; i++ {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for ctx.Err() == nil {
				device, unit, ok := s.take()
				if !ok {
					select {
					case <-ctx.Done():
					case <-s.wake:
					}
					continue
				}
				s.serve(ctx, device, unit)
			}
		}()
	}
	s.wg.Wait()
}

// Handle takes a request from a device's blocks/req topic. It never blocks the caller (the
// broker's goroutine). A new request from a device replaces what it asked before: a device asks
// again for exactly what it still misses.
func (s *Server) Handle(device string, payload []byte) {
	s.requests.Add(1)
	req, err := transfer.ParseRequest(payload)
	if err != nil {
		s.refused.Add(1)
		s.cfg.Logger.Warn("refused block request", "device", device, "err", err)
		return
	}
	if s.cfg.Allowed == nil || !s.cfg.Allowed(device, req.Bundle) {
		s.refused.Add(1)
		s.cfg.Logger.Warn("refused block request: bundle not in the device's desired state", "device", device, "bundle", req.Bundle)
		return
	}
	s.mu.Lock()
	if p, ok := s.pending[device]; ok {
		p.req, p.next = req, 0 // keeps its place in line
	} else if len(s.pending) >= s.cfg.MaxPending {
		s.mu.Unlock()
		s.dropped.Add(1)
		return
	} else {
		s.pending[device] = &pendingReq{req: req}
		s.turns = append(s.turns, device)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take gives the device at the head of the line one unit of work (a block index, or -1 for the
// manifest and signature) and puts it back at the end if more remains.
func (s *Server) take() (string, transfer.Request, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.turns) == 0 {
		return "", transfer.Request{}, false
	}
	device := s.turns[0]
	s.turns[0] = ""
	s.turns = s.turns[1:]
	p := s.pending[device]
	unit := transfer.Request{Bundle: p.req.Bundle, File: p.req.File}
	if p.req.File != transfer.HeadManifest && p.req.File != transfer.HeadSignature && p.next < len(p.req.Blocks) {
		unit.Blocks = []int64{p.req.Blocks[p.next]}
		p.next++
	} else {
		p.next = len(p.req.Blocks)
	}
	if p.next < len(p.req.Blocks) {
		s.turns = append(s.turns, device)
	} else {
		delete(s.pending, device)
	}
	if len(s.turns) > 0 { // let another worker take the next turn
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return device, unit, true
}

// BytesPerSecond is the bandwidth all bundle traffic shares.
func (s *Server) BytesPerSecond() int { return s.cfg.BytesPerSecond }

// Pending returns how many devices wait for blocks.
func (s *Server) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

func (s *Server) serve(ctx context.Context, device string, r transfer.Request) {
	topic := s.cfg.Topics.Blocks(device)
	send := func(f transfer.Frame) bool {
		payload := f.Encode()
		if err := s.limiter.WaitN(ctx, min(len(payload), s.limiter.Burst())); err != nil {
			return false
		}
		if err := s.cfg.Publish(ctx, topic, payload, 0, false); err != nil {
			s.cfg.Logger.Warn("send block failed", "device", device, "err", err)
			return false
		}
		s.frames.Add(1)
		s.bytes.Add(int64(len(f.Data)))
		s.mu.Lock()
		s.perDevice[device]++
		s.mu.Unlock()
		return true
	}
	if r.File == transfer.HeadManifest || r.File == transfer.HeadSignature {
		m, sig, err := s.cfg.Source.Head(r.Bundle)
		if err != nil {
			s.cfg.Logger.Warn("block request for unknown bundle", "device", device, "bundle", r.Bundle)
			return
		}
		send(transfer.Frame{Bundle: r.Bundle, File: transfer.HeadManifest, Data: m})
		send(transfer.Frame{Bundle: r.Bundle, File: transfer.HeadSignature, Data: sig})
		return
	}
	for _, i := range r.Blocks {
		data, err := s.cfg.Source.ReadBlock(ctx, r.Bundle, r.File, i)
		if err != nil {
			s.refused.Add(1)
			s.cfg.Logger.Warn("refused block", "device", device, "bundle", r.Bundle, "file", r.File, "index", i, "err", err)
			return
		}
		if !send(transfer.Frame{Bundle: r.Bundle, File: r.File, Index: i, Data: data}) {
			return
		}
	}
}

// Carousel broadcasts every block of a bundle once on its carousel topic. Devices of a wave that
// subscribed get it all from one send; each pulls only what it missed. A second call for a bundle
// whose carousel is running does nothing.
func (s *Server) Carousel(ctx context.Context, id string) error {
	s.mu.Lock()
	if s.carousels[id] {
		s.mu.Unlock()
		return nil
	}
	s.carousels[id] = true
	s.mu.Unlock()
	defer func() { s.mu.Lock(); delete(s.carousels, id); s.mu.Unlock() }()
	m, err := s.cfg.Source.Manifest(ctx, id)
	if err != nil {
		return err
	}
	topic := s.cfg.Topics.Carousel(id)
	for _, f := range m.Files {
		for i := int64(0); i < bundle.NumBlocks(f.Size, m.BlockSize); i++ {
			data, err := s.cfg.Source.ReadBlock(ctx, id, f.Path, i)
			if err != nil {
				return err
			}
			payload := transfer.Frame{Bundle: id, File: f.Path, Index: i, Data: data}.Encode()
			if err := s.limiter.WaitN(ctx, min(len(payload), s.limiter.Burst())); err != nil {
				return err
			}
			if err := s.cfg.Publish(ctx, topic, payload, 0, false); err != nil {
				return err
			}
			s.cFrames.Add(1)
			s.cBytes.Add(int64(len(data)))
		}
	}
	return nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{Requests: s.requests.Load(), Refused: s.refused.Load(), Dropped: s.dropped.Load(), Frames: s.frames.Load(),
		Bytes: s.bytes.Load(), CarouselFrames: s.cFrames.Load(), CarouselBytes: s.cBytes.Load()}
}

// FramesSent returns how many frames a device was sent.
func (s *Server) FramesSent(device string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perDevice[device]
}
