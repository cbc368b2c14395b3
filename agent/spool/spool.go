package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/agent/spool/store"
	"github.com/edgefleet/edgefleet/internal/atomicfile"
)

// File names inside the spool folder.
const (
	dbFile    = "spool.db"
	floorFile = "seq.floor"
)

// reserveBlock is how many sequence numbers one write of seq.floor reserves: one small atomic file
// write per 4096 appends keeps sequence numbers unique even if spool.db is lost.
const reserveBlock = 4096

var (
	// ErrCorrupt: the spool file is damaged (and Options.Quarantine was off, or could not be used).
	ErrCorrupt = store.ErrCorrupt
	// ErrLocked: another process has the spool open.
	ErrLocked = store.ErrLocked
	// ErrTooLarge: one entry is larger than Options.MaxBytes, so no amount of merging could keep it.
	ErrTooLarge = errors.New("entry larger than the spool")
	// ErrClosed: the spool was closed.
	ErrClosed = errors.New("spool closed")
)

// Range is an inclusive range of sequence numbers.
type Range struct{ First, Last uint64 }

// Len is the number of sequence numbers in r.
func (r Range) Len() uint64 { return r.Last - r.First + 1 }

// Entry is one spooled message: a telemetry window, or several windows of one kind merged.
type Entry struct {
	// FirstSeq is the lowest sequence number the entry stands for; entries are ordered, resent
	// and keyed by it. LastSeq is the highest.
	FirstSeq, LastSeq uint64
	// Seqs is the exact set of sequence numbers the entry stands for, ascending: one Range
	// {FirstSeq, FirstSeq} for an entry as appended; for a merged one, the union of its parts,
	// which can have holes where other kinds' entries sit between FirstSeq and LastSeq. The
	// message that carries the entry must carry Seqs, so that the control plane can mark each of
	// them received.
	Seqs []Range
	Kind string
	Body []byte
	// The window the entry summarises; a merged entry spans its parts.
	WindowStart, WindowEnd time.Time
}

// Count is the number of sequence numbers the entry stands for.
func (e Entry) Count() uint64 {
	var n uint64
	for _, r := range e.Seqs {
		n += r.Len()
	}
	return n
}

// Merged reports whether the entry stands for more than one appended window.
func (e Entry) Merged() bool { return e.Count() > 1 }

// Options bound and tune a spool.
type Options struct {
	// MaxBytes bounds the stored records (keys, headers, bodies). 0: unbounded. The bbolt file
	// itself can be up to about twice this (free pages, page granularity), and stops growing
	// there because bbolt reuses freed pages.
	MaxBytes int64
	// MaxAge: windows that ended longer ago than this are folded, per kind, into one coarse entry
	// with Merge; those Merge refuses are dropped and counted. 0: no age limit.
	MaxAge time.Duration
	// Merge folds two windows of the same kind (older first) into one, or reports false if they
	// cannot be (a kind with no meaningful sum). Only the returned Body is used: the spool sets
	// kind, window and sequence numbers itself so that the accounting cannot be got wrong by a
	// callback. The result should be no larger than the parts (a histogram sum is not), otherwise
	// merging frees nothing and the spool drops instead. nil: nothing merges, limits drop.
	Merge func(older, newer Entry) (Entry, bool)
	// Quarantine: when spool.db is damaged, move it aside (spool.db.corrupt-<time>), start an
	// empty spool whose sequence numbers continue above every one ever issued (seq.floor), and
	// report the possibly lost ones as dropped. Off: Open returns ErrCorrupt.
	Quarantine bool
	// NoSync skips fsync on commit: for simulators and benchmarks only, it gives up crash safety.
	NoSync bool
	// Now is the clock for ages (tests); nil: time.Now.
	Now func() time.Time
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

// Stats is a snapshot of the spool.
type Stats struct {
	Pending     int           // entries stored (each possibly merged)
	PendingSeqs uint64        // sequence numbers those entries stand for
	Bytes       int64         // stored record bytes, the quantity MaxBytes bounds
	OldestAge   time.Duration // now minus the earliest WindowStart stored; 0 when empty
	Merged      uint64        // merges done since the spool was created (each folds one entry into another)
	Dropped     uint64        // sequence numbers dropped since the spool was created
	LastAck     uint64        // highest acknowledged sequence number
	NextSeq     uint64        // the sequence number the next Append gets
	Quarantined string        // the file a damaged spool was moved to by this Open, if any
}

// slot is what the spool keeps in memory about one stored record: enough to enforce limits and
// trim on ack without reading bodies.
type slot struct {
	first, last uint64
	count       uint64
	kind        string
	start, end  time.Time
	size        int64
}

// state is the persisted counters, one metadata value written in the same transaction as every
// change to the records, so the two never disagree.
type state struct {
	next, lastAck, merged, dropped uint64
	droppedRanges                  []Range
}

// Spool is a bounded on-disk queue of telemetry entries with per-device sequence numbers. It is
// safe for concurrent use.
type Spool struct {
	mu     sync.Mutex
	dir    string
	db     *store.DB
	opts   Options
	log    *slog.Logger
	slots  []slot // ascending by first
	bytes  int64
	st     state
	floor  uint64 // no sequence number >= floor has been issued (seq.floor)
	quar   string
	closed bool
	// appended is signalled (without blocking) by every Append, so a Drainer with nothing to
	// send sleeps until there is something instead of polling at its rate.
	appended chan struct{}
}

// Open opens (creating if needed) the spool in dir.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	floor, floorAck, floorErr := readFloor(dir)
	s := &Spool{dir: dir, opts: opts, log: log, floor: floor, appended: make(chan struct{}, 1)}
	path := filepath.Join(dir, dbFile)
	db, err := store.Open(path, opts.NoSync)
	if err == nil {
		s.db = db
		if err = s.load(); err != nil {
			db.Close()
		}
	}
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, ErrCorrupt) || !opts.Quarantine {
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	if floorErr != nil || floor == 0 {
		// Without a trustworthy floor a fresh spool would issue sequence numbers again.
		return nil, fmt.Errorf("open spool %s: cannot quarantine without %s (%v): %w", dir, floorFile, floorErr, err)
	}
	return s.quarantine(path, floorAck, err)
}

