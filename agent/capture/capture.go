// Package capture is the device side of sample capture: a bounded in-memory buffer of inputs
// and outputs per model, filled only while a capture is armed (never by default), sealed into an
// age-encrypted file under DATA/captures/<id>/ and uploaded to the control plane in blocks with
// per-block acknowledgements, then deleted once the control plane has the whole capture.
//
// A capture is armed by the control plane's capture command, or by an automatic trigger
// (schedule, drift) only under a standing grant the control plane sent for the device's group.
// Both must say the group's policy permits capture and carry the control plane's age recipient:
// anything else is refused (Check).
package capture

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"

	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/internal/dataset"
	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/transfer"
)

// Limits a command cannot exceed, whatever the control plane says.
const (
	MaxSamples = 100_000
	// DefaultMaxBytes bounds the encoded samples one capture holds in memory.
	DefaultMaxBytes = 64 << 20
	// DefaultArmed is how long a capture waits for its samples before it is sealed with what it has.
	DefaultArmed = time.Hour
)

// Refusals of a capture command or trigger.
var (
	ErrNotPermitted = errors.New("capture not permitted: the device's group has no capture policy enabling it")
	ErrCommand      = errors.New("bad capture command")
	ErrBusy         = errors.New("a capture of this model is already armed")
)

// Check applies the device's rules to a capture command: deny by default. The command must
// say the group's policy permits capture (a missing flag is a refusal), carry a valid capture
// id, model and the control plane's age recipient, and ask for 1..MaxSamples samples.
func Check(c dataset.Command) error {
	switch {
	case c.Permitted == nil || !*c.Permitted:
		return ErrNotPermitted
	case !dataset.ValidID(c.Capture):
		return fmt.Errorf("%w: capture id must be 64 hex characters", ErrCommand)
	case c.Model == "":
		return fmt.Errorf("%w: no model", ErrCommand)
	case c.MaxSamples <= 0 || c.MaxSamples > MaxSamples:
		return fmt.Errorf("%w: max_samples %d outside 1..%d", ErrCommand, c.MaxSamples, MaxSamples)
	case c.Seconds < 0:
		return fmt.Errorf("%w: negative seconds", ErrCommand)
	}
	if _, err := dataset.ParseRecipient(c.Recipient); err != nil {
		return fmt.Errorf("%w: %w", ErrCommand, err)
	}
	return nil
}

// Grant is the control plane's standing permission for automatic captures (the group's policy),
// persisted in DATA/capture-policy.json. The zero value permits nothing.
type Grant struct {
	Permitted  bool   `json:"permitted"`
	MaxSamples int    `json:"max_samples,omitempty"`
	Recipient  string `json:"recipient,omitempty"`
}

// Config of a Manager.
type Config struct {
	Dir     string // DATA/captures
	KeyPath string // DATA/capture.key: the device's age identity
	// GrantPath persists the standing grant (DATA/capture-policy.json).
	GrantPath string
	Device    string
	// Publish sends one upload message (QoS 1) on the device's upload topic; it fails when offline.
	Publish   func(ctx context.Context, payload []byte) error
	BlockSize int64 // default dataset.DefaultBlockSize
	MaxBytes  int64 // default DefaultMaxBytes
	Window    int   // blocks in flight (default 8)
	Resend    time.Duration
	// AfterAck, when set, runs after every acknowledgement of an upload with the blocks held and
	// the total (crash tests kill the process mid-upload from it).
	AfterAck func(have, total int)
	Logger   *slog.Logger
}

// Manager owns the armed captures and the uploads.
type Manager struct {
	cfg   Config
	id    *age.X25519Identity
	armed atomic.Int32 // number of armed captures: the inference hook's fast path

	mu      sync.Mutex
	active  map[string]*active // by model
	recent  map[string]bool    // capture ids seen, so a re-delivered command is ignored
	uploads map[string]*upload
	grant   Grant
	kick    chan struct{}
	sealing sync.WaitGroup
}

type active struct {
	meta     dataset.Manifest
	to       *age.X25519Recipient
	max      int
	lines    [][]byte
	bytes    int64
	deadline time.Time
	version  string
	bundle   string
}

type upload struct {
	m      dataset.Manifest
	data   []byte
	have   map[int64]bool
	sent   map[int64]time.Time
	headAt time.Time
}

