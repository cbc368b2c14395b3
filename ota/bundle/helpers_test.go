package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testKey is a P-256 key standing in for ota/sign in tests: Sign returns a raw ASN.1 DER signature
// over SHA-256 of the message, as sigstore's ECDSA signer does.
type testKey struct{ priv *ecdsa.PrivateKey }

func newTestKey(t testing.TB) testKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{k}
}

func (k testKey) Sign(_ context.Context, msg []byte) ([]byte, error) {
	h := sha256.Sum256(msg)
	return ecdsa.SignASN1(rand.Reader, k.priv, h[:])
}

func (k testKey) Verifier() Verifier { return testVerifier{&k.priv.PublicKey} }

type testVerifier struct{ pub *ecdsa.PublicKey }

func (v testVerifier) Verify(_ context.Context, msg, sig []byte) error {
	h := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(v.pub, h[:], sig) {
		return errors.New("ecdsa p-256: signature does not verify")
	}
	return nil
}

// sigText is manifest.sig's content for msg.
func (k testKey) sigText(t testing.TB, msg []byte) []byte {
	t.Helper()
	sig, err := k.Sign(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(base64.StdEncoding.EncodeToString(sig))
}

// acceptAll lets fuzzing reach the payload code behind the signature check.
type acceptAll struct{}

func (acceptAll) Verify(context.Context, []byte, []byte) error { return nil }

var fixedTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// pseudoRandom is deterministic filler so that fixtures and golden files are stable.
func pseudoRandom(n int, seed uint64) []byte {
	r := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sampleInput is a small model bundle: a 150 KiB "model" (3 blocks of 64 KiB), a post graph and
// labels.
func sampleInput() BuildInput {
	return BuildInput{
		Kind:      KindModel,
		Name:      "wake",
		Version:   "1.1.0",
		Variant:   "fp32",
		Parent:    "wake@1.0.0",
		CreatedAt: fixedTime,
		Schema: &Schema{
			Inputs:  []Tensor{{Name: "audio", Datatype: "FP32", Shape: []int64{-1, 16000}, DimNames: []string{"batch", ""}}},
			Outputs: []Tensor{{Name: "logits", Datatype: "FP32", Shape: []int64{-1, 2}, DimNames: []string{"batch", ""}}, {Name: "embedding", Datatype: "FP32", Shape: []int64{-1, 128}}},
		},
		ONNX: &ONNXInfo{Opset: 17, IRVersion: 8},
		Requirements: Requirements{
			Arch:               []string{"amd64", "arm64"},
			ExecutionProviders: []string{"cpu"},
			MinORTVersion:      "1.20.0",
			MinOpset:           17,
			MinAgentVersion:    "0.1.0",
			PeakMemoryBytes:    48 << 20,
		},
		Provenance: Provenance{
			CodeRevision: "3f2a9c1",
			DatasetIDs:   []string{"ds-2026-02-wake"},
			ParamsDigest: "sha256:5d41402abc4b2a76b9719d911017c592ae3f9b1c6e0e7f1a2b3c4d5e6f708192",
			Extra:        map[string]string{"team": "audio", "epochs": "40"},
		},
		EmbeddingOutput: "embedding",
		Files: []File{
			{Path: "model.onnx", Role: RoleModel, Bytes: pseudoRandom(150<<10, 1)},
			{Path: "post.onnx", Role: RolePost, Bytes: pseudoRandom(5000, 2)},
			{Path: "labels.txt", Role: RoleLabels, Bytes: []byte("silence\nwake\n")},
		},
	}
}

func buildBytes(t testing.TB, in BuildInput, k testKey) (id string, mb, bundle []byte) {
	t.Helper()
	var buf bytes.Buffer
	id, mb, err := Build(context.Background(), in, k, &buf)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return id, mb, buf.Bytes()
}

// entry is one tar entry of a hand-made (often hostile) archive.
type entry struct {
	hdr  tar.Header
	data []byte
}

func reg(name string, data []byte) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644, ModTime: fixedTime}, data: data}
}

// explode splits a bundle into its entries.
func explode(t testing.TB, b []byte) []entry {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var es []entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return es
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, entry{hdr: *hdr, data: data})
	}
}

// implode writes entries as a tar, trusting hdr.Size over len(data) so that lies can be told.
func implode(t testing.TB, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatalf("write %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// listTree returns every path under root (relative), folders included.
func listTree(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