// quarantine moves a damaged spool.db aside and starts an empty one above the reserved floor.
func (s *Spool) quarantine(path string, floorAck uint64, cause error) (*Spool, error) {
	q := fmt.Sprintf("%s.corrupt-%s", path, s.opts.Now().UTC().Format("20060102T150405.000000000"))
	if err := os.Rename(path, q); err != nil {
		return nil, fmt.Errorf("quarantine %s: %w (after %w)", path, err, cause)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return nil, fmt.Errorf("quarantine %s: %w", path, err)
	}
	s.log.Warn("spool damaged, moved aside", "file", q, "err", cause, "next_seq", s.floor)
	db, err := store.Open(path, s.opts.NoSync)
	if err != nil {
		return nil, fmt.Errorf("open spool %s after quarantine: %w", s.dir, err)
	}
	s.db, s.quar = db, q
	s.slots, s.bytes = nil, 0 // a failed load may have filled some
	// Everything from the last ack we know of up to the floor may have been in the lost file: the
	// control plane learns it will not come (it ignores any it already committed).
	s.st = state{next: s.floor, lastAck: floorAck}
	if s.floor > floorAck+1 {
		r := Range{First: floorAck + 1, Last: s.floor - 1}
		s.st.droppedRanges = []Range{r}
		s.st.dropped = r.Len()
	}
	if err := db.Update(func(tx *store.Tx) error { return tx.SetMeta("state", encodeState(&s.st)) }); err != nil {
		db.Close()
		return nil, fmt.Errorf("open spool %s after quarantine: %w", s.dir, err)
	}
	return s, nil
}

// load reads the counters and the index of records from the file.
func (s *Spool) load() error {
	s.slots, s.bytes = s.slots[:0], 0
	return s.db.View(func(tx *store.Tx) error {
		st, err := decodeState(tx.Meta("state"))
		if err != nil {
			return err
		}
		s.st = st
		return tx.ForEach(0, func(k uint64, v []byte) (bool, error) {
			e, err := decode(k, v, false)
			if err != nil {
				return false, fmt.Errorf("%w: %w", ErrCorrupt, err)
			}
			if e.LastSeq >= s.st.next || e.LastSeq <= s.st.lastAck {
				return false, fmt.Errorf("%w: record %d..%d outside (ack %d, next %d)", ErrCorrupt, e.FirstSeq, e.LastSeq, s.st.lastAck, s.st.next)
			}
			s.slots = append(s.slots, slotOf(&e, int64(8+len(v))))
			s.bytes += int64(8 + len(v))
			return true, nil
		})
	})
}

