// Package fleet is the control plane's device registry: which devices exist, their group and
// labels, whether they are online, what they last reported and how healthy they are. It turns
// fleet MQTT messages into registry state, refusing malformed ones without letting them touch the
// registry, and persists through the store interface.
package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/telemetry"
)

const bucketDevices = "devices"

// bucketGroupChoices holds the groups set through the API (device id -> groupChoice), apart from
// the device records, which every replica rewrites from what it hears: a replica adopts a newer
// choice from here (SyncGroups) instead of overwriting it with what it had.
const bucketGroupChoices = "device_groups"

type groupChoice struct {
	Group string    `json:"group"`
	At    time.Time `json:"at"`
}

// DefaultGroup is where a device lands when it asks for no group.
const DefaultGroup = "default"

var groupRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ErrGroup is returned for an invalid group name.
var ErrGroup = errors.New("invalid group name")

// CheckGroup validates a group name (same alphabet as device ids).
func CheckGroup(g string) error {
	if !groupRe.MatchString(g) {
		return fmt.Errorf("%w %q: use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit", ErrGroup, g)
	}
	return nil
}

// ErrNotFound is returned for an unknown device.
var ErrNotFound = errors.New("device not found")

// Device is one registry entry.
type Device struct {
	ID        string            `json:"id"`
	Group     string            `json:"group"`
	Labels    map[string]string `json:"labels,omitempty"`
	Online    bool              `json:"online"`
	Session   uint64            `json:"session"`
	FirstSeen time.Time         `json:"first_seen"`
	LastSeen  time.Time         `json:"last_seen"`
	// StatusAt is when online/offline last changed.
	StatusAt time.Time `json:"status_at,omitzero"`
	// GroupAt is when the API last set Group (zero: the group of its first registration).
	GroupAt   time.Time         `json:"group_at,omitzero"`
	Reported  *wire.Reported    `json:"reported,omitempty"`
	Health    *telemetry.Health `json:"health,omitempty"`
	HealthAt  time.Time         `json:"health_at,omitzero"`
	LastSeq   uint64            `json:"last_seq"`
	Malformed uint64            `json:"malformed,omitempty"`
}

// Registry holds every device in memory (the fleet is read far more often than it changes) and
// writes changed entries to the store in batches: one transaction per flush, not per message.
// State changes that must never be lost (registration, online/offline, group) are flushed at
// once; last_seen and health ride the next periodic flush.
type Registry struct {
	st     store.Store
	topics wire.Topics
	log    *slog.Logger
	now    func() time.Time

	mu      sync.RWMutex
	devices map[string]*Device
	// sorted holds the devices in id order (the list API's order), so a page of a large fleet
	// is a walk without a sort; devices are only ever added.
	sorted []*Device
	dirty  map[string]bool
	urgent chan struct{}

	malformed atomic.Uint64
	accepted  atomic.Uint64
}

// Open loads the registry from the store.
func Open(ctx context.Context, st store.Store, topics wire.Topics, log *slog.Logger) (*Registry, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Registry{st: st, topics: topics, log: log, now: time.Now, devices: map[string]*Device{}, dirty: map[string]bool{}, urgent: make(chan struct{}, 1)}
	err := st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucketDevices, "", func(k string, v []byte) error {
			var d Device
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("decode device %s: %w", k, err)
			}
			r.devices[d.ID] = &d
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load registry: %w", err)
	}
	for _, d := range r.devices {
		r.sorted = append(r.sorted, d)
	}
	sort.Slice(r.sorted, func(i, j int) bool { return r.sorted[i].ID < r.sorted[j].ID })
	return r, nil
}

// Run flushes dirty entries every interval and whenever an urgent change arrives, until ctx ends;
// then it flushes once more.
func (r *Registry) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := r.Flush(context.Background()); err != nil {
				r.log.Error("final registry flush failed", "err", err)
			}
			return
		case <-t.C:
		case <-r.urgent:
		}
		if err := r.Flush(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("registry flush failed; will retry", "err", err)
		}
	}
}

