// Package store is the spool's one bbolt file: an ordered map from a sequence number to an opaque
// record, plus a few named metadata values, changed only inside transactions that bbolt commits
// atomically (and, unless NoSync, durably: every commit is fsynced before it returns).
//
// It is the only package under agent/spool that imports bbolt (deps_test.go: only packages whose
// import path ends in /store may). It knows nothing about telemetry, merging or limits; package
// spool owns those. Its other job is to turn a damaged file into ErrCorrupt instead of a panic.
package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"runtime/debug"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	// ErrCorrupt means the file is not a readable spool: bad meta pages, a broken page tree, or a
	// page that made bbolt panic while it was checked.
	ErrCorrupt = errors.New("spool file corrupt")
	// ErrLocked means another process holds the file (bbolt takes an flock on open).
	ErrLocked = errors.New("spool file held by another process")
)

var (
	bucketRecords = []byte("records")
	bucketMeta    = []byte("meta")
)

// DB is an open spool file.
type DB struct {
	db   *bolt.DB
	path string
}

// Open opens (creating if needed) the spool file at path and checks every page of it, so that a
// damaged file is reported here, once, rather than as a panic in the middle of a later read.
// noSync skips fsync on commit: only for simulators and benchmarks, it gives up crash safety.
func Open(path string, noSync bool) (db *DB, err error) {
	// bbolt reads pages through an mmap and trusts what it finds; a damaged page can make it index
	// out of range or fault. Both become ErrCorrupt here.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var b *bolt.DB
	defer func() {
		if p := recover(); p != nil {
			if b != nil {
				closeQuietly(b)
			}
			db, err = nil, fmt.Errorf("open %s: %w: bbolt panicked: %v", path, ErrCorrupt, p)
		}
	}()
	b, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: noSync})
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
			errors.Is(err, berrors.ErrVersionMismatch), isSizeError(err):
			return nil, fmt.Errorf("open %s: %w: %w", path, ErrCorrupt, err)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := checkLayout(path, b.Info().PageSize); err != nil {
		closeQuietly(b)
		return nil, fmt.Errorf("open %s: %w: %w", path, ErrCorrupt, err)
	}
	if err := check(b); err != nil {
		closeQuietly(b)
		return nil, fmt.Errorf("open %s: %w: %w", path, ErrCorrupt, err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketRecords, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		closeQuietly(b)
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &DB{db: b, path: path}, nil
}

// isSizeError catches bbolt's unexported complaint about a file too short to hold its own meta
// pages (a truncated file), which has no sentinel.
func isSizeError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "file size too small") || strings.Contains(s, "unexpected EOF")
}

// check reads the whole page tree in this goroutine, where a damaged page that makes bbolt index
// out of range or read outside the mmap panics into the recover in Open: every key and value
// byte, key order, and a seek for every key (which reads the branch keys on its path).
//
// bbolt's own Tx.Check is not used: it walks pages in a goroutine of its own, where such a fault
// kills the process, and on some damaged files it never returns (both seen in
// TestCorruptPagesNeverPanic). What this misses (a page that is both in the tree and on the
// freelist) surfaces as a bbolt panic in a later commit, which Update turns into ErrCorrupt.
func check(b *bolt.DB) error {
	var sink byte
	err := b.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			var prev []byte
			var keys [][]byte
			err := bk.ForEach(func(k, v []byte) error {
				for _, c := range k {
					sink ^= c
				}
				for _, c := range v {
					sink ^= c
				}
				if prev != nil && bytes.Compare(prev, k) >= 0 {
					return fmt.Errorf("bucket %q: keys out of order at %x", name, k)
				}
				prev = k
				keys = append(keys, k)
				return nil
			})
			if err != nil {
				return err
			}
			c := bk.Cursor()
			for _, k := range keys {
				if got, _ := c.Seek(k); !bytes.Equal(got, k) {
					return fmt.Errorf("bucket %q: key %x not found by seek", name, k)
				}
			}
			return nil
		})
	})
	_ = sink
	return err
}

// bbolt's on-disk format (version 2), which bbolt keeps stable across releases.
const (
	pageHeader       = 16
	elemSize         = 16 // both branch and leaf elements
	metaSumOffset    = 56
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01
	noFreelist       = ^uint64(0)
	maxDepth         = 64
)

// bbolt writes in the machine's byte order.
var ne = binary.NativeEndian