// New loads (or creates) the device's capture identity, the standing grant and every sealed
// capture still waiting for upload.
func New(cfg Config) (*Manager, error) {
	if cfg.BlockSize <= 0 {
		cfg.BlockSize = dataset.DefaultBlockSize
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Window <= 0 {
		cfg.Window = 8
	}
	if cfg.Resend <= 0 {
		cfg.Resend = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create capture folder: %w", err)
	}
	id, err := dataset.LoadOrCreateIdentity(cfg.KeyPath)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, id: id, active: map[string]*active{}, recent: map[string]bool{}, uploads: map[string]*upload{}, kick: make(chan struct{}, 1)}
	if b, err := os.ReadFile(cfg.GrantPath); err == nil {
		if err := json.Unmarshal(b, &m.grant); err != nil {
			m.grant = Grant{} // deny by default
		}
	}
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("read capture folder: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || !dataset.ValidID(e.Name()) {
			continue
		}
		u, err := m.load(e.Name())
		if err != nil {
			// An unsealed or torn capture: its samples never got a manifest; drop it.
			cfg.Logger.Warn("dropping an incomplete capture", "capture", e.Name(), "err", err)
			os.RemoveAll(filepath.Join(cfg.Dir, e.Name()))
			continue
		}
		m.uploads[u.m.Capture] = u
		m.recent[u.m.Capture] = true
	}
	return m, nil
}

func (m *Manager) load(id string) (*upload, error) {
	dir := filepath.Join(m.cfg.Dir, id)
	b, err := os.ReadFile(filepath.Join(dir, dataset.FileManifest))
	if err != nil {
		return nil, err
	}
	var man dataset.Manifest
	if err := json.Unmarshal(b, &man); err != nil {
		return nil, err
	}
	if err := man.Check(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, dataset.FileSamples))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != man.SHA256 || int64(len(data)) != man.Size {
		return nil, errors.New("samples file does not match its manifest")
	}
	return &upload{m: man, data: data, have: map[int64]bool{}, sent: map[int64]time.Time{}}, nil
}

// SetGrant replaces the standing grant for automatic captures (the group's policy).
func (m *Manager) SetGrant(c dataset.Command) error {
	g := Grant{}
	if c.Permitted != nil && *c.Permitted {
		if _, err := dataset.ParseRecipient(c.Recipient); err != nil {
			return fmt.Errorf("%w: %w", ErrCommand, err)
		}
		g = Grant{Permitted: true, MaxSamples: min(max(c.MaxSamples, 1), MaxSamples), Recipient: c.Recipient}
	}
	b, _ := json.Marshal(g)
	if err := atomicfile.WriteFile(m.cfg.GrantPath, b, 0o600); err != nil {
		return fmt.Errorf("persist capture grant: %w", err)
	}
	m.mu.Lock()
	m.grant = g
	m.mu.Unlock()
	return nil
}

// Arm starts a capture ordered by the control plane, after Check. A command already seen (a
// re-delivery) is ignored.
func (m *Manager) Arm(c dataset.Command) error {
	if err := Check(c); err != nil {
		return err
	}
	return m.arm(c, dataset.TriggerCommand)
}

// Trigger starts an automatic capture of model (schedule, drift) under the standing grant.
func (m *Manager) Trigger(model, trigger, reason string) (string, error) {
	m.mu.Lock()
	g := m.grant
	m.mu.Unlock()
	raw := make([]byte, 32)
	rand.Read(raw)
	c := dataset.Command{Type: "capture", Capture: hex.EncodeToString(raw), Model: model, MaxSamples: g.MaxSamples,
		Reason: reason, Requester: "device:" + m.cfg.Device, Permitted: &g.Permitted, Recipient: g.Recipient}
	if err := Check(c); err != nil {
		return "", err
	}
	return c.Capture, m.arm(c, trigger)
}

