package transfer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

// ErrUnexpected is returned for a frame that does not belong to this download (another bundle, a
// file the manifest does not list, an index past the end): "endless data" is refused here.
var ErrUnexpected = errors.New("unexpected block")

// Download assembles the payload files of one verified manifest in a folder. Progress lives in the
// data itself: each file grows in place as `<path>.part`, and opening a download re-verifies every
// block already there against the manifest, so a restart or a torn write costs only the blocks
// that fail their digest, never the verified ones.
type Download struct {
	ID  string
	m   *bundle.Manifest
	dir string

	mu       sync.Mutex
	have     map[string][]bool
	left     int64
	files    map[string]*os.File
	received int64 // payload bytes accepted
	dupes    int64
	resumed  int64 // blocks found verified on disk at open
}

// OpenDownload prepares dir for the bundle whose verified manifest is m.
func OpenDownload(id string, m *bundle.Manifest, dir string) (*Download, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create download folder: %w", err)
	}
	d := &Download{ID: id, m: m, dir: dir, have: map[string][]bool{}, files: map[string]*os.File{}}
	for _, f := range m.Files {
		n := bundle.NumBlocks(f.Size, m.BlockSize)
		have := make([]bool, n)
		d.have[f.Path] = have
		final := filepath.Join(dir, f.Path)
		if ok, _ := fileMatches(final, f.SHA256, f.Size); ok {
			for i := range have {
				have[i] = true
			}
			d.resumed += n
			continue
		}
		fh, err := os.OpenFile(final+".part", os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("open partial file %s: %w", f.Path, err)
		}
		d.files[f.Path] = fh
		buf := make([]byte, m.BlockSize)
		for i := int64(0); i < n; i++ {
			off, length, _ := m.Block(f.Path, i)
			k, err := fh.ReadAt(buf[:length], off)
			if int64(k) != length || (err != nil && !errors.Is(err, io.EOF)) {
				d.left++
				continue
			}
			if bundle.VerifyBlock(m, f.Path, i, buf[:length]) == nil {
				have[i] = true
				d.resumed++
			} else {
				d.left++
			}
		}
	}
	return d, nil
}

func fileMatches(path, sha string, size int64) (bool, error) {
	fh, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil || st.Size() != size {
		return false, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == sha, nil
}

// Put verifies a frame against the manifest and writes it. fresh is false for a duplicate.
func (d *Download) Put(f Frame) (fresh bool, err error) {
	if f.Bundle != d.ID {
		return false, fmt.Errorf("%w: frame for bundle %.12s, downloading %.12s", ErrUnexpected, f.Bundle, d.ID)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	have, ok := d.have[f.File]
	if !ok {
		return false, fmt.Errorf("%w: file %q is not in the manifest", ErrUnexpected, f.File)
	}
	if f.Index >= int64(len(have)) {
		return false, fmt.Errorf("%w: block %d of %q, the manifest has %d", ErrUnexpected, f.Index, f.File, len(have))
	}
	if have[f.Index] {
		d.dupes++
		return false, nil
	}
	if err := bundle.VerifyBlock(d.m, f.File, f.Index, f.Data); err != nil {
		return false, err
	}
	off, _, _ := d.m.Block(f.File, f.Index)
	if _, err := d.files[f.File].WriteAt(f.Data, off); err != nil {
		return false, fmt.Errorf("write block %d of %s: %w", f.Index, f.File, err)
	}
	have[f.Index] = true
	d.left--
	d.received += int64(len(f.Data))
	return true, nil
}

// Missing returns up to max missing blocks as requests, file by file in manifest order.
func (d *Download) Missing(max int) []Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Request
	for _, f := range d.m.Files {
		var idx []int64
		for i, ok := range d.have[f.Path] {
			if !ok {
				idx = append(idx, int64(i))
				if max--; max == 0 {
					break
				}
			}
		}
		out = append(out, Coalesce(d.ID, f.Path, idx)...)
		if max == 0 {
			break
		}
	}
	return out
}

// Done reports whether every block is verified.
func (d *Download) Done() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.left == 0
}

// Progress is what a download has done.
type Progress struct {
	BlocksHave, BlocksTotal, Resumed, Duplicates, BytesReceived int64
}

// Progress returns counters for reports and tests.
func (d *Download) Progress() Progress {
	d.mu.Lock()
	defer d.mu.Unlock()
	var total int64
	for _, h := range d.have {
		total += int64(len(h))
	}
	return Progress{BlocksHave: total - d.left, BlocksTotal: total, Resumed: d.resumed, Duplicates: d.dupes, BytesReceived: d.received}
}

// Finish checks each whole file's digest, fsyncs, and renames `.part` files to their names. It
// returns the folder holding the payload files.
func (d *Download) Finish() (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.left != 0 {
		return "", fmt.Errorf("finish download: %d blocks missing", d.left)
	}
	for _, f := range d.m.Files {
		fh, ok := d.files[f.Path]
		if !ok {
			continue // already complete at open
		}
		if err := fh.Truncate(f.Size); err != nil {
			return "", fmt.Errorf("truncate %s: %w", f.Path, err)
		}
		if err := fh.Sync(); err != nil {
			return "", fmt.Errorf("fsync %s: %w", f.Path, err)
		}
		fh.Close()
		delete(d.files, f.Path)
		final := filepath.Join(d.dir, f.Path)
		if ok, err := fileMatches(final+".part", f.SHA256, f.Size); !ok {
			os.Remove(final + ".part")
			return "", fmt.Errorf("file %s does not match its manifest digest after download (%v): %w", f.Path, err, bundle.ErrDigest)
		}
		if err := os.Rename(final+".part", final); err != nil {
			return "", fmt.Errorf("rename %s: %w", f.Path, err)
		}
	}
	if err := atomicfile.SyncDir(d.dir); err != nil {
		return "", err
	}
	return d.dir, nil
}

// Close releases open files; the partial data stays for a later resume.
func (d *Download) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for p, fh := range d.files {
		fh.Close()
		delete(d.files, p)
	}
}