func slotOf(e *Entry, size int64) slot {
	return slot{first: e.FirstSeq, last: e.LastSeq, count: e.Count(), kind: e.Kind, start: e.WindowStart, end: e.WindowEnd, size: size}
}

// Close releases the file. It is idempotent.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close spool %s: %w", s.dir, err)
	}
	return nil
}

// Append stores one window and returns its sequence number. When Append returns nil the entry
// and the new sequence counter are on disk (one fsynced bbolt transaction); limits are enforced
// in the same transaction, so the spool never rests over them.
func (s *Spool) Append(kind string, body []byte, windowStart, windowEnd time.Time) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	now := s.opts.Now()
	// Age is measured from the window's end; a message without one is as old as its append.
	if windowEnd.IsZero() {
		windowEnd = now
	}
	if windowStart.IsZero() {
		windowStart = windowEnd
	}
	seq := s.st.next
	e := Entry{FirstSeq: seq, LastSeq: seq, Seqs: []Range{{seq, seq}}, Kind: kind, Body: body, WindowStart: windowStart, WindowEnd: windowEnd}
	rec := encode(&e)
	size := int64(8 + len(rec))
	if s.opts.MaxBytes > 0 && size > s.opts.MaxBytes {
		return 0, fmt.Errorf("append %s (%d bytes, limit %d): %w", kind, size, s.opts.MaxBytes, ErrTooLarge)
	}
	if seq >= s.floor {
		// Reserve before the sequence number can be on disk, so that the floor is always above
		// every issued one.
		if err := writeFloor(s.dir, seq+reserveBlock, s.st.lastAck); err != nil {
			return 0, fmt.Errorf("append %s: %w", kind, err)
		}
		s.floor = seq + reserveBlock
	}
	err := s.db.Update(func(tx *store.Tx) error {
		if err := tx.Put(seq, rec); err != nil {
			return err
		}
		s.st.next = seq + 1
		s.slots = append(s.slots, slotOf(&e, size))
		s.bytes += size
		if err := s.enforce(tx, now); err != nil {
			return err
		}
		return tx.SetMeta("state", encodeState(&s.st))
	})
	if err != nil {
		s.reload(seq + 1)
		return 0, fmt.Errorf("append %s seq %d: %w", kind, seq, err)
	}
	select {
	case s.appended <- struct{}{}:
	default:
	}
	return seq, nil
}

// Appended is signalled after Appends (one signal may stand for several).
func (s *Spool) Appended() <-chan struct{} { return s.appended }

// reload reloads memory from the file after a failed transaction, which may have left the index
// half-changed. A commit that failed in fsync may still reach the disk, so the sequence number it
// tried is never issued again.
func (s *Spool) reload(minNext uint64) {
	if err := s.load(); err != nil {
		s.log.Error("spool reload after failed write", "dir", s.dir, "err", err)
	}
	s.st.next = max(s.st.next, minNext)
}

// Pending returns up to max entries (all if max <= 0) whose FirstSeq is above after, in order.
// Pending(0, n) starts at the first unacknowledged entry: acknowledged ones are gone.
func (s *Spool) Pending(after uint64, max int) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if n := len(s.slots); n == 0 || s.slots[n-1].first <= after {
		return nil, nil // nothing above after: no read transaction (an idle drainer asks often)
	}
	var out []Entry
	err := s.db.View(func(tx *store.Tx) error {
		return tx.ForEach(after, func(k uint64, v []byte) (bool, error) {
			e, err := decode(k, v, true)
			if err != nil {
				return false, fmt.Errorf("%w: %w", ErrCorrupt, err)
			}
			out = append(out, e)
			return max <= 0 || len(out) < max, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("pending after %d: %w", after, err)
	}
	return out, nil
}

// Ack records that the control plane has committed every sequence number up to seq (the highest
// contiguous one) and trims what it covers: entries whose every sequence number is <= seq, and
// dropped ranges already reported. An ack beyond the highest issued sequence number is clamped to
// it (a control plane restored from a newer backup must not make the spool skip future ones); an
// ack at or below the last one changes nothing.
func (s *Spool) Ack(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	seq = min(seq, s.st.next-1)
	if seq <= s.st.lastAck {
		return nil
	}
	err := s.db.Update(func(tx *store.Tx) error {
		kept := s.slots[:0]
		for i, sl := range s.slots {
			if sl.first > seq {
				kept = append(kept, s.slots[i:]...)
				break
			}
			// A merged entry can start at or below seq and still hold later sequence numbers.
			if sl.last > seq {
				kept = append(kept, sl)
				continue
			}
			if err := tx.Delete(sl.first); err != nil {
				return err
			}
			s.bytes -= sl.size
		}
		s.slots = kept
		dr := s.st.droppedRanges[:0]
		for _, r := range s.st.droppedRanges {
			if r.Last > seq {
				dr = append(dr, r)
			}
		}
		s.st.droppedRanges = dr
		s.st.lastAck = seq
		return tx.SetMeta("state", encodeState(&s.st))
	})
	if err != nil {
		s.reload(0)
		return fmt.Errorf("ack %d: %w", seq, err)
	}
	return nil
}

// Stats returns a snapshot.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Pending: len(s.slots), Bytes: s.bytes, Merged: s.st.merged, Dropped: s.st.dropped,
		LastAck: s.st.lastAck, NextSeq: s.st.next, Quarantined: s.quar,
	}
	var oldest time.Time
	for _, sl := range s.slots {
		st.PendingSeqs += sl.count
		if oldest.IsZero() || sl.start.Before(oldest) {
			oldest = sl.start
		}
	}
	if !oldest.IsZero() {
		st.OldestAge = s.opts.Now().Sub(oldest)
	}
	return st
}

