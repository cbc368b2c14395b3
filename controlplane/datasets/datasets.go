// Package datasets is the control plane's side of sample capture: it orders captures from
// devices whose group's capture policy allows them, receives the uploads block by block
// (verified against the manifest's digests, acknowledged per block, resumable), keeps each
// dataset encrypted at rest under DATA/datasets/<id>/ with its lineage in the store, serves the
// samples decrypted as JSON lines or .npy, and deletes datasets past their group's retention.
package datasets

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/edgefleet/edgefleet/controlplane/audit"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/internal/dataset"
	"github.com/edgefleet/edgefleet/ota/transfer"
)

// Bucket holds the dataset records by id.
const Bucket = "datasets"

// States of a dataset.
const (
	StateRequested = "requested" // the command went to the device
	StateRefused   = "refused"   // the device (or the control plane) refused it
	StateUploading = "uploading"
	StateComplete  = "complete"
	StateFailed    = "failed"
)

// Errors the API maps to statuses.
var (
	ErrNotAllowed  = errors.New("capture not allowed")
	ErrNotFound    = errors.New("no such dataset")
	ErrNotComplete = errors.New("dataset not complete")
	ErrFormat      = errors.New("unsupported format")
	ErrRequest     = errors.New("bad capture request")
	ErrUnavailable = errors.New("cannot reach the device")
)

// Record is a dataset's metadata and lineage.
type Record struct {
	ID         string     `json:"id"`
	Device     string     `json:"device"`
	Group      string     `json:"group"`
	Model      string     `json:"model"`
	Version    string     `json:"version,omitempty"`
	Bundle     string     `json:"bundle,omitempty"`
	Trigger    string     `json:"trigger"`
	Reason     string     `json:"reason,omitempty"`
	Requester  string     `json:"requester"`
	MaxSamples int        `json:"max_samples,omitempty"`
	Samples    int        `json:"samples"`
	Size       int64      `json:"size,omitempty"` // encrypted bytes
	State      string     `json:"state"`
	Error      string     `json:"error,omitempty"`
	Requested  time.Time  `json:"requested"`
	Started    *time.Time `json:"started,omitempty"` // first sample on the device
	Sealed     *time.Time `json:"sealed,omitempty"`
	Completed  *time.Time `json:"completed,omitempty"`
	Retention  string     `json:"retention"` // the group's policy retention when it was made
	Expires    time.Time  `json:"expires"`
}

// Config wires a Service.
type Config struct {
	Store   store.Store
	Dir     string // DATA/datasets
	KeyPath string // DATA/dataset.key: the control plane's age identity
	// Command publishes a command on the device's cmd topic (QoS 1).
	Command func(ctx context.Context, device string, payload []byte) error
	// Policy returns a group's capture policy (the zero policy when the group has none).
	Policy func(ctx context.Context, group string) (fleet.CapturePolicy, error)
	// DeviceGroup returns a known device's group.
	DeviceGroup func(device string) (string, bool)
	// MaxSize bounds one dataset's encrypted size (default 256 MiB).
	MaxSize int64
	// Now is the clock (retention tests); default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// OnComplete, when set, is told about every dataset that completed (the retraining webhook).
	OnComplete func(ctx context.Context, r Record)
}

// Service keeps the datasets.
type Service struct {
	cfg Config
	id  *age.X25519Identity

	mu    sync.Mutex
	recv  map[string]*receiving
	queue chan upload // Enqueue -> the worker Run starts
}

type upload struct {
	device  string
	payload []byte
}

type receiving struct {
	m    dataset.Manifest
	f    *os.File
	have map[int64]bool
}

// New opens DATA/datasets and the control plane's identity (DATA/dataset.key, created 0600).
func New(cfg Config) (*Service, error) {
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = 256 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create datasets folder: %w", err)
	}
	id, err := dataset.LoadOrCreateIdentity(cfg.KeyPath)
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, id: id, recv: map[string]*receiving{}, queue: make(chan upload, 1024)}, nil
}

