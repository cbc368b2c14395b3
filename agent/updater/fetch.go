package updater

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/transfer"
	"github.com/shirou/gopsutil/v3/disk"
)

// Fetcher pulls bundles over MQTT: it asks for the head (manifest and signature), verifies it,
// then requests windows of blocks and verifies each on arrival. Frames from the device's blocks
// topic and from carousels are handed to OnFrame.
type Fetcher struct {
	// Request publishes a block request on the device's blocks/req topic.
	Request func(ctx context.Context, r transfer.Request) error
	// Subscribe and Unsubscribe manage the carousel topic of a bundle.
	Subscribe, Unsubscribe func(bundle string) error
	Dir                    string // downloads live in Dir/<bundle id>
	Window                 int    // blocks outstanding (default 16)
	RequestTimeout         time.Duration
	StallTimeout           time.Duration // no verified block for this long: abandon (slow retrieval)
	CarouselWait           time.Duration // how long to wait for a carousel's first frame before pulling
	CarouselIdle           time.Duration // no carousel frame for this long once it flows: pull the rest
	MaxUnexpected          int           // frames that do not fit the manifest before giving up (endless data)

	mu     sync.Mutex
	active map[string]*fetchState
}

type fetchState struct {
	frames chan transfer.Frame
}

// Typed failures a fetch reports.
var (
	ErrStalled  = errors.New("download stalled")
	ErrEndless  = errors.New("download sent more data than the manifest allows")
	ErrMismatch = errors.New("bundle is not the one the desired state names")
	ErrDiskFull = errors.New("not enough free disk space")
)

// OnFrame routes a frame to the download it belongs to; unknown bundles are ignored.
func (f *Fetcher) OnFrame(payload []byte) {
	fr, err := transfer.DecodeFrame(payload)
	if err != nil {
		return
	}
	// The payload buffer belongs to the MQTT client; keep our own copy.
	fr.Data = append([]byte(nil), fr.Data...)
	f.mu.Lock()
	st := f.active[fr.Bundle]
	f.mu.Unlock()
	if st == nil {
		return
	}
	select {
	case st.frames <- fr:
	default: // a full channel means we are behind; the block is requested again later
	}
}

func (f *Fetcher) defaults() {
	if f.Window <= 0 {
		f.Window = 16
	}
	if f.RequestTimeout <= 0 {
		f.RequestTimeout = 3 * time.Second
	}
	if f.StallTimeout <= 0 {
		f.StallTimeout = 60 * time.Second
	}
	if f.CarouselWait <= 0 {
		// A carousel starts a moment after the wave's desired states go out, and a busy control
		// plane or device can take seconds to get there; pulling early costs the whole wave's
		// bandwidth, waiting costs only time.
		f.CarouselWait = 15 * time.Second
	}
	if f.CarouselIdle <= 0 {
		f.CarouselIdle = 3 * time.Second
	}
	if f.MaxUnexpected <= 0 {
		f.MaxUnexpected = 32
	}
}