// DroppedRanges returns the sequence numbers dropped and not yet covered by an ack, ascending. The
// next message should report them, so that the control plane stops waiting for them and counts
// them; they are trimmed by the ack that passes them.
func (s *Spool) DroppedRanges() []Range {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Range(nil), s.st.droppedRanges...)
}

// generation changes whenever entries are merged or dropped, which can create or remove entries
// behind a Drainer's cursor.
func (s *Spool) generation() (gen, lastAck uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.merged + s.st.dropped, s.st.lastAck
}

func encodeState(st *state) []byte {
	b := make([]byte, 0, 40+16*len(st.droppedRanges))
	b = append(b, 1)
	for _, v := range []uint64{st.next, st.lastAck, st.merged, st.dropped, uint64(len(st.droppedRanges))} {
		b = binary.AppendUvarint(b, v)
	}
	for _, r := range st.droppedRanges {
		b = binary.AppendUvarint(b, r.First)
		b = binary.AppendUvarint(b, r.Last-r.First)
	}
	return b
}

func decodeState(b []byte) (state, error) {
	st := state{next: 1}
	if b == nil {
		return st, nil // a new file
	}
	if len(b) == 0 || b[0] != 1 {
		return st, fmt.Errorf("%w: state record version", ErrCorrupt)
	}
	r := reader{b: b[1:]}
	st.next, st.lastAck, st.merged, st.dropped = r.uvarint(), r.uvarint(), r.uvarint(), r.uvarint()
	n := r.uvarint()
	for i := uint64(0); i < n && !r.err; i++ {
		first := r.uvarint()
		st.droppedRanges = append(st.droppedRanges, Range{First: first, Last: first + r.uvarint()})
	}
	if r.err || len(r.b) != 0 || st.next == 0 || st.lastAck >= st.next {
		return state{}, fmt.Errorf("%w: state record malformed", ErrCorrupt)
	}
	return st, nil
}

// readFloor reads seq.floor: "<floor> <ack>". A missing file is a floor of 0 (a new spool).
func readFloor(dir string) (floor, ack uint64, err error) {
	b, err := os.ReadFile(filepath.Join(dir, floorFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", floorFile, err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("read %s: malformed", floorFile)
	}
	floor, err1 := strconv.ParseUint(f[0], 10, 64)
	ack, err2 := strconv.ParseUint(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", floorFile, err)
	}
	return floor, ack, nil
}

func writeFloor(dir string, floor, ack uint64) error {
	return atomicfile.WriteFile(filepath.Join(dir, floorFile), fmt.Appendf(nil, "%d %d\n", floor, ack), 0o600)
}

// addRanges merges add into the ascending, coalesced set rs.
func addRanges(rs, add []Range) []Range {
	out := append(append([]Range(nil), rs...), add...)
	sort.Slice(out, func(i, j int) bool { return out[i].First < out[j].First })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && r.First <= merged[n-1].Last+1 {
			merged[n-1].Last = max(merged[n-1].Last, r.Last)
			continue
		}
		merged = append(merged, r)
	}
	return merged
}