// Recipient is the control plane's age public key, which devices encrypt captures to.
func (s *Service) Recipient() string { return s.id.Recipient().String() }

func newID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// NotAllowed explains how to enable capture for a group.
func NotAllowed(group string) error {
	if group == "" {
		return fmt.Errorf("%w: the device is in no group, and capture is allowed only for groups whose capture policy enables it: put the device in a group (PUT /api/v1/devices/{id}/group), then enable capture with PUT /api/v1/groups/{group} {\"capture\": {\"enabled\": true}}", ErrNotAllowed)
	}
	return fmt.Errorf("%w: group %s has no capture policy enabling it (captured inputs can hold personal data); enable it with PUT /api/v1/groups/%s {\"capture\": {\"enabled\": true, \"retention\": \"720h\", \"max_samples\": 1000}}", ErrNotAllowed, group, group)
}

func (s *Service) policy(ctx context.Context, group string) (fleet.CapturePolicy, error) {
	if group == "" {
		return fleet.CapturePolicy{}, nil
	}
	p, err := s.cfg.Policy(ctx, group)
	if err != nil {
		return fleet.CapturePolicy{}, fmt.Errorf("read capture policy of %s: %w", group, err)
	}
	return p, nil
}

// Request orders a capture of up to max samples (0: the policy's limit; more is capped to it)
// of model from device, in group. It is refused unless the group's policy enables capture.
func (s *Service) Request(ctx context.Context, device, group, model string, max int, reason, by string) (Record, error) {
	if model == "" {
		return Record{}, fmt.Errorf("%w: model is required", ErrRequest)
	}
	if max < 0 {
		return Record{}, fmt.Errorf("%w: max_samples must not be negative", ErrRequest)
	}
	p, err := s.policy(ctx, group)
	if err != nil {
		return Record{}, err
	}
	if !p.Enabled {
		return Record{}, NotAllowed(group)
	}
	if limit := p.MaxSamples; limit > 0 && (max == 0 || max > limit) {
		max = limit
	}
	if max == 0 {
		max = fleet.DefaultCaptureSamples
	}
	now := s.cfg.Now().UTC()
	r := Record{ID: newID(), Device: device, Group: group, Model: model, Trigger: dataset.TriggerCommand, Reason: reason,
		Requester: by, MaxSamples: max, State: StateRequested, Requested: now, Retention: p.RetentionDuration().String(),
		Expires: now.Add(p.RetentionDuration())}
	err = s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		if err := store.PutJSON(tx, Bucket, r.ID, r); err != nil {
			return err
		}
		return audit.Append(tx, audit.Entry{At: now, Who: by, Action: "capture requested", Target: "device " + device + " model " + model + " dataset " + r.ID, Reason: reason})
	})
	if err != nil {
		return Record{}, fmt.Errorf("record capture: %w", err)
	}
	yes := true
	cmd, _ := json.Marshal(dataset.Command{Type: "capture", Capture: r.ID, Model: model, MaxSamples: max, Reason: reason,
		Requester: by, Permitted: &yes, Recipient: s.Recipient()})
	if err := s.cfg.Command(ctx, device, cmd); err != nil {
		s.setState(ctx, r.ID, StateFailed, "command not published: "+err.Error())
		return Record{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.cfg.Logger.Info("capture requested", "dataset", r.ID, "device", device, "model", model, "max_samples", max, "by", by)
	return r, nil
}

// Grant sends a group's policy to one device as its standing grant for automatic captures.
func (s *Service) Grant(ctx context.Context, device string, p fleet.CapturePolicy) error {
	c := dataset.Command{Type: "capture_policy", MaxSamples: p.MaxSamples}
	if p.Enabled {
		yes := true
		c.Permitted, c.Recipient = &yes, s.Recipient()
	}
	b, _ := json.Marshal(c)
	return s.cfg.Command(ctx, device, b)
}

func (s *Service) setState(ctx context.Context, id, state, msg string) {
	s.update(ctx, id, func(r *Record) { r.State, r.Error = state, msg })
}

func (s *Service) update(ctx context.Context, id string, fn func(r *Record)) (Record, error) {
	var r Record
	err := s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		if err := store.GetJSON(tx, Bucket, id, &r); err != nil {
			return err
		}
		fn(&r)
		return store.PutJSON(tx, Bucket, id, r)
	})
	if err != nil {
		s.cfg.Logger.Error("dataset record not updated", "dataset", id, "err", err)
	}
	return r, err
}