// checkLayout walks the file's structure with plain reads, before bbolt reads it through its
// mmap: bbolt trusts every page id and offset it finds, so a damaged page can make it fault,
// descend a cycle until memory runs out, or hand out a free page that is still in use in a later
// commit (all seen in TestCorruptPagesNeverPanic). It checks, from the newest valid meta page:
// every page id inside the file, every element inside its page, no page reached twice (no
// cycles), and no page both in the tree and on the freelist.
func checkLayout(path string, pageSize int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := &walker{f: f, ps: int64(pageSize), seen: map[uint64]bool{0: true, 1: true}}
	var meta []byte
	var txid uint64
	for m := range 2 {
		b := make([]byte, pageHeader+64)
		if _, err := f.ReadAt(b, int64(m)*w.ps); err != nil {
			return fmt.Errorf("read meta %d: %w", m, err)
		}
		b = b[pageHeader:]
		h := fnv.New64a()
		h.Write(b[:metaSumOffset])
		if h.Sum64() != ne.Uint64(b[metaSumOffset:]) {
			continue // a torn meta page; bbolt uses the other one
		}
		if meta == nil || ne.Uint64(b[48:]) > txid {
			meta, txid = b, ne.Uint64(b[48:])
		}
	}
	if meta == nil {
		return errors.New("no valid meta page")
	}
	w.hw = ne.Uint64(meta[40:])
	if err := w.tree(ne.Uint64(meta[16:]), 0); err != nil {
		return err
	}
	freelist := ne.Uint64(meta[32:])
	if freelist == noFreelist {
		return nil
	}
	p, err := w.page(freelist)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	if ne.Uint16(p[8:]) != freelistPageFlag {
		return fmt.Errorf("page %d: not a freelist page", freelist)
	}
	count, first := uint64(ne.Uint16(p[10:])), uint64(pageHeader)
	if count == 0xFFFF {
		count, first = ne.Uint64(p[16:]), pageHeader+8
	}
	if count > uint64(len(p)) || first+count*8 > uint64(len(p)) {
		return fmt.Errorf("freelist page %d: %d ids do not fit", freelist, count)
	}
	for i := range count {
		id := ne.Uint64(p[first+i*8:])
		if id < 2 || id >= w.hw {
			return fmt.Errorf("freelist page %d: free page %d outside 2..%d", freelist, id, w.hw)
		}
		if w.seen[id] {
			return fmt.Errorf("page %d is both in use and free", id)
		}
	}
	return nil
}

type walker struct {
	f    *os.File
	ps   int64
	hw   uint64 // pages in use are below this id
	seen map[uint64]bool
}

// page reads page id with its overflow pages and marks them all reached.
func (w *walker) page(id uint64) ([]byte, error) {
	if id < 2 || id >= w.hw {
		return nil, fmt.Errorf("page %d outside 2..%d", id, w.hw)
	}
	hdr := make([]byte, pageHeader)
	if _, err := w.f.ReadAt(hdr, int64(id)*w.ps); err != nil {
		return nil, fmt.Errorf("read page %d: %w", id, err)
	}
	overflow := uint64(ne.Uint32(hdr[12:]))
	if ne.Uint64(hdr) != id || id+overflow >= w.hw {
		return nil, fmt.Errorf("page %d: bad header (id %d, overflow %d)", id, ne.Uint64(hdr), overflow)
	}
	for i := id; i <= id+overflow; i++ {
		if w.seen[i] {
			return nil, fmt.Errorf("page %d reached twice", i)
		}
		w.seen[i] = true
	}
	p := make([]byte, int64(overflow+1)*w.ps)
	if _, err := w.f.ReadAt(p, int64(id)*w.ps); err != nil {
		return nil, fmt.Errorf("read page %d: %w", id, err)
	}
	return p, nil
}

func (w *walker) tree(id uint64, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("page %d: tree deeper than %d", id, maxDepth)
	}
	p, err := w.page(id)
	if err != nil {
		return err
	}
	return w.node(p, id, depth)
}

