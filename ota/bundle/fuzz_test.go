package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"testing"
)

// fuzzSeeds are small bundles, good and hostile, so that mutations land in interesting places.
func fuzzSeeds(t testing.TB) [][]byte {
	k := newTestKey(t)
	in := BuildInput{Kind: KindModel, Name: "tiny", Version: "0.1.0", CreatedAt: fixedTime, BlockSize: MinBlockSize,
		Schema: &Schema{Inputs: []Tensor{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 3}}}, Outputs: []Tensor{{Name: "y", Datatype: "INT64", Shape: []int64{-1}}}},
		Files: []File{
			{Path: "model.onnx", Role: RoleModel, Bytes: pseudoRandom(9000, 5)},
			{Path: "labels.txt", Role: RoleLabels, Bytes: []byte("a\nb\n")},
		}}
	_, _, good := buildBytes(t, in, k)
	es := explode(t, good)
	dup := implode(t, append(explode(t, good), es[2]))
	unsigned := implode(t, append(explode(t, good)[:1:1], es[2:]...))
	link := explode(t, good)
	link[3].hdr.Typeflag, link[3].hdr.Linkname, link[3].hdr.Size, link[3].data = '2', "/etc/passwd", 0, nil
	escape := explode(t, good)
	escape[3].hdr.Name = "../labels.txt"
	return [][]byte{good, dup, unsigned, implode(t, link), implode(t, escape), good[:len(good)/2], nil}
}

var fuzzLimits = Limits{MaxManifestBytes: 64 << 10, MaxFiles: 8, MaxFileBytes: 1 << 20, MaxTotalBytes: 2 << 20}

func FuzzReadManifest(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ReadManifest(bytes.NewReader(data), fuzzLimits)
		if err != nil {
			if b != nil {
				t.Fatal("result alongside an error")
			}
			return
		}
		sum := sha256.Sum256(b.ManifestBytes)
		if b.ID != hex.EncodeToString(sum[:]) {
			t.Fatalf("id %s is not the manifest digest", b.ID)
		}
		if err := b.Manifest.Validate(); err != nil {
			t.Fatalf("accepted an invalid manifest: %v", err)
		}
		for _, fe := range b.Manifest.Files {
			if err := CheckName(fe.Path); err != nil {
				t.Fatalf("accepted unsafe name: %v", err)
			}
		}
		// Whatever was accepted must survive our own encoder and parse back to the same value.
		mb, err := b.Manifest.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ParseManifest(mb)
		if err != nil {
			t.Fatalf("re-encoded manifest does not parse: %v\n%s", err, mb)
		}
		mb2, _ := m2.Marshal()
		if !bytes.Equal(mb, mb2) {
			t.Fatalf("canonical form not stable:\n%s\n%s", mb, mb2)
		}
	})
}

func FuzzOpen(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// acceptAll: the fuzzer cannot forge signatures, and the code behind the check is what a
		// stolen release key would reach.
		dir := t.TempDir()
		b, err := ExtractTo(context.Background(), bytes.NewReader(data), dir, []Verifier{acceptAll{}}, fuzzLimits)
		ents, rerr := os.ReadDir(dir)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err != nil {
			if b != nil {
				t.Fatal("result alongside an error")
			}
			if len(ents) != 0 {
				t.Fatalf("failed extraction (%v) left %d entries", err, len(ents))
			}
			for _, s := range []error{ErrSignature, ErrDigest, ErrSize, ErrUnlisted, ErrMissing, ErrUnsafePath, ErrEntryType, ErrDuplicate, ErrTooLarge, ErrTruncated, ErrFormat} {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		if len(ents) != len(b.Manifest.Files) {
			t.Fatalf("extracted %d entries for %d files", len(ents), len(b.Manifest.Files))
		}
		for _, fe := range b.Manifest.Files {
			got, err := os.ReadFile(b.Path(fe.Path))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(got)
			if hex.EncodeToString(sum[:]) != fe.SHA256 {
				t.Fatalf("%s extracted with the wrong digest", fe.Path)
			}
		}
	})
}