// Get returns one dataset's record.
func (s *Service) Get(ctx context.Context, id string) (Record, error) {
	var r Record
	err := s.cfg.Store.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, Bucket, id, &r) })
	if errors.Is(err, store.ErrNotFound) {
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return r, err
}

// Filter selects datasets in List.
type Filter struct{ Device, Group, Model, State string }

// List returns the datasets, newest first.
func (s *Service) List(ctx context.Context, f Filter) ([]Record, error) {
	out := []Record{}
	err := s.cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(Bucket, "", func(_ string, v []byte) error {
			var r Record
			if json.Unmarshal(v, &r) != nil {
				return nil
			}
			if (f.Device == "" || f.Device == r.Device) && (f.Group == "" || f.Group == r.Group) &&
				(f.Model == "" || f.Model == r.Model) && (f.State == "" || f.State == r.State) {
				out = append(out, r)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Requested.After(out[j].Requested) })
	return out, err
}

// Delete removes a dataset's files and record, with an audit entry naming who and why.
func (s *Service) Delete(ctx context.Context, id, by, why string) error {
	s.mu.Lock()
	if rc := s.recv[id]; rc != nil {
		rc.f.Close()
		delete(s.recv, id)
	}
	s.mu.Unlock()
	if !dataset.ValidID(id) {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	err := s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		var r Record
		if err := store.GetJSON(tx, Bucket, id, &r); err != nil {
			return err
		}
		if err := tx.Delete(Bucket, id); err != nil {
			return err
		}
		return audit.Append(tx, audit.Entry{At: s.cfg.Now().UTC(), Who: by, Action: "dataset deleted", Target: "dataset " + id + " device " + r.Device, Reason: why})
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("delete dataset %s: %w", id, err)
	}
	if err := os.RemoveAll(filepath.Join(s.cfg.Dir, id)); err != nil {
		return fmt.Errorf("delete dataset files %s: %w", id, err)
	}
	return nil
}

// Sweep deletes every dataset past its group's current retention (a retention shortened by a
// policy change applies to datasets already kept). It returns how many it deleted.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	all, err := s.List(ctx, Filter{})
	if err != nil {
		return 0, err
	}
	now := s.cfg.Now()
	pols := map[string]time.Duration{}
	n := 0
	for _, r := range all {
		ret, ok := pols[r.Group]
		if !ok {
			p, err := s.policy(ctx, r.Group)
			if err != nil {
				return n, err
			}
			ret = p.RetentionDuration()
			pols[r.Group] = ret
		}
		if now.Before(r.Requested.Add(ret)) {
			continue
		}
		if err := s.Delete(ctx, r.ID, "retention", "older than the group's capture retention "+ret.String()); err != nil && !errors.Is(err, ErrNotFound) {
			return n, err
		}
		s.cfg.Logger.Info("dataset deleted after retention", "dataset", r.ID, "group", r.Group, "retention", ret)
		n++
	}
	return n, nil
}

// Run sweeps every interval until ctx ends.
func (s *Service) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case u := <-s.queue:
				s.HandleUpload(u.device, u.payload)
			}
		}
	}()
	for {
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Error("dataset retention sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for id, rc := range s.recv {
				rc.f.Close()
				delete(s.recv, id)
			}
			s.mu.Unlock()
			return
		case <-t.C:
		}
	}
}