// Flush writes every changed device in one transaction.
func (r *Registry) Flush(ctx context.Context) error {
	r.mu.Lock()
	if len(r.dirty) == 0 {
		r.mu.Unlock()
		return nil
	}
	batch := make(map[string][]byte, len(r.dirty))
	for id := range r.dirty {
		b, err := json.Marshal(r.devices[id])
		if err != nil {
			r.mu.Unlock()
			return fmt.Errorf("encode device %s: %w", id, err)
		}
		batch[id] = b
	}
	r.dirty = map[string]bool{}
	r.mu.Unlock()
	err := r.write(ctx, batch)
	if err != nil {
		// Put them back so the next flush retries; newer changes already in dirty stay.
		r.mu.Lock()
		for id := range batch {
			r.dirty[id] = true
		}
		r.mu.Unlock()
		return fmt.Errorf("flush %d devices: %w", len(batch), err)
	}
	return nil
}

// write stores the batch: in one transaction, or, on a store that caps transactions (etcd), in
// several; devices are independent of each other, so a crash between them loses nothing that the
// next flush does not write again.
func (r *Registry) write(ctx context.Context, batch map[string][]byte) error {
	per := store.WritesPerTx(r.st)
	if per <= 0 {
		per = len(batch)
	}
	ids := make([]string, 0, len(batch))
	for id := range batch {
		ids = append(ids, id)
	}
	for len(ids) > 0 {
		n := min(per, len(ids))
		chunk := ids[:n]
		ids = ids[n:]
		err := r.st.Update(ctx, func(tx store.Tx) error {
			for _, id := range chunk {
				if err := tx.Put(bucketDevices, id, batch[id]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *Registry) markDirty(id string, urgent bool) {
	r.dirty[id] = true
	if urgent {
		select {
		case r.urgent <- struct{}{}:
		default:
		}
	}
}

// ErrMalformed wraps every reason a fleet message was refused.
var ErrMalformed = errors.New("malformed fleet message")

// HandleMessage applies one fleet message. Malformed messages are counted, logged with the
// device id, and change nothing but the device's malformed counter; the error says why.
func (r *Registry) HandleMessage(topic string, payload []byte) error {
	err := r.handle(topic, payload)
	if err == nil {
		r.accepted.Add(1)
		return nil
	}
	r.malformed.Add(1)
	p, perr := r.topics.Parse(topic)
	dev := ""
	if perr == nil {
		dev = p.Device
		r.mu.Lock()
		if d := r.devices[dev]; d != nil {
			d.Malformed++
			r.markDirty(dev, false)
		}
		r.mu.Unlock()
	}
	r.log.Warn("refused fleet message", "device", dev, "topic", truncate(topic, 200), "bytes", len(payload), "err", err)
	return err
}

// Stats returns counts of accepted and malformed messages since start.
func (r *Registry) Stats() (accepted, malformed uint64) {
	return r.accepted.Load(), r.malformed.Load()
}

func (r *Registry) handle(topic string, payload []byte) error {
	p, err := r.topics.Parse(topic)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch p.Kind {
	case wire.KindStatus:
		if len(payload) == 0 {
			return nil // a cleared retained status: nothing to learn
		}
		var s wire.Status
		if err := decode(payload, wire.MaxStatusBytes, &s); err != nil {
			return err
		}
		return r.applyStatus(p.Device, s)
	case wire.KindReported:
		if len(payload) == 0 {
			return nil
		}
		var rep wire.Reported
		if err := decode(payload, wire.MaxReportedBytes, &rep); err != nil {
			return err
		}
		if rep.Device != p.Device {
			return fmt.Errorf("%w: reported body names device %q but topic names %q", ErrMalformed, rep.Device, p.Device)
		}
		return r.applyReported(p.Device, rep)
	case wire.KindTelemetry:
		var m wire.Telemetry
		if err := decode(payload, wire.MaxTelemetryBytes, &m); err != nil {
			return err
		}
		if m.Device != p.Device {
			return fmt.Errorf("%w: telemetry body names device %q but topic names %q", ErrMalformed, m.Device, p.Device)
		}
		if m.Kind != p.Sub {
			return fmt.Errorf("%w: telemetry body kind %q but topic kind %q", ErrMalformed, m.Kind, p.Sub)
		}
		if m.Seq == 0 {
			return fmt.Errorf("%w: telemetry without a sequence number", ErrMalformed)
		}
		return r.applyTelemetry(p.Device, m)
	default:
		// Other kinds belong to other parts of the control plane.
		return nil
	}
}

func decode(payload []byte, limit int, v any) error {
	if len(payload) > limit {
		return fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrMalformed, len(payload), limit)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the JSON document", ErrMalformed)
	}
	return nil
}

// ensure returns the device, registering it on first sight. Caller holds mu.
func (r *Registry) ensure(id, group string, labels map[string]string) (*Device, bool) {
	if d, ok := r.devices[id]; ok {
		return d, false
	}
	if group == "" || CheckGroup(group) != nil {
		if group != "" {
			r.log.Warn("device asked for an invalid group; registering in the default group", "device", id, "group", group)
		}
		group = DefaultGroup
	}
	now := r.now()
	d := &Device{ID: id, Group: group, Labels: cleanLabels(labels), FirstSeen: now, LastSeen: now}
	r.devices[id] = d
	i := sort.Search(len(r.sorted), func(i int) bool { return r.sorted[i].ID >= id })
	r.sorted = slices.Insert(r.sorted, i, d)
	r.log.Info("device registered", "device", id, "group", group)
	return d, true
}

func cleanLabels(in map[string]string) map[string]string {
	if len(in) == 0 {
		return nil
	}
	out := map[string]string{}
	for k, v := range in {
		if len(out) >= 32 || len(k) > 63 || len(v) > 256 || k == "" {
			continue
		}
		out[k] = v
	}
	return out
}

func (r *Registry) applyStatus(id string, s wire.Status) error {
	if s.State != wire.StateOnline && s.State != wire.StateOffline {
		return fmt.Errorf("%w: status state %q is neither online nor offline", ErrMalformed, s.State)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	d, created := r.ensure(id, s.Group, s.Labels)
	now := r.now()
	switch s.State {
	case wire.StateOnline:
		// An online status is always news: even a lower session means the device lost its state
		// folder and started counting again.
		if !d.Online || s.Session != d.Session {
			d.StatusAt = now
		}
		d.Online, d.Session = true, s.Session
		d.LastSeen = now
	case wire.StateOffline:
		// A Last Will from an older session arrives late when a device reconnected before the broker
		// noticed the old connection had died; it must not mark a live device offline.
		if s.Session < d.Session {
			r.log.Debug("ignored stale offline status", "device", id, "session", s.Session, "current", d.Session)
			if created {
				r.markDirty(id, true)
			}
			return nil
		}
		if d.Online {
			d.StatusAt = now
		}
		d.Online = false
		d.Session = s.Session
	}
	r.markDirty(id, true)
	return nil
}

func (r *Registry) applyReported(id string, rep wire.Reported) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, urgent := r.ensure(id, rep.Group, rep.Labels)
	d.Reported = &rep
	now := r.now()
	d.LastSeen = now
	// A report from a newer session than any status seen proves the device connected again: its
	// online status was lost or is still on its way (brokers do not order messages across topics,
	// and a clustered broker may deliver a retained status late). Only a strictly newer session
	// counts, so a report of an old session cannot undo that session's Last Will.
	if rep.Session > d.Session {
		if !d.Online {
			d.StatusAt = now
		}
		d.Online, d.Session = true, rep.Session
		urgent = true // presence changed
	}
	r.markDirty(id, urgent)
	return nil
}

func (r *Registry) applyTelemetry(id string, m wire.Telemetry) error {
	var h *telemetry.Health
	if m.Kind == telemetry.KindHealth {
		h = new(telemetry.Health)
		if err := json.Unmarshal(m.Body, h); err != nil {
			return fmt.Errorf("%w: health body: %v", ErrMalformed, err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	d, created := r.ensure(id, "", nil)
	now := r.now()
	d.LastSeen = now
	// As for reports: only a strictly newer session proves a new connection; telemetry of the
	// current session may be a late delivery from before the device's Last Will.
	if m.Session > d.Session {
		if !d.Online {
			d.StatusAt = now
		}
		d.Online, d.Session = true, m.Session
		created = true // presence changed: flush now
	}
	if h != nil {
		d.Health, d.HealthAt = h, now
	}
	if m.Seq > d.LastSeq {
		d.LastSeq = m.Seq
	}
	r.markDirty(id, created)
	return nil
}

// Filter narrows List.
type Filter struct {
	Group  string
	Online *bool
	// Search matches a substring of the id or of any label value.
	Search string
}

// List returns copies of the matching devices, sorted by id.
func (r *Registry) List(f Filter) []Device {
	out, _ := r.Page(f, 0, 0)
	return out
}

// Page returns copies of the matching devices sorted by id, from offset, at most limit of them
// (0: all), and how many match in all. Only the page is copied, so a paged list of a large fleet
// costs one walk of the id-ordered index.
func (r *Registry) Page(f Filter, offset, limit int) ([]Device, int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var match []*Device
	total := 0
	for _, d := range r.sorted {
		if f.Group != "" && d.Group != f.Group {
			continue
		}
		if f.Online != nil && d.Online != *f.Online {
			continue
		}
		if f.Search != "" && !matches(d, f.Search) {
			continue
		}
		if total >= offset && (limit <= 0 || len(match) < limit) {
			match = append(match, d)
		}
		total++
	}
	out := make([]Device, len(match))
	for i, d := range match {
		out[i] = copyDevice(d)
	}
	return out, total
}

func matches(d *Device, s string) bool {
	if strings.Contains(d.ID, s) {
		return true
	}
	for _, v := range d.Labels {
		if strings.Contains(v, s) {
			return true
		}
	}
	return false
}

func copyDevice(d *Device) Device {
	c := *d
	c.Labels = maps.Clone(d.Labels)
	return c
}

// Get returns one device.
func (r *Registry) Get(id string) (Device, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.devices[id]
	if !ok {
		return Device{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return copyDevice(d), nil
}

// SetGroup moves a device to another group and persists it before returning.
func (r *Registry) SetGroup(ctx context.Context, id, group string) (Device, error) {
	if err := CheckGroup(group); err != nil {
		return Device{}, err
	}
	r.mu.Lock()
	d, ok := r.devices[id]
	if !ok {
		r.mu.Unlock()
		return Device{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	now := r.now().UTC()
	d.Group, d.GroupAt = group, now
	r.markDirty(id, false)
	c := copyDevice(d)
	r.mu.Unlock()
	err := r.st.Update(ctx, func(tx store.Tx) error {
		return store.PutJSON(tx, bucketGroupChoices, id, groupChoice{Group: group, At: now})
	})
	if err != nil {
		return Device{}, fmt.Errorf("record group of %s: %w", id, err)
	}
	if err := r.Flush(ctx); err != nil {
		return Device{}, err
	}
	return c, nil
}

// SyncGroups adopts the groups set through the API that are newer than what the registry holds:
// those another control-plane replica set on a store they share. It returns how many changed.
func (r *Registry) SyncGroups(ctx context.Context) (int, error) {
	choices := map[string]groupChoice{}
	err := r.st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucketGroupChoices, "", func(id string, v []byte) error {
			var c groupChoice
			if json.Unmarshal(v, &c) == nil && CheckGroup(c.Group) == nil {
				choices[id] = c
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("read group choices: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id, c := range choices {
		if d := r.devices[id]; d != nil && c.At.After(d.GroupAt) {
			d.Group, d.GroupAt = c.Group, c.At
			r.markDirty(id, false)
			n++
		}
	}
	return n, nil
}

// GroupSummary is one group as the API shows it.
type GroupSummary struct {
	Name    string `json:"name"`
	Devices int    `json:"devices"`
	Online  int    `json:"online"`
}

// Groups summarises the groups that have devices.
func (r *Registry) Groups() []GroupSummary {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m := map[string]*GroupSummary{}
	for _, d := range r.devices {
		g := m[d.Group]
		if g == nil {
			g = &GroupSummary{Name: d.Group}
			m[d.Group] = g
		}
		g.Devices++
		if d.Online {
			g.Online++
		}
	}
	names := slices.Sorted(maps.Keys(m))
	out := make([]GroupSummary, 0, len(names))
	for _, n := range names {
		out = append(out, *m[n])
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
