// Package ingest commits device telemetry to the store in batches (one transaction per batch, not
// per message) and acknowledges to each device the highest contiguous sequence number it has
// committed, never more: brokers drop acknowledged QoS 1 messages under overload, so delivery is
// accounted end to end and a device keeps everything unacknowledged in its spool. Duplicates are
// ignored, gaps counted (and filled when the device re-sends).
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/internal/wire"
)

const (
	bucketData = "telemetry"     // key device/kind/%020d seq -> message
	bucketSeq  = "telemetry_seq" // key device -> deviceSeq
)

// Publisher sends an ack.
type Publisher func(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error

// deviceSeq is the accounting of one device, persisted with the data it describes.
type deviceSeq struct {
	Contiguous uint64   `json:"contiguous"`        // every seq <= this is committed
	Above      []uint64 `json:"above,omitempty"`   // committed seqs past a gap
	Dupes      uint64   `json:"duplicates"`        // messages already committed
	Gaps       uint64   `json:"gaps"`              // times a message arrived past a hole
	Dropped    uint64   `json:"dropped,omitempty"` // seqs the device reported lost
}

// Stats are counters since start.
type Stats struct {
	Received, Committed, Duplicates, Batches, Acks int64
}

// Ingest is the telemetry pipeline.
type Ingest struct {
	st        store.Store
	publish   Publisher
	topics    wire.Topics
	log       *slog.Logger
	retention time.Duration
	interval  time.Duration
	maxBatch  int

	// shared: other control planes write this store too (a replica set on PostgreSQL), so the
	// accounting cache may be stale; every batch reads it from the store instead.
	shared bool

	mu      sync.Mutex
	pending []wire.Telemetry
	kick    chan struct{}
	seqs    map[string]*deviceSeq // cache of the store's accounting

	received, committed, dupes, batches, acks atomic.Int64
}

// New returns an ingest pipeline.
func New(st store.Store, publish Publisher, topics wire.Topics, retention time.Duration, log *slog.Logger) *Ingest {
	if retention <= 0 {
		retention = 7 * 24 * time.Hour
	}
	return &Ingest{st: st, publish: publish, topics: topics, log: log, retention: retention, interval: 200 * time.Millisecond,
		maxBatch: 512, kick: make(chan struct{}, 1), seqs: map[string]*deviceSeq{}}
}

// Retention is how long messages are kept: Prune deletes older ones.
func (in *Ingest) Retention() time.Duration { return in.retention }

// SharedStore tells the pipeline that other control planes write the same telemetry store (the
// PostgreSQL telemetry store of a replica set): a device's shard may have moved away and back
// since this process last saw it, so its accounting is read from the store in every batch (one
// query per batch where the store can read many keys at once) instead of from this process's
// cache. Call it before Run.
func (in *Ingest) SharedStore() { in.shared = true }

// CarryAccounting copies each device's sequence accounting from one store to another that has
// none for it, and returns how many it copied. A control plane that moves its telemetry to a new
// store (the main store to PostgreSQL) calls it before Run: without the accounting, the new store
// would wait forever for sequence numbers the devices were acknowledged long ago and deleted.
// Messages are not copied: the history stays where it was.
func CarryAccounting(ctx context.Context, from, to store.Store) (int, error) {
	old := map[string][]byte{}
	if err := from.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucketSeq, "", func(dev string, v []byte) error { old[dev] = v; return nil })
	}); err != nil || len(old) == 0 {
		return 0, err
	}
	err := to.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucketSeq, "", func(dev string, _ []byte) error { delete(old, dev); return nil })
	})
	if err != nil || len(old) == 0 {
		return 0, err
	}
	n := 0
	err = to.Update(ctx, func(tx store.Tx) error {
		n = 0
		have := map[string][]byte{}
		mg, batched := tx.(store.MultiGetter)
		if batched { // one query, not one per device
			devs := make([]string, 0, len(old))
			for dev := range old {
				devs = append(devs, dev)
			}
			var err error
			if have, err = mg.GetMany(bucketSeq, devs); err != nil {
				return err
			}
		}
		for dev, v := range old {
			if _, ok := have[dev]; ok {
				continue // another replica got there first
			}
			if !batched {
				if _, err := tx.Get(bucketSeq, dev); err == nil {
					continue
				} else if !errors.Is(err, store.ErrNotFound) {
					return err
				}
			}
			if err := tx.Put(bucketSeq, dev, v); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// Handle queues a validated telemetry message. It never blocks on the store.
func (in *Ingest) Handle(m wire.Telemetry) {
	in.received.Add(1)
	in.mu.Lock()
	in.pending = append(in.pending, m)
	n := len(in.pending)
	in.mu.Unlock()
	if n >= in.maxBatch {
		select {
		case in.kick <- struct{}{}:
		default:
		}
	}
}

// Run commits batches until ctx ends, then commits what is left.
func (in *Ingest) Run(ctx context.Context) {
	t := time.NewTicker(in.interval)
	defer t.Stop()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			in.Flush(context.Background())
			return
		case <-t.C:
		case <-in.kick:
		case <-prune.C:
			if err := in.Prune(ctx, time.Now()); err != nil {
				in.log.Warn("telemetry retention pass failed", "err", err)
			}
		}
		if err := in.Flush(ctx); err != nil && ctx.Err() == nil {
			in.log.Error("telemetry batch not committed; devices will re-send", "err", err)
		}
	}
}

func dataKey(device, kind string, seq uint64) string {
	return fmt.Sprintf("%s/%s/%020d", device, kind, seq)
}

// Flush commits everything queued in one transaction, then acknowledges.
func (in *Ingest) Flush(ctx context.Context) error {
	in.mu.Lock()
	batch := in.pending
	in.pending = nil
	in.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	sort.SliceStable(batch, func(i, j int) bool {
		if batch[i].Device != batch[j].Device {
			return batch[i].Device < batch[j].Device
		}
		return batch[i].Seq < batch[j].Seq
	})
	changed := map[string]*deviceSeq{}
	var committed, dupes int64
	err := in.st.Update(ctx, func(tx store.Tx) error {
		committed, dupes = 0, 0
		for k := range changed {
			delete(changed, k)
		}
		stored, err := in.prefetch(tx, batch)
		if err != nil {
			return err
		}
		for _, m := range batch {
			ds, ok := changed[m.Device]
			if !ok {
				ds = &deviceSeq{}
				if b, ok := stored[m.Device]; ok {
					if err := json.Unmarshal(b, ds); err != nil {
						return fmt.Errorf("decode telemetry accounting of %s: %w", m.Device, err)
					}
				} else if c, ok := in.cached(m.Device); ok && !in.shared {
					*ds = c
				} else if err := store.GetJSON(tx, bucketSeq, m.Device, ds); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
				changed[m.Device] = ds
			}
			if !ds.add(m) {
				dupes++
				continue
			}
			b, err := json.Marshal(m)
			if err != nil {
				return err
			}
			if err := tx.Put(bucketData, dataKey(m.Device, m.Kind, m.Seq), b); err != nil {
				return err
			}
			committed++
		}
		for dev, ds := range changed {
			if err := store.PutJSON(tx, bucketSeq, dev, ds); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit %d telemetry messages: %w", len(batch), err)
	}
	in.committed.Add(committed)
	in.dupes.Add(dupes)
	in.batches.Add(1)
	in.mu.Lock()
	for dev, ds := range changed {
		c := *ds
		c.Above = append([]uint64(nil), ds.Above...)
		in.seqs[dev] = &c
	}
	in.mu.Unlock()
	// Acknowledge only what is now durable.
	for dev, ds := range changed {
		b, _ := json.Marshal(wire.Ack{Seq: ds.Contiguous})
		if err := in.publish(ctx, in.topics.Ack(dev), b, 1, false); err != nil {
			in.log.Debug("ack not sent; the next batch acks again", "device", dev, "err", err)
			continue
		}
		in.acks.Add(1)
	}
	return nil
}

// prefetch reads, on a shared store that can read many keys at once, the accounting of every
// device in the batch in one round trip. It returns nil otherwise (the loop reads per device).
func (in *Ingest) prefetch(tx store.Tx, batch []wire.Telemetry) (map[string][]byte, error) {
	mg, ok := tx.(store.MultiGetter)
	if !in.shared || !ok {
		return nil, nil
	}
	var devs []string
	for i, m := range batch {
		if i == 0 || m.Device != batch[i-1].Device { // batch is sorted by device
			devs = append(devs, m.Device)
		}
	}
	got, err := mg.GetMany(bucketSeq, devs)
	if err != nil {
		return nil, fmt.Errorf("read telemetry accounting of %d devices: %w", len(devs), err)
	}
	for _, d := range devs {
		if _, ok := got[d]; !ok {
			got[d] = []byte(`{}`) // none yet: start from zero without asking again
		}
	}
	return got, nil
}

func (in *Ingest) cached(dev string) (deviceSeq, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	c, ok := in.seqs[dev]
	if !ok {
		return deviceSeq{}, false
	}
	cp := *c
	cp.Above = append([]uint64(nil), c.Above...)
	return cp, true
}

// add accounts for message m: the sequence ranges it stands for (Covers, else FirstSeq..Seq) and
// any ranges the device reports dropped. It reports false when m brings nothing new (a duplicate).
func (d *deviceSeq) add(m wire.Telemetry) bool {
	ranges := m.Covers
	if len(ranges) == 0 {
		first := m.FirstSeq
		if first == 0 || first > m.Seq {
			first = m.Seq
		}
		ranges = [][2]uint64{{first, m.Seq}}
	}
	for _, r := range m.Dropped {
		d.Dropped += d.mark(r)
	}
	d.compact()
	fresh := uint64(0)
	for _, r := range ranges {
		if r[1] > m.Seq {
			// A message stands for its own seq and older ones (a merged window carries the newest
			// it merged); QueryChanged relies on it to find what was rewritten.
			continue
		}
		past := r[0] > d.Contiguous+1
		n := d.mark(r)
		if n > 0 && past {
			d.Gaps++
		}
		fresh += n
	}
	d.compact()
	if fresh == 0 {
		d.Dupes++
		return false
	}
	return true
}

// maxRange bounds one range a message may claim, so a forged message cannot make the control
// plane allocate without bound.
const maxRange = 1 << 20

// mark records the sequence numbers of r as accounted and returns how many were new.
func (d *deviceSeq) mark(r [2]uint64) uint64 {
	if r[0] == 0 || r[1] < r[0] || r[1]-r[0] > maxRange {
		return 0
	}
	have := make(map[uint64]bool, len(d.Above))
	for _, s := range d.Above {
		have[s] = true
	}
	n := uint64(0)
	for s := max(r[0], d.Contiguous+1); s <= r[1]; s++ {
		if !have[s] {
			d.Above = append(d.Above, s)
			n++
		}
	}
	return n
}

// maxAbove bounds the seqs a device's accounting holds past a gap.
const maxAbove = 100000

// compact advances the contiguous mark over what is now complete.
func (d *deviceSeq) compact() {
	sort.Slice(d.Above, func(i, j int) bool { return d.Above[i] < d.Above[j] })
	k := 0
	for k < len(d.Above) && d.Above[k] <= d.Contiguous+1 {
		if d.Above[k] == d.Contiguous+1 {
			d.Contiguous++
		}
		k++
	}
	d.Above = d.Above[k:]
	if len(d.Above) > maxAbove {
		// A device that skipped far ahead: do not let its accounting grow without bound.
		d.Above = d.Above[len(d.Above)-maxAbove:]
	}
}

// Accounting is a device's telemetry accounting.
type Accounting struct {
	Contiguous uint64 `json:"contiguous"`
	Pending    int    `json:"received_past_gap"`
	Duplicates uint64 `json:"duplicates"`
	Gaps       uint64 `json:"gaps"`
	Dropped    uint64 `json:"dropped"`
}

// Account returns a device's accounting.
func (in *Ingest) Account(ctx context.Context, device string) (Accounting, error) {
	ds, ok := in.cached(device)
	if !ok || in.shared {
		ds = deviceSeq{}
		err := in.st.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, bucketSeq, device, &ds) })
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return Accounting{}, err
		}
	}
	return Accounting{Contiguous: ds.Contiguous, Pending: len(ds.Above), Duplicates: ds.Dupes, Gaps: ds.Gaps, Dropped: ds.Dropped}, nil
}