// Samples prepares a complete dataset's samples, decrypted, in format "jsonl" (one sample per
// line, as the device recorded it) or "npy" (the single input of every sample stacked along the
// first axis). It returns the content type and a function that writes them.
func (s *Service) Samples(ctx context.Context, id, format string) (string, func(io.Writer) error, error) {
	r, err := s.Get(ctx, id)
	if err != nil {
		return "", nil, err
	}
	if r.State != StateComplete {
		return "", nil, fmt.Errorf("%w: dataset %s is %s", ErrNotComplete, id, r.State)
	}
	open := func() (io.Reader, io.Closer, error) {
		f, err := os.Open(filepath.Join(s.cfg.Dir, id, dataset.FileSamples))
		if err != nil {
			return nil, nil, fmt.Errorf("open dataset %s: %w", id, err)
		}
		pr, err := dataset.Decrypt(f, s.id)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("decrypt dataset %s: %w", id, err)
		}
		return pr, f, nil
	}
	switch format {
	case "", "jsonl":
		return "application/jsonl", func(w io.Writer) error {
			pr, c, err := open()
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = io.Copy(w, pr)
			return err
		}, nil
	case "npy":
		pr, c, err := open()
		if err != nil {
			return "", nil, err
		}
		defer c.Close()
		var st dataset.Stack
		if err := dataset.ReadSamples(pr, func(_ []byte, smp dataset.Sample) error { return st.Add(smp) }); err != nil {
			if errors.Is(err, dataset.ErrNPY) {
				return "", nil, fmt.Errorf("%w: %w", ErrFormat, err)
			}
			return "", nil, err
		}
		return "application/octet-stream", func(w io.Writer) error { _, err := st.WriteTo(w); return err }, nil
	}
	return "", nil, fmt.Errorf("%w: %q: use jsonl or npy", ErrFormat, format)
}

