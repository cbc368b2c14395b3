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
	QueueDepth     int
	Logger         *slog.Logger
}

// Stats count what was sent.
type Stats struct {
	Requests, Refused, Dropped, Frames, Bytes, CarouselFrames, CarouselBytes int64
}

// Server serves blocks.
type Server struct {
	cfg     Config
	limiter *rate.Limiter
	queue   chan job
	wg      sync.WaitGroup

	requests, refused, dropped, frames, bytes, cFrames, cBytes atomic.Int64

	mu        sync.Mutex
	perDevice map[string]int64 // frames sent per device, for tests and diagnostics
	carousels map[string]bool
}

type job struct {
	device string
	req    transfer.Request
}

// New returns a server; call Run to start its workers.
func New(cfg Config) *Server {
	if cfg.BytesPerSecond <= 0 {
		cfg.BytesPerSecond = 8 << 20
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Small bursts keep the limit true over short windows; a frame larger than the burst (blocks
	// can be up to 1 MiB) is charged as one whole burst.
	burst := max(cfg.BytesPerSecond/8, 66<<10)
	return &Server{cfg: cfg, limiter: rate.NewLimiter(rate.Limit(cfg.BytesPerSecond), burst), queue: make(chan job, cfg.QueueDepth),
		perDevice: map[string]int64{}, carousels: map[string]bool{}}
}

// Run serves queued requests until ctx ends.
func (s *Server) Run(ctx context.Context) {
	for i := 0; i < s.cfg.Workers; i++ {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-s.queue:
					s.serve(ctx, j)
				}
			}
		}()
	}
	s.wg.Wait()
}

// Handle takes a request from a device's blocks/req topic. It never blocks the caller (the
// broker's goroutine): when the queue is full the request is dropped and the device asks again.
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
	select {
	case s.queue <- job{device, req}:
	default:
		s.dropped.Add(1)
	}
}

func (s *Server) serve(ctx context.Context, j job) {
	topic := s.cfg.Topics.Blocks(j.device)
	send := func(f transfer.Frame) bool {
		payload := f.Encode()
		if err := s.limiter.WaitN(ctx, min(len(payload), s.limiter.Burst())); err != nil {
			return false
		}
		if err := s.cfg.Publish(ctx, topic, payload, 0, false); err != nil {
			s.cfg.Logger.Warn("send block failed", "device", j.device, "err", err)
			return false
		}
		s.frames.Add(1)
		s.bytes.Add(int64(len(f.Data)))
		s.mu.Lock()
		s.perDevice[j.device]++
		s.mu.Unlock()
		return true
	}
	r := j.req
	if r.File == transfer.HeadManifest || r.File == transfer.HeadSignature {
		m, sig, err := s.cfg.Source.Head(r.Bundle)
		if err != nil {
			s.cfg.Logger.Warn("block request for unknown bundle", "device", j.device, "bundle", r.Bundle)
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
			s.cfg.Logger.Warn("refused block", "device", j.device, "bundle", r.Bundle, "file", r.File, "index", i, "err", err)
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
