package transfer

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/sign"
)

func testBundle(t *testing.T, size int) (*bundle.Bundle, map[string][]byte) {
	t.Helper()
	s, err := sign.GenerateKey(sign.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	model := make([]byte, size)
	for i := range model {
		model[i] = byte(rng.Uint32())
	}
	files := map[string][]byte{"model.onnx": model, "labels.txt": []byte("yes\nno\n")}
	var buf bytes.Buffer
	_, _, err = bundle.Build(context.Background(), bundle.BuildInput{
		Kind: bundle.KindModel, Name: "wake", Version: "1.0.0", BlockSize: 4096,
		Files: []bundle.File{{Path: "model.onnx", Role: bundle.RoleModel, Bytes: model}, {Path: "labels.txt", Role: bundle.RoleLabels, Bytes: files["labels.txt"]}},
	}, s, &buf)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Open(context.Background(), &buf, []bundle.Verifier{s.Verifier()}, bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return b, files
}

func frames(t *testing.T, b *bundle.Bundle, files map[string][]byte) []Frame {
	var out []Frame
	for _, f := range b.Manifest.Files {
		for i := int64(0); i < bundle.NumBlocks(f.Size, b.Manifest.BlockSize); i++ {
			off, n, err := b.Manifest.Block(f.Path, i)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, Frame{Bundle: b.ID, File: f.Path, Index: i, Data: files[f.Path][off : off+n]})
		}
	}
	return out
}

func TestDownloadResumesAndVerifies(t *testing.T) {
	b, files := testBundle(t, 50_000)
	dir := t.TempDir()
	fr := frames(t, b, files)
	d, err := OpenDownload(b.ID, b.Manifest, dir)
	if err != nil {
		t.Fatal(err)
	}
	// Half the blocks arrive, encoded and decoded as on the wire, then the agent dies.
	for _, f := range fr[:len(fr)/2] {
		g, err := DecodeFrame(f.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if fresh, err := d.Put(g); err != nil || !fresh {
			t.Fatalf("put %s/%d: %v %v", f.File, f.Index, fresh, err)
		}
	}
	if fresh, _ := d.Put(fr[0]); fresh {
		t.Fatal("duplicate counted as fresh")
	}
	d.Close()
	// Corrupt one verified block on disk: resume must refetch it, and only it, among the first half.
	part := filepath.Join(dir, "model.onnx.part")
	fh, _ := os.OpenFile(part, os.O_RDWR, 0)
	fh.WriteAt([]byte{0xff, 0xfe}, 4096*3+10)
	fh.Close()

	d, err = OpenDownload(b.ID, b.Manifest, dir)
	if err != nil {
		t.Fatal(err)
	}
	p := d.Progress()
	if p.Resumed != int64(len(fr)/2-1) {
		t.Fatalf("resumed %d verified blocks, want %d", p.Resumed, len(fr)/2-1)
	}
	var asked int
	for _, r := range d.Missing(1000) {
		for _, i := range r.Blocks {
			asked++
			if r.File == "model.onnx" && i < int64(len(fr)/2) && i != 3 {
				t.Fatalf("re-requested verified block %d", i)
			}
		}
	}
	if asked != len(fr)-len(fr)/2+1 {
		t.Fatalf("asked for %d blocks, want %d", asked, len(fr)-len(fr)/2+1)
	}
	for _, f := range fr {
		if _, err := d.Put(f); err != nil {
			t.Fatal(err)
		}
	}
	if !d.Done() {
		t.Fatal("not done")
	}
	out, err := d.Finish()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, _ := os.ReadFile(filepath.Join(out, name))
		if !bytes.Equal(got, want) {
			t.Fatalf("%s differs after download", name)
		}
	}
}

func TestDownloadRefusals(t *testing.T) {
	b, files := testBundle(t, 20_000)
	other, _ := testBundle(t, 100)
	fr := frames(t, b, files)
	d, err := OpenDownload(b.ID, b.Manifest, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tampered := fr[1]
	tampered.Data = bytes.Clone(tampered.Data)
	tampered.Data[0] ^= 1
	short := fr[1]
	short.Data = short.Data[:100]
	cases := []struct {
		name string
		f    Frame
		want error
	}{
		{"tampered block", tampered, bundle.ErrDigest},
		{"short block", short, bundle.ErrSize},
		{"endless data: index past the end", Frame{Bundle: b.ID, File: "model.onnx", Index: 999, Data: []byte("x")}, ErrUnexpected},
		{"file not in manifest", Frame{Bundle: b.ID, File: "evil.sh", Index: 0, Data: []byte("x")}, ErrUnexpected},
		{"path escape", Frame{Bundle: b.ID, File: "../model.onnx", Index: 0, Data: []byte("x")}, ErrUnexpected},
		{"another bundle", Frame{Bundle: other.ID, File: "model.onnx", Index: 0, Data: fr[0].Data}, ErrUnexpected},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := d.Put(c.f); !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
	if p := d.Progress(); p.BlocksHave != 0 {
		t.Fatalf("refused frames were counted: %+v", p)
	}
}

func TestFrameAndRequestParsing(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, bad := range [][]byte{nil, []byte("EFB0xxxx"), []byte("EFB1\xff\xff\xff\xff{}"), append([]byte("EFB1\x00\x00\x00\x02"), "{}"...)} {
		if _, err := DecodeFrame(bad); !errors.Is(err, ErrFrame) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	for _, bad := range []string{`{"bundle":"x","file":"a"}`, `{"bundle":"` + id + `","file":""}`, `{"bundle":"` + id + `","file":"a","blocks":[-1]}`, `{"bundle":"` + id + `","file":"a","extra":1}`, `nope`} {
		if _, err := ParseRequest([]byte(bad)); !errors.Is(err, ErrRequest) {
			t.Errorf("%s: %v", bad, err)
		}
	}
	many := make([]int64, 200)
	reqs := Coalesce(id, "m", many)
	if len(reqs) != 4 || len(reqs[0].Blocks) != MaxRequestBlocks {
		t.Fatalf("coalesce: %d requests", len(reqs))
	}
}
