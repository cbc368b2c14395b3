package updater

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/sign"
	"github.com/edgefleet/edgefleet/ota/transfer"
)

type testBundle struct {
	id     string
	mb     []byte
	sig    []byte
	m      *bundle.Manifest
	files  map[string][]byte
	signer *sign.Signer
}

func makeBundle(t *testing.T, s *sign.Signer, size int, version string) testBundle {
	t.Helper()
	model := bytes.Repeat([]byte(version), size/len(version)+1)[:size]
	var buf bytes.Buffer
	_, _, err := bundle.Build(context.Background(), bundle.BuildInput{Kind: bundle.KindModel, Name: "wake", Version: version, BlockSize: 4096,
		Files: []bundle.File{{Path: "model.onnx", Role: bundle.RoleModel, Bytes: model}}}, s, &buf)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Open(context.Background(), &buf, []bundle.Verifier{s.Verifier()}, bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return testBundle{id: b.ID, mb: b.ManifestBytes, sig: b.Signature, m: b.Manifest, files: map[string][]byte{"model.onnx": model}, signer: s}
}

// server answers requests the way the control plane does, with a hook to misbehave.
func server(f *Fetcher, b testBundle, mangle func(transfer.Frame) []transfer.Frame) func(context.Context, transfer.Request) error {
	return func(_ context.Context, r transfer.Request) error {
		var frames []transfer.Frame
		if r.File == transfer.HeadManifest {
			frames = []transfer.Frame{{Bundle: r.Bundle, File: transfer.HeadManifest, Data: b.mb}, {Bundle: r.Bundle, File: transfer.HeadSignature, Data: b.sig}}
		} else {
			for _, i := range r.Blocks {
				off, n, _ := b.m.Block(r.File, i)
				frames = append(frames, transfer.Frame{Bundle: r.Bundle, File: r.File, Index: i, Data: b.files[r.File][off : off+n]})
			}
		}
		go func() {
			for _, fr := range frames {
				out := []transfer.Frame{fr}
				if mangle != nil {
					out = mangle(fr)
				}
				for _, o := range out {
					f.OnFrame(o.Encode())
				}
			}
		}()
		return nil
	}
}

func TestFetchRefusals(t *testing.T) {
	s, _ := sign.GenerateKey(sign.ECDSAP256)
	other, _ := sign.GenerateKey(sign.ECDSAP256)
	good := makeBundle(t, s, 40_000, "1.0.0")
	alt := makeBundle(t, s, 40_000, "2.0.0")
	foreign := makeBundle(t, other, 40_000, "1.0.0")
	cases := []struct {
		name   string
		want   string // bundle id the desired state names
		serve  testBundle
		mangle func(transfer.Frame) []transfer.Frame
		err    error
	}{
		{"happy path", good.id, good, nil, nil},
		// The manifest served is another (validly signed) bundle than the desired one.
		{"mix-and-match", good.id, alt, func(f transfer.Frame) []transfer.Frame {
			f.Bundle = good.id
			return []transfer.Frame{f}
		}, ErrMismatch},
		{"signed by an untrusted key", foreign.id, foreign, nil, bundle.ErrSignature},
		{"tampered blocks", good.id, good, func(f transfer.Frame) []transfer.Frame {
			if f.File == "model.onnx" {
				f.Data = append([]byte{f.Data[0] ^ 0xff}, f.Data[1:]...)
			}
			return []transfer.Frame{f}
		}, bundle.ErrDigest},
		{"endless data", good.id, good, func(f transfer.Frame) []transfer.Frame {
			out := []transfer.Frame{}
			for i := int64(0); i < 40; i++ {
				out = append(out, transfer.Frame{Bundle: f.Bundle, File: "model.onnx", Index: 1000 + i, Data: []byte("more")})
			}
			return append(out, f)
		}, ErrEndless},
		{"slow retrieval", good.id, good, func(f transfer.Frame) []transfer.Frame {
			if f.File == "model.onnx" && f.Index >= 3 {
				return nil // the sender stops after a few blocks
			}
			return []transfer.Frame{f}
		}, ErrStalled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &Fetcher{Dir: t.TempDir(), RequestTimeout: 50 * time.Millisecond, StallTimeout: 500 * time.Millisecond, MaxUnexpected: 8}
			f.Request = server(f, c.serve, c.mangle)
			dir, m, _, err := f.Fetch(context.Background(), c.want, false, []bundle.Verifier{s.Verifier()})
			if c.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(filepath.Join(dir, "model.onnx"))
				if !bytes.Equal(got, c.serve.files["model.onnx"]) || m.Version != "1.0.0" {
					t.Fatal("downloaded content differs")
				}
				return
			}
			if !errors.Is(err, c.err) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
			if _, statErr := os.Stat(filepath.Join(f.Dir, c.want, "model.onnx")); statErr == nil {
				t.Fatal("a refused download left a finished payload file")
			}
		})
	}
}