// Fetch downloads bundle id into Dir/id and returns that folder (payload files plus manifest.json
// and manifest.sig) and the verified manifest. A partial download resumes.
func (f *Fetcher) Fetch(ctx context.Context, id string, carousel bool, verifiers []bundle.Verifier) (string, *bundle.Manifest, transfer.Progress, error) {
	f.defaults()
	st := &fetchState{frames: make(chan transfer.Frame, 4*f.Window+64)}
	f.mu.Lock()
	if f.active == nil {
		f.active = map[string]*fetchState{}
	}
	f.active[id] = st
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.active, id)
		f.mu.Unlock()
	}()
	dir := filepath.Join(f.Dir, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, transfer.Progress{}, fmt.Errorf("create download folder: %w", err)
	}
	if carousel && f.Subscribe != nil {
		if err := f.Subscribe(id); err == nil {
			defer f.Unsubscribe(id)
		}
	}
	m, err := f.head(ctx, id, dir, st, verifiers)
	if err != nil {
		return "", nil, transfer.Progress{}, err
	}
	if free, err := disk.UsageWithContext(ctx, f.Dir); err == nil && free.Free < uint64(2*m.TotalSize()) {
		return "", nil, transfer.Progress{}, fmt.Errorf("%w: bundle needs %d bytes twice over (download and slot), %d free in %s", ErrDiskFull, m.TotalSize(), free.Free, f.Dir)
	}
	d, err := transfer.OpenDownload(id, m, dir)
	if err != nil {
		return "", nil, transfer.Progress{}, err
	}
	defer d.Close()
	unexpected := 0
	lastProgress := time.Now()
	// With a carousel on, listen first; pull only after it goes quiet.
	pull := !carousel
	idle := f.RequestTimeout
	if carousel {
		idle = f.CarouselWait
	}
	// pending remembers when each block was asked for, so a block in flight is not asked for again
	// until RequestTimeout says it was lost.
	type key struct {
		file string
		idx  int64
	}
	pending := map[key]time.Time{}
	request := func() error {
		now := time.Now()
		inFlight := 0
		for k, at := range pending {
			if now.Sub(at) > f.RequestTimeout {
				delete(pending, k)
			} else {
				inFlight++
			}
		}
		room := f.Window - inFlight
		if room <= 0 {
			return nil
		}
		byFile := map[string][]int64{}
		var order []string
		for _, r := range d.Missing(f.Window + inFlight) {
			for _, i := range r.Blocks {
				if _, ok := pending[key{r.File, i}]; ok || room == 0 {
					continue
				}
				if _, seen := byFile[r.File]; !seen {
					order = append(order, r.File)
				}
				byFile[r.File] = append(byFile[r.File], i)
				pending[key{r.File, i}] = now
				room--
			}
		}
		for _, file := range order {
			for _, r := range transfer.Coalesce(id, file, byFile[file]) {
				if err := f.Request(ctx, r); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if pull {
		if err := request(); err != nil {
			return "", nil, d.Progress(), err
		}
	}
	timer := time.NewTimer(idle)
	defer timer.Stop()
	sinceRequest := 0
	for !d.Done() {
		select {
		case <-ctx.Done():
			return "", nil, d.Progress(), ctx.Err()
		case fr := <-st.frames:
			if fr.File == transfer.HeadManifest || fr.File == transfer.HeadSignature {
				continue
			}
			delete(pending, key{fr.File, fr.Index})
			fresh, err := d.Put(fr)
			if err != nil {
				unexpected++
				if unexpected >= f.MaxUnexpected {
					if errors.Is(err, bundle.ErrDigest) || errors.Is(err, bundle.ErrSize) {
						// Blocks that keep failing their signed digests are tampered, not lost.
						return "", nil, d.Progress(), fmt.Errorf("%d blocks failed verification, last: %w", unexpected, err)
					}
					return "", nil, d.Progress(), fmt.Errorf("%w: %d frames did not fit the manifest, last: %v", ErrEndless, unexpected, err)
				}
				continue
			}
			if fresh {
				lastProgress = time.Now()
				sinceRequest++
				if !pull {
					idle = f.CarouselIdle // the carousel flows: from now on a shorter silence ends it
				}
			}
			// Keep the window full when pulling: ask for more once half of it has arrived.
			if pull && sinceRequest >= f.Window/2 {
				sinceRequest = 0
				if err := request(); err != nil {
					return "", nil, d.Progress(), err
				}
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(idle)
		case <-timer.C:
			if time.Since(lastProgress) > f.StallTimeout {
				p := d.Progress()
				return "", nil, p, fmt.Errorf("%w: no verified block for %v (%d of %d blocks)", ErrStalled, f.StallTimeout, p.BlocksHave, p.BlocksTotal)
			}
			pull, idle = true, f.RequestTimeout
			sinceRequest = 0
			if err := request(); err != nil {
				return "", nil, d.Progress(), err
			}
			timer.Reset(idle)
		}
	}
	out, err := d.Finish()
	return out, m, d.Progress(), err
}

// head gets and verifies the manifest and signature, from disk when a previous attempt kept them.
func (f *Fetcher) head(ctx context.Context, id, dir string, st *fetchState, verifiers []bundle.Verifier) (*bundle.Manifest, error) {
	mb, err1 := os.ReadFile(filepath.Join(dir, bundle.ManifestName))
	sig, err2 := os.ReadFile(filepath.Join(dir, bundle.SignatureName))
	if err1 != nil || err2 != nil {
		mb, sig = nil, nil
		deadline := time.Now().Add(f.StallTimeout)
		for mb == nil || sig == nil {
			if err := f.Request(ctx, transfer.Request{Bundle: id, File: transfer.HeadManifest}); err != nil {
				return nil, err
			}
			timer := time.NewTimer(f.RequestTimeout)
		wait:
			for mb == nil || sig == nil {
				select {
				case <-ctx.Done():
					timer.Stop()
					return nil, ctx.Err()
				case <-timer.C:
					break wait
				case fr := <-st.frames:
					switch fr.File {
					case transfer.HeadManifest:
						mb = fr.Data
					case transfer.HeadSignature:
						sig = fr.Data
					}
				}
			}
			timer.Stop()
			if time.Now().After(deadline) && (mb == nil || sig == nil) {
				return nil, fmt.Errorf("%w: no manifest received for %v", ErrStalled, f.StallTimeout)
			}
		}
	}
	sum := sha256.Sum256(mb)
	if got := hex.EncodeToString(sum[:]); got != id {
		return nil, fmt.Errorf("%w: manifest digest %s, desired %s", ErrMismatch, got, id)
	}
	m, err := bundle.VerifyManifest(ctx, mb, sig, verifiers)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, bundle.ManifestName), mb, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, bundle.SignatureName), sig, 0o600); err != nil {
		return nil, err
	}
	return m, nil
}