// node checks one branch or leaf page (p, read from page id, or an inline bucket's page).
func (w *walker) node(p []byte, id uint64, depth int) error {
	if len(p) < pageHeader {
		return fmt.Errorf("page %d: short", id)
	}
	flags, count := ne.Uint16(p[8:]), uint64(ne.Uint16(p[10:]))
	if pageHeader+count*elemSize > uint64(len(p)) {
		return fmt.Errorf("page %d: %d elements do not fit", id, count)
	}
	// bbolt takes any page that is not a leaf for a branch, and reads element 0 of an empty
	// branch anyway (a cycle, in one damaged file).
	if flags != leafPageFlag && (flags != branchPageFlag || count == 0) {
		return fmt.Errorf("page %d: flags %#x with %d elements, want a leaf or a non-empty branch", id, flags, count)
	}
	for i := range count {
		e := pageHeader + i*elemSize
		switch flags {
		case branchPageFlag:
			pos, ksize := uint64(ne.Uint32(p[e:])), uint64(ne.Uint32(p[e+4:]))
			if e+pos+ksize > uint64(len(p)) {
				return fmt.Errorf("page %d element %d: key outside the page", id, i)
			}
			if err := w.tree(ne.Uint64(p[e+8:]), depth+1); err != nil {
				return err
			}
		case leafPageFlag:
			lf, pos := ne.Uint32(p[e:]), uint64(ne.Uint32(p[e+4:]))
			ksize, vsize := uint64(ne.Uint32(p[e+8:])), uint64(ne.Uint32(p[e+12:]))
			if e+pos+ksize+vsize > uint64(len(p)) {
				return fmt.Errorf("page %d element %d: key or value outside the page", id, i)
			}
			if lf&bucketLeafFlag == 0 {
				continue
			}
			v := p[e+pos+ksize : e+pos+ksize+vsize]
			if len(v) < 16 {
				return fmt.Errorf("page %d element %d: short bucket header", id, i)
			}
			if root := ne.Uint64(v); root != 0 {
				if err := w.tree(root, depth+1); err != nil {
					return err
				}
			} else if err := w.node(v[16:], id, depth+1); err != nil { // an inline bucket
				return err
			}
		default:
			return fmt.Errorf("page %d: flags %#x, want a branch or leaf page", id, flags)
		}
	}
	return nil
}

func closeQuietly(b *bolt.DB) { _ = b.Close() }

// Path is the file's path.
func (d *DB) Path() string { return d.path }

// Close releases the file and its lock.
func (d *DB) Close() error { return d.db.Close() }

// Update runs fn in a read-write transaction committed atomically if fn returns nil, rolled back
// otherwise. A bbolt panic (damage Open could not see) is returned as ErrCorrupt; the DB should
// then be closed and the file quarantined.
func (d *DB) Update(fn func(*Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(&err)
	return d.db.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// View runs fn in a read-only transaction; panics are handled as in Update.
func (d *DB) View(fn func(*Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(&err)
	return d.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// recoverCorrupt turns a panic inside bbolt into ErrCorrupt; bbolt's Update and View roll the
// transaction back (releasing its locks) before the panic reaches here. Callers also set
// SetPanicOnFault so that a read outside the mmap is a panic rather than a crash. Deferred only.
func recoverCorrupt(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("%w: bbolt panicked: %v", ErrCorrupt, p)
	}
}

// Tx is one transaction.
type Tx struct{ tx *bolt.Tx }

func key(k uint64) []byte {
	var b [8]byte
	// Big-endian so that bbolt's byte order is numeric order.
	binary.BigEndian.PutUint64(b[:], k)
	return b[:]
}

// Get returns a copy of the record at k, or nil.
func (t *Tx) Get(k uint64) []byte {
	v := t.tx.Bucket(bucketRecords).Get(key(k))
	if v == nil {
		return nil
	}
	// bbolt's slice points into the mmap and is valid only inside the transaction.
	return bytes.Clone(v)
}

// Put stores v at k.
func (t *Tx) Put(k uint64, v []byte) error {
	if err := t.tx.Bucket(bucketRecords).Put(key(k), v); err != nil {
		return fmt.Errorf("put record %d: %w", k, err)
	}
	return nil
}

// Delete removes the record at k, if any.
func (t *Tx) Delete(k uint64) error {
	if err := t.tx.Bucket(bucketRecords).Delete(key(k)); err != nil {
		return fmt.Errorf("delete record %d: %w", k, err)
	}
	return nil
}

// ForEach calls fn for every record with key > after, in key order, until fn returns false or an
// error. v is valid only during the call.
func (t *Tx) ForEach(after uint64, fn func(k uint64, v []byte) (bool, error)) error {
	c := t.tx.Bucket(bucketRecords).Cursor()
	k, v := c.Seek(key(after))
	if k != nil && binary.BigEndian.Uint64(k) == after {
		k, v = c.Next()
	}
	for ; k != nil; k, v = c.Next() {
		if len(k) != 8 {
			return fmt.Errorf("record key %x: %w", k, ErrCorrupt)
		}
		more, err := fn(binary.BigEndian.Uint64(k), v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// Meta returns a copy of the named metadata value, or nil.
func (t *Tx) Meta(name string) []byte {
	return bytes.Clone(t.tx.Bucket(bucketMeta).Get([]byte(name)))
}

// SetMeta stores a named metadata value.
func (t *Tx) SetMeta(name string, v []byte) error {
	if err := t.tx.Bucket(bucketMeta).Put([]byte(name), v); err != nil {
		return fmt.Errorf("put meta %s: %w", name, err)
	}
	return nil
}
