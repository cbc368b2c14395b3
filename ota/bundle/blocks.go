package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
)

// Block returns the offset and length of block i of the payload file at path.
func (m *Manifest) Block(path string, i int64) (offset, length int64, err error) {
	f := m.File(path)
	if f == nil {
		return 0, 0, fmt.Errorf("block %d of %q: file not in manifest: %w", i, path, ErrUnlisted)
	}
	n := NumBlocks(f.Size, m.BlockSize)
	if i < 0 || i >= n {
		return 0, 0, fmt.Errorf("block %d of %q: file has %d blocks: %w", i, path, n, ErrFormat)
	}
	offset = i * m.BlockSize
	return offset, min(m.BlockSize, f.Size-offset), nil
}

// VerifyBlock checks data against the digest of block index of the file at path, as a resumable
// transfer does for each block it receives. The manifest must come from VerifyManifest or Open.
func VerifyBlock(m *Manifest, path string, index int64, data []byte) error {
	_, length, err := m.Block(path, index)
	if err != nil {
		return fmt.Errorf("verify block: %w", err)
	}
	if int64(len(data)) != length {
		return fmt.Errorf("verify block %d of %q: %d bytes, manifest says %d: %w", index, path, len(data), length, ErrSize)
	}
	sum := sha256.Sum256(data)
	if got, want := hex.EncodeToString(sum[:]), m.File(path).Blocks[index]; got != want {
		return fmt.Errorf("verify block %d of %q: sha256 %s, manifest says %s: %w", index, path, got, want, ErrDigest)
	}
	return nil
}

// digester hashes a payload as a whole and per block while it streams through Write. With want
// set, it compares each block as soon as it is complete, so a tampered byte is reported with its
// block (and offset) before the rest of the file is read; without, it collects the digests (Build).
//
// That is two SHA-256 passes over every byte. For large files the whole-file pass runs in a
// goroutine fed with copies of the data, so that on two or more cores verifying costs about one
// pass, not two. The goroutine is owned by the digester: finish or close stops it.
type digester struct {
	path      string
	blockSize int64
	want      []string // expected block digests; nil when building

	whole   hash.Hash
	block   hash.Hash
	inBlock int64
	n       int64 // bytes written
	blocks  []string
	sum     [sha256.Size]byte

	// Set only when the whole-file pass runs in its own goroutine.
	work chan []byte // filled buffers to hash
	free chan []byte // buffers the goroutine is done with
	done chan struct{}
}

const (
	// parallelMin is the file size from which the whole-file pass moves to a goroutine; below it,
	// starting one costs more than it saves.
	parallelMin = 1 << 20
	chunkSize   = 256 << 10
	chunkCount  = 4
)

func newDigester(path string, blockSize int64, want []string, size int64) *digester {
	d := &digester{path: path, blockSize: blockSize, want: want, whole: sha256.New(), block: sha256.New()}
	if size >= parallelMin {
		d.work = make(chan []byte, chunkCount)
		d.free = make(chan []byte, chunkCount)
		d.done = make(chan struct{})
		for range chunkCount {
			d.free <- make([]byte, chunkSize)
		}
		go func() {
			defer close(d.done)
			for buf := range d.work {
				d.whole.Write(buf)
				d.free <- buf[:cap(buf)]
			}
		}()
	}
	return d
}

func (d *digester) Write(p []byte) (int, error) {
	written := len(p)
	d.hashWhole(p)
	for len(p) > 0 {
		k := min(d.blockSize-d.inBlock, int64(len(p)))
		d.block.Write(p[:k])
		d.inBlock += k
		d.n += k
		p = p[k:]
		if d.inBlock == d.blockSize {
			if err := d.endBlock(); err != nil {
				return written - len(p), err
			}
		}
	}
	return written, nil
}

func (d *digester) hashWhole(p []byte) {
	if d.work == nil {
		d.whole.Write(p)
		return
	}
	// Copies, because the caller reuses p as soon as Write returns.
	for len(p) > 0 {
		buf := <-d.free
		k := copy(buf, p)
		d.work <- buf[:k]
		p = p[k:]
	}
}

// close stops the goroutine, if any, and waits for it; safe to call more than once.
func (d *digester) close() {
	if d.work != nil {
		close(d.work)
		<-d.done
		d.work = nil
	}
}

func (d *digester) endBlock() error {
	idx := int64(len(d.blocks))
	got := hex.EncodeToString(d.block.Sum(d.sum[:0]))
	d.block.Reset()
	d.inBlock = 0
	if d.want != nil {
		if idx >= int64(len(d.want)) {
			return fmt.Errorf("file %q: block %d beyond the %d the manifest lists: %w", d.path, idx, len(d.want), ErrSize)
		}
		if got != d.want[idx] {
			return fmt.Errorf("file %q: block %d (offset %d) sha256 %s, manifest says %s: %w", d.path, idx, idx*d.blockSize, got, d.want[idx], ErrDigest)
		}
	}
	d.blocks = append(d.blocks, got)
	return nil
}

// finish closes the last partial block and returns the whole-file digest. It stops the goroutine.
func (d *digester) finish() (string, error) {
	d.close()
	if d.inBlock > 0 {
		if err := d.endBlock(); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(d.whole.Sum(nil)), nil
}