func (m *Manager) arm(c dataset.Command, trigger string) error {
	to, _ := dataset.ParseRecipient(c.Recipient)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.recent[c.Capture] {
		return nil
	}
	if _, busy := m.active[c.Model]; busy {
		return fmt.Errorf("%w: %s", ErrBusy, c.Model)
	}
	d := DefaultArmed
	if c.Seconds > 0 {
		d = time.Duration(c.Seconds) * time.Second
	}
	now := time.Now().UTC()
	m.recent[c.Capture] = true
	m.active[c.Model] = &active{to: to, max: c.MaxSamples, deadline: now.Add(d),
		meta: dataset.Manifest{Capture: c.Capture, Device: m.cfg.Device, Model: c.Model, Trigger: trigger, Reason: c.Reason, Requester: c.Requester, Started: now}}
	m.armed.Add(1)
	m.cfg.Logger.Info("capture armed", "capture", c.Capture, "model", c.Model, "max_samples", c.MaxSamples, "trigger", trigger, "reason", c.Reason, "requester", c.Requester)
	return nil
}

// Armed reports whether model has an armed capture.
func (m *Manager) Armed(model string) bool {
	if m.armed.Load() == 0 {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.active[model]
	return ok
}

// Observe is the inference hook: it records one call of model when a capture of it is armed,
// and costs one atomic load otherwise.
func (m *Manager) Observe(model, version, bundle, id string, in, out []onnxrt.Tensor) {
	if m.armed.Load() == 0 {
		return
	}
	m.mu.Lock()
	a := m.active[model]
	m.mu.Unlock()
	if a == nil {
		return
	}
	s := dataset.Sample{ID: id, At: time.Now().UTC(), Model: model, Version: version, Bundle: bundle}
	for _, t := range in {
		e, err := oip.Encode(t)
		if err != nil {
			return
		}
		s.Inputs = append(s.Inputs, e)
	}
	for _, t := range out {
		e, err := oip.Encode(t)
		if err != nil {
			return
		}
		s.Outputs = append(s.Outputs, e)
	}
	line, err := json.Marshal(s)
	if err != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.active[model] != a || len(a.lines) >= a.max {
		return // sealed meanwhile
	}
	a.lines = append(a.lines, line)
	a.bytes += int64(len(line)) + 1
	a.version, a.bundle = version, bundle
	if len(a.lines) >= a.max || a.bytes >= m.cfg.MaxBytes {
		m.sealLocked(model)
	}
}

// sealLocked takes model's capture out of the armed set and seals it in the background.
func (m *Manager) sealLocked(model string) {
	a := m.active[model]
	delete(m.active, model)
	m.armed.Add(-1)
	m.sealing.Add(1)
	go func() {
		defer m.sealing.Done()
		if err := m.seal(a); err != nil {
			m.cfg.Logger.Error("capture not sealed; its samples are lost", "capture", a.meta.Capture, "err", err)
		}
	}()
}

// seal encrypts the samples to the device and the control plane, writes the capture folder
// (samples first, the manifest last: a folder without a manifest is incomplete) and queues it.
func (m *Manager) seal(a *active) error {
	var ct bytes.Buffer
	w, err := dataset.Encrypt(&ct, m.id.Recipient(), a.to)
	if err != nil {
		return fmt.Errorf("encrypt capture: %w", err)
	}
	for _, l := range a.lines {
		w.Write(l)
		w.Write([]byte{'\n'})
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("encrypt capture: %w", err)
	}
	data := ct.Bytes()
	man := a.meta
	man.Version, man.Bundle, man.Samples, man.Sealed = a.version, a.bundle, len(a.lines), time.Now().UTC()
	man.Size, man.BlockSize = int64(len(data)), m.cfg.BlockSize
	sum := sha256.Sum256(data)
	man.SHA256 = hex.EncodeToString(sum[:])
	for off := int64(0); off < man.Size; off += man.BlockSize {
		s := sha256.Sum256(data[off:min(off+man.BlockSize, man.Size)])
		man.Blocks = append(man.Blocks, hex.EncodeToString(s[:]))
	}
	dir := filepath.Join(m.cfg.Dir, man.Capture)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create capture folder: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, dataset.FileSamples), data, 0o600); err != nil {
		return fmt.Errorf("write capture: %w", err)
	}
	mb, _ := json.Marshal(man)
	if err := atomicfile.WriteFile(filepath.Join(dir, dataset.FileManifest), mb, 0o600); err != nil {
		return fmt.Errorf("write capture manifest: %w", err)
	}
	m.mu.Lock()
	m.uploads[man.Capture] = &upload{m: man, data: data, have: map[int64]bool{}, sent: map[int64]time.Time{}}
	m.mu.Unlock()
	m.cfg.Logger.Info("capture sealed", "capture", man.Capture, "model", man.Model, "samples", man.Samples, "bytes", man.Size)
	m.poke()
	return nil
}

