package bundle

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
)

// extractor writes verified payloads into one folder through an os.Root, so that no name, and no
// symlink already in the folder, can lead a write outside it.
type extractor struct {
	dir     string
	created bool // dir did not exist before; removed again on failure
	root    *os.Root
	cur     *os.File
	pending []rename // temp files written and synced, renamed by commit
	done    []string // final names already renamed, for abort
}

type rename struct{ tmp, final string }

func newExtractor(dir string) (*extractor, error) {
	x := &extractor{dir: dir}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		x.created = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create folder: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		x.removeDir()
		return nil, fmt.Errorf("open folder: %w", err)
	}
	x.root = root
	return x, nil
}

// begin creates the temporary file for the payload called name. Temporary names are random and
// hidden so that they never collide with a payload name (which may not start with a dot).
func (x *extractor) begin(name string) (*os.File, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("temp name for %q: %w", name, err)
	}
	tmp := ".partial-" + hex.EncodeToString(rnd[:])
	f, err := x.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create temp file for %q: %w", name, err)
	}
	x.cur = f
	x.pending = append(x.pending, rename{tmp: tmp, final: name})
	return f, nil
}

// end makes the current payload durable; it is renamed only when the whole bundle has verified.
func (x *extractor) end() error {
	f := x.cur
	x.cur = nil
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %q: %w", x.pending[len(x.pending)-1].final, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %q: %w", x.pending[len(x.pending)-1].final, err)
	}
	return nil
}

// commit renames every temp file into place and syncs the folder, so that after a power cut either
// the rename is on disk or the temp file is (and a later extraction replaces it).
func (x *extractor) commit() error {
	for _, p := range x.pending {
		if err := x.root.Rename(p.tmp, p.final); err != nil {
			return fmt.Errorf("rename into %q: %w", p.final, err)
		}
		x.done = append(x.done, p.final)
	}
	x.pending = nil
	d, err := x.root.Open(".")
	if err != nil {
		return fmt.Errorf("open folder to sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync folder: %w", err)
	}
	return x.root.Close()
}

// abort removes everything this extraction wrote.
func (x *extractor) abort() {
	if x.cur != nil {
		x.cur.Close()
		x.cur = nil
	}
	for _, p := range x.pending {
		if err := x.root.Remove(p.tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			slog.Warn("bundle: remove partial file", "dir", x.dir, "file", p.tmp, "err", err)
		}
	}
	for _, name := range x.done {
		if err := x.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			slog.Warn("bundle: remove extracted file", "dir", x.dir, "file", name, "err", err)
		}
	}
	x.pending, x.done = nil, nil
	x.root.Close()
	x.removeDir()
}

func (x *extractor) removeDir() {
	if x.created {
		// os.Remove refuses a non-empty folder, which is what we want: never delete what we did not
		// write.
		_ = os.Remove(x.dir)
	}
}