// HandleResult takes a device's answer to a capture command (cmd/result).
func (s *Service) HandleResult(device string, payload []byte) {
	var res struct {
		Type    string `json:"type"`
		Capture string `json:"capture"`
		OK      bool   `json:"ok"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(payload, &res) != nil || res.Type != "capture" || !dataset.ValidID(res.Capture) || res.OK {
		return
	}
	ctx := context.Background()
	r, err := s.Get(ctx, res.Capture)
	if err != nil || r.Device != device || r.State != StateRequested {
		return
	}
	s.setState(ctx, r.ID, StateRefused, "the device refused: "+res.Error)
}

func (s *Service) ack(device string, a dataset.Ack) {
	a.Type = "capture_ack"
	b, _ := json.Marshal(a)
	if err := s.cfg.Command(context.Background(), device, b); err != nil {
		s.cfg.Logger.Debug("capture ack not sent; the device asks again", "device", device, "err", err)
	}
}

// Enqueue hands an upload frame to the worker Run starts, without blocking: the MQTT client's
// goroutine must not wait for the acknowledgements HandleUpload publishes. Past 1024 waiting,
// frames are dropped; the device sends them again.
func (s *Service) Enqueue(device string, payload []byte) {
	select {
	case s.queue <- upload{device, bytes.Clone(payload)}:
	default:
		s.cfg.Logger.Debug("upload frame dropped: queue full", "device", device)
	}
}

// HandleUpload takes one upload frame from device: the manifest (answered with the blocks
// already held, so an interrupted upload resumes) or one block (verified, written, acknowledged).
func (s *Service) HandleUpload(device string, payload []byte) {
	f, err := transfer.DecodeFrame(payload)
	if err != nil || !dataset.ValidID(f.Bundle) {
		s.cfg.Logger.Debug("upload frame refused", "device", device, "err", err)
		return
	}
	switch f.File {
	case dataset.FileManifest:
		s.onManifest(device, f.Data)
	case dataset.FileSamples:
		s.onBlock(device, f)
	}
}

func (s *Service) onManifest(device string, b []byte) {
	ctx := context.Background()
	var m dataset.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return
	}
	if err := m.Check(); err != nil {
		s.cfg.Logger.Warn("capture manifest refused", "device", device, "err", err)
		return
	}
	m.Device = device
	if m.Size > s.cfg.MaxSize {
		s.ack(device, dataset.Ack{Capture: m.Capture, Refused: fmt.Sprintf("%d bytes is over the control plane's limit of %d", m.Size, s.cfg.MaxSize)})
		return
	}
	r, err := s.Get(ctx, m.Capture)
	switch {
	case errors.Is(err, ErrNotFound) && m.Trigger == dataset.TriggerCommand:
		// An ordered capture always has a record; without one it was deleted meanwhile.
		s.ack(device, dataset.Ack{Capture: m.Capture, Refused: "no such capture here (deleted?)"})
		return
	case errors.Is(err, ErrNotFound):
		if r, err = s.automatic(ctx, device, m); err != nil {
			s.cfg.Logger.Warn("automatic capture refused", "device", device, "capture", m.Capture, "err", err)
			s.ack(device, dataset.Ack{Capture: m.Capture, Refused: err.Error()})
			return
		}
	case err != nil:
		return
	case r.Device != device:
		s.cfg.Logger.Warn("upload for another device's capture refused", "device", device, "capture", m.Capture)
		return
	case r.State == StateComplete:
		s.ack(device, dataset.Ack{Capture: m.Capture, Complete: true})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rc := s.recv[m.Capture]
	if rc == nil {
		if rc, err = s.open(m); err != nil {
			s.cfg.Logger.Error("cannot receive capture", "capture", m.Capture, "err", err)
			return
		}
		s.recv[m.Capture] = rc
		sealed, started := m.Sealed, m.Started
		s.update(ctx, m.Capture, func(r *Record) {
			r.State, r.Version, r.Bundle, r.Samples, r.Size, r.Sealed, r.Started = StateUploading, m.Version, m.Bundle, m.Samples, m.Size, &sealed, &started
		})
	}
	have := make([]int64, 0, len(rc.have))
	for i := range rc.have {
		have = append(have, i)
	}
	sort.Slice(have, func(i, j int) bool { return have[i] < have[j] })
	s.ack(device, dataset.Ack{Capture: m.Capture, Have: have})
	if len(rc.have) == len(m.Blocks) {
		s.finishLocked(device, rc)
	}
}

// automatic records a capture the device started itself (schedule, drift) if its group's
// policy allows it, with an audit entry: who (the device) and why (its reason).
func (s *Service) automatic(ctx context.Context, device string, m dataset.Manifest) (Record, error) {
	group, ok := s.cfg.DeviceGroup(device)
	if !ok {
		return Record{}, errors.New("unknown device")
	}
	p, err := s.policy(ctx, group)
	if err != nil {
		return Record{}, err
	}
	if !p.Enabled || (p.MaxSamples > 0 && m.Samples > p.MaxSamples) {
		err := NotAllowed(group)
		if p.Enabled {
			err = fmt.Errorf("%w: %d samples, the policy allows %d", ErrNotAllowed, m.Samples, p.MaxSamples)
		}
		audit.Record(ctx, s.cfg.Store, audit.Entry{At: s.cfg.Now().UTC(), Who: "device:" + device, Action: "automatic capture refused", Target: "device " + device + " model " + m.Model, Reason: m.Reason, Outcome: "refused"})
		return Record{}, err
	}
	now := s.cfg.Now().UTC()
	r := Record{ID: m.Capture, Device: device, Group: group, Model: m.Model, Trigger: m.Trigger, Reason: m.Reason,
		Requester: "device:" + device, MaxSamples: m.Samples, State: StateRequested, Requested: now,
		Retention: p.RetentionDuration().String(), Expires: now.Add(p.RetentionDuration())}
	err = s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		if err := store.PutJSON(tx, Bucket, r.ID, r); err != nil {
			return err
		}
		return audit.Append(tx, audit.Entry{At: now, Who: "device:" + device, Action: "automatic capture (" + m.Trigger + ")", Target: "device " + device + " model " + m.Model + " dataset " + r.ID, Reason: m.Reason})
	})
	return r, err
}

// open creates (or reopens, re-verifying every block already written) the partial file.
func (s *Service) open(m dataset.Manifest) (*receiving, error) {
	dir := filepath.Join(s.cfg.Dir, m.Capture)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	mb, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(dir, dataset.FileManifest), mb, 0o600); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, dataset.FileSamples+".part"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	rc := &receiving{m: m, f: f, have: map[int64]bool{}}
	buf := make([]byte, m.BlockSize)
	for i := range int64(len(m.Blocks)) {
		n := m.BlockLen(i)
		if _, err := f.ReadAt(buf[:n], i*m.BlockSize); err != nil {
			continue
		}
		if sum := sha256.Sum256(buf[:n]); hex.EncodeToString(sum[:]) == m.Blocks[i] {
			rc.have[i] = true
		}
	}
	return rc, nil
}

func (s *Service) onBlock(device string, f transfer.Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rc := s.recv[f.Bundle]
	if rc == nil || rc.m.Device != device {
		return // no manifest yet (the device sends it again) or not this device's
	}
	m := rc.m
	if f.Index >= int64(len(m.Blocks)) || int64(len(f.Data)) != m.BlockLen(f.Index) {
		return
	}
	if sum := sha256.Sum256(f.Data); hex.EncodeToString(sum[:]) != m.Blocks[f.Index] {
		s.cfg.Logger.Warn("capture block fails its digest", "device", device, "capture", m.Capture, "block", f.Index)
		return
	}
	if !rc.have[f.Index] {
		if _, err := rc.f.WriteAt(f.Data, f.Index*m.BlockSize); err != nil {
			s.cfg.Logger.Error("write capture block", "capture", m.Capture, "err", err)
			return
		}
		rc.have[f.Index] = true
	}
	s.ack(device, dataset.Ack{Capture: m.Capture, Have: []int64{f.Index}})
	if len(rc.have) == len(m.Blocks) {
		s.finishLocked(device, rc)
	}
}

// finishLocked checks the whole file (digest, decryption, sample count), makes it the dataset
// and tells the device it may delete its copy. Caller holds mu.
func (s *Service) finishLocked(device string, rc *receiving) {
	ctx := context.Background()
	m := rc.m
	delete(s.recv, m.Capture)
	fail := func(msg string) {
		rc.f.Close()
		s.setState(ctx, m.Capture, StateFailed, msg)
		s.cfg.Logger.Error("capture failed", "capture", m.Capture, "err", msg)
		s.ack(device, dataset.Ack{Capture: m.Capture, Refused: msg})
	}
	if err := rc.f.Truncate(m.Size); err != nil {
		fail(err.Error())
		return
	}
	if err := rc.f.Sync(); err != nil {
		fail(err.Error())
		return
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(rc.f, 0, m.Size)); err != nil || hex.EncodeToString(h.Sum(nil)) != m.SHA256 {
		fail("the assembled file does not match the manifest's digest")
		return
	}
	pr, err := dataset.Decrypt(io.NewSectionReader(rc.f, 0, m.Size), s.id)
	if err != nil {
		fail("the capture is not encrypted to this control plane: " + err.Error())
		return
	}
	n := 0
	if err := dataset.ReadSamples(pr, func([]byte, dataset.Sample) error { n++; return nil }); err != nil || n != m.Samples {
		fail(fmt.Sprintf("the capture holds %d readable samples, its manifest says %d (%v)", n, m.Samples, err))
		return
	}
	rc.f.Close()
	dir := filepath.Join(s.cfg.Dir, m.Capture)
	if err := os.Rename(filepath.Join(dir, dataset.FileSamples+".part"), filepath.Join(dir, dataset.FileSamples)); err != nil {
		fail(err.Error())
		return
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	now := s.cfg.Now().UTC()
	s.update(ctx, m.Capture, func(r *Record) { r.State, r.Samples, r.Size, r.Completed, r.Error = StateComplete, n, m.Size, &now, "" })
	s.cfg.Logger.Info("dataset complete", "dataset", m.Capture, "device", device, "model", m.Model, "samples", n, "bytes", m.Size)
	s.ack(device, dataset.Ack{Capture: m.Capture, Complete: true})
	if s.cfg.OnComplete != nil {
		if r, err := s.Get(ctx, m.Capture); err == nil {
			s.cfg.OnComplete(ctx, r)
		}
	}
}