// Flush seals every armed capture that has samples (shutdown, tests).
func (m *Manager) Flush() {
	m.mu.Lock()
	for model, a := range m.active {
		if len(a.lines) > 0 {
			m.sealLocked(model)
		}
	}
	m.mu.Unlock()
	m.sealing.Wait()
}

func (m *Manager) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Pending lists the capture ids waiting for upload.
func (m *Manager) Pending() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for id := range m.uploads {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// OnAck applies the control plane's acknowledgement of an upload.
func (m *Manager) OnAck(a dataset.Ack) {
	m.mu.Lock()
	u := m.uploads[a.Capture]
	if u == nil {
		m.mu.Unlock()
		return
	}
	if a.Complete || a.Refused != "" {
		delete(m.uploads, a.Capture)
		m.mu.Unlock()
		if a.Refused != "" {
			m.cfg.Logger.Warn("control plane refused the capture; deleting it", "capture", a.Capture, "reason", a.Refused)
		} else {
			m.cfg.Logger.Info("capture uploaded; deleting it from the device", "capture", a.Capture, "samples", u.m.Samples)
		}
		if err := os.RemoveAll(filepath.Join(m.cfg.Dir, a.Capture)); err != nil {
			m.cfg.Logger.Error("delete uploaded capture", "capture", a.Capture, "err", err)
		}
		return
	}
	for _, i := range a.Have {
		if i >= 0 && i < int64(len(u.m.Blocks)) {
			u.have[i] = true
			delete(u.sent, i)
		}
	}
	have, total := len(u.have), len(u.m.Blocks)
	m.mu.Unlock()
	if m.cfg.AfterAck != nil {
		m.cfg.AfterAck(have, total)
	}
	m.poke()
}

// Run seals captures past their deadline and uploads sealed ones until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		m.expire()
		m.send(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.kick:
		}
	}
}

func (m *Manager) expire() {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for model, a := range m.active {
		if now.Before(a.deadline) {
			continue
		}
		if len(a.lines) == 0 {
			delete(m.active, model)
			m.armed.Add(-1)
			m.cfg.Logger.Info("capture expired without samples", "capture", a.meta.Capture, "model", model)
			continue
		}
		m.sealLocked(model)
	}
}

// send publishes, per pending upload, the manifest (which the control plane answers with the
// blocks it already holds: resume) and then a window of missing blocks; anything not
// acknowledged within Resend goes again.
func (m *Manager) send(ctx context.Context) {
	now := time.Now()
	type msg struct {
		id string
		b  []byte
		i  int64
	}
	var out []msg
	m.mu.Lock()
	for _, id := range sortedKeys(m.uploads) {
		u := m.uploads[id]
		if now.Sub(u.headAt) >= m.cfg.Resend {
			mb, _ := json.Marshal(u.m)
			out = append(out, msg{id, transfer.Frame{Bundle: id, File: dataset.FileManifest, Data: mb}.Encode(), -1})
			u.headAt = now
			if len(u.have) == 0 && len(u.sent) == 0 {
				continue // first contact: wait for the answer to the manifest (resume)
			}
		}
		inflight := 0
		for _, at := range u.sent {
			if now.Sub(at) < m.cfg.Resend {
				inflight++
			}
		}
		for i := int64(0); i < int64(len(u.m.Blocks)) && inflight < m.cfg.Window; i++ {
			if u.have[i] {
				continue
			}
			if at, ok := u.sent[i]; ok && now.Sub(at) < m.cfg.Resend {
				continue
			}
			off := i * u.m.BlockSize
			out = append(out, msg{id, transfer.Frame{Bundle: id, File: dataset.FileSamples, Index: i, Data: u.data[off : off+u.m.BlockLen(i)]}.Encode(), i})
			u.sent[i] = now
			inflight++
		}
	}
	m.mu.Unlock()
	for _, o := range out {
		if err := m.cfg.Publish(ctx, o.b); err != nil {
			// Offline: forget the send times so the blocks go as soon as we are back.
			m.mu.Lock()
			if u := m.uploads[o.id]; u != nil {
				if o.i < 0 {
					u.headAt = time.Time{}
				} else {
					delete(u.sent, o.i)
				}
			}
			m.mu.Unlock()
			return
		}
	}
}

func sortedKeys(m map[string]*upload) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