// Query returns a device's stored messages of a kind ("" for all) received at or after since,
// oldest first, at most limit.
func (in *Ingest) Query(ctx context.Context, device, kind string, since time.Time, limit int) ([]wire.Telemetry, error) {
	prefix := device + "/"
	if kind != "" {
		prefix += kind + "/"
	}
	var out []wire.Telemetry
	err := in.st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucketData, prefix, func(_ string, v []byte) error {
			var m wire.Telemetry
			if json.Unmarshal(v, &m) != nil || m.At.Before(since) {
				return nil
			}
			out = append(out, m)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, err
}

// Mark is what a device had committed when a QueryChanged read its messages: its accounting of
// sequence numbers. The zero Mark is "nothing read yet".
type Mark struct {
	read       bool
	contiguous uint64
	above      []uint64
}

// Changes is what QueryChanged found.
type Changes struct {
	// Mark is the device's accounting read in the same transaction as Msgs; pass it to the next
	// QueryChanged.
	Mark Mark
	// Changed is false when nothing was committed since the old mark: the caller's copy is current
	// and Msgs is empty.
	Changed bool
	// From: Msgs holds every stored message of the kind whose sequence number is From or more
	// (oldest sequence first); they replace what the caller held from From on. Messages below From
	// are as they were at the old mark. From is 0 when everything was read.
	From uint64
	Msgs []wire.Telemetry
}

// QueryChanged returns a device's stored messages of a kind that may have been written since old
// was taken. Every commit that writes a message marks at least one sequence number not marked
// before, no higher than the message's own (the key it is stored under: a spool's merged window
// carries the newest sequence number of what it merged and replaces, under that key, a finer window
// committed before). So every write since old is at or above the lowest sequence number marked
// since, and only those keys are read, from a seek: a reader that keeps the decoded history reads
// what is new, not the retention period. The accounting and messages come from one transaction.
func (in *Ingest) QueryChanged(ctx context.Context, device, kind string, old Mark) (Changes, error) {
	var ch Changes
	err := in.st.View(ctx, func(tx store.Tx) error {
		ch = Changes{}
		var ds deviceSeq
		if err := store.GetJSON(tx, bucketSeq, device, &ds); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		ch.Mark = Mark{read: true, contiguous: ds.Contiguous, above: ds.Above}
		from, changed := ch.Mark.firstNew(old)
		if !changed {
			return nil
		}
		ch.Changed, ch.From = true, from
		prefix := device + "/" + kind + "/"
		return store.ForEachFrom(tx, bucketData, prefix, dataKey(device, kind, from), func(_ string, v []byte) error {
			var m wire.Telemetry
			if json.Unmarshal(v, &m) == nil {
				ch.Msgs = append(ch.Msgs, m)
			}
			return nil
		})
	})
	if err != nil {
		return Changes{}, fmt.Errorf("read telemetry of %s: %w", device, err)
	}
	return ch, nil
}

// firstNew returns the lowest sequence number m marks that old did not (0: read everything), and
// false when m marks nothing new.
func (m Mark) firstNew(old Mark) (uint64, bool) {
	// Without an old mark, or past the cap on seqs held above a gap (compact forgets the oldest, so
	// a seq could be marked twice), read everything.
	if !old.read || len(old.above) >= maxAbove || len(m.above) >= maxAbove {
		return 0, true
	}
	had := make(map[uint64]bool, len(old.above))
	for _, s := range old.above {
		had[s] = true
	}
	first, found := uint64(0), false
	note := func(s uint64) {
		if s > old.contiguous && !had[s] && (!found || s < first) {
			first, found = s, true
		}
	}
	// The contiguous run can only grow; the first seq it gained that old lacked is the lowest new one there.
	for s := old.contiguous + 1; s <= m.contiguous; s++ {
		if !had[s] {
			note(s)
			break
		}
	}
	for _, s := range m.above {
		note(s)
	}
	if m.contiguous < old.contiguous {
		return 0, true // the accounting went back (a store restored from a backup): start over
	}
	return first, found
}

// pruneChunk bounds how many deletions one retention transaction carries: a week of history of a
// large fleet expires by millions of rows a day, which must not become one transaction (or one
// slice in memory).
const pruneChunk = 10000

// Prune deletes messages older than the retention, device by device, in transactions of at most
// pruneChunk deletions (plus one device's).
func (in *Ingest) Prune(ctx context.Context, now time.Time) error {
	cut := now.Add(-in.retention)
	var devices []string
	if err := in.st.View(ctx, func(tx store.Tx) error {
		return tx.ForEach(bucketSeq, "", func(dev string, _ []byte) error { devices = append(devices, dev); return nil })
	}); err != nil {
		return fmt.Errorf("list devices with telemetry: %w", err)
	}
	var old []string
	drop := func() error {
		if len(old) == 0 {
			return nil
		}
		err := in.st.Update(ctx, func(tx store.Tx) error {
			for _, k := range old {
				if err := tx.Delete(bucketData, k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("delete %d expired telemetry messages: %w", len(old), err)
		}
		old = old[:0]
		return nil
	}
	for _, dev := range devices {
		err := in.st.View(ctx, func(tx store.Tx) error {
			return tx.ForEach(bucketData, dev+"/", func(k string, v []byte) error {
				var m struct {
					At time.Time `json:"at"`
				}
				if json.Unmarshal(v, &m) == nil && m.At.Before(cut) {
					old = append(old, k)
				}
				return nil
			})
		})
		if err != nil {
			return fmt.Errorf("find expired telemetry of %s: %w", dev, err)
		}
		if len(old) >= pruneChunk {
			if err := drop(); err != nil {
				return err
			}
		}
	}
	return drop()
}

// Stats returns counters.
func (in *Ingest) Stats() Stats {
	return Stats{Received: in.received.Load(), Committed: in.committed.Load(), Duplicates: in.dupes.Load(), Batches: in.batches.Load(), Acks: in.acks.Load()}
}

// seqOf parses the sequence from a data key (used by tests).
func seqOf(key string) uint64 {
	i := strings.LastIndex(key, "/")
	n, _ := strconv.ParseUint(key[i+1:], 10, 64)
	return n
}
