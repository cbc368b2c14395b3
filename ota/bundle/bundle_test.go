package bundle

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func TestBuildOpenExtract(t *testing.T) {
	k := newTestKey(t)
	in := sampleInput()
	id, mb, b := buildBytes(t, in, k)

	if want := ID(mb); id != want || len(id) != 64 {
		t.Fatalf("id %q, want sha256 of manifest %q", id, want)
	}
	es := explode(t, b)
	var names []string
	for _, e := range es {
		names = append(names, e.hdr.Name)
	}
	if want := []string{"manifest.json", "manifest.sig", "model.onnx", "post.onnx", "labels.txt"}; !slices.Equal(names, want) {
		t.Fatalf("tar entries %v, want %v", names, want)
	}
	if !bytes.Equal(es[0].data, mb) {
		t.Fatal("manifest.json entry differs from the returned manifest bytes")
	}

	ctx := context.Background()
	other := newTestKey(t)
	got, err := Open(ctx, bytes.NewReader(b), []Verifier{other.Verifier(), k.Verifier()}, Limits{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if got.ID != id || got.Manifest.Ref() != "wake@1.1.0" || got.Manifest.Variant != "fp32" {
		t.Fatalf("Open gave id %s ref %s variant %s", got.ID, got.Manifest.Ref(), got.Manifest.Variant)
	}
	m := got.Manifest
	if f := m.FileByRole(RoleModel); f == nil || f.Size != 150<<10 || len(f.Blocks) != 3 {
		t.Fatalf("model entry %+v", f)
	}
	if f := m.File("labels.txt"); f == nil || len(f.Blocks) != 1 || f.Blocks[0] != f.SHA256 {
		t.Fatalf("a one-block file's block digest must equal its digest: %+v", f)
	}

	dir := filepath.Join(t.TempDir(), "slot", "a")
	x, err := ExtractTo(ctx, bytes.NewReader(b), dir, []Verifier{k.Verifier()}, Limits{})
	if err != nil {
		t.Fatalf("ExtractTo: %v", err)
	}
	for _, f := range in.Files {
		data, err := os.ReadFile(x.Path(f.Path))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, f.Bytes) {
			t.Fatalf("%s differs after extraction", f.Path)
		}
	}
	if tree := listTree(t, dir); len(tree) != 3 {
		t.Fatalf("extracted folder holds %v, want only the 3 payloads", tree)
	}

	// Extracting again over the same folder replaces the files.
	if _, err := ExtractTo(ctx, bytes.NewReader(b), dir, []Verifier{k.Verifier()}, Limits{}); err != nil {
		t.Fatalf("second ExtractTo: %v", err)
	}
}

func TestBuildDeterministicGolden(t *testing.T) {
	// The manifest is the wire format agents parse and the bytes everything is keyed by: the golden
	// file catches any change to field names, order or encoding.
	_, mb1, _ := buildBytes(t, sampleInput(), newTestKey(t))
	_, mb2, _ := buildBytes(t, sampleInput(), newTestKey(t))
	if !bytes.Equal(mb1, mb2) {
		t.Fatal("same input gave different manifest bytes")
	}
	golden := filepath.Join("testdata", "manifest.golden.json")
	if *update {
		if err := os.WriteFile(golden, mb1, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update once to create it)", err)
	}
	if !bytes.Equal(mb1, want) {
		t.Fatalf("manifest bytes changed; if intended, run go test ./ota/bundle -run 'Golden|Fixture' -update\ngot:  %s\nwant: %s", mb1, want)
	}
}

// TestFixtureStillOpens opens a bundle committed under testdata with its public key, so that a
// change that would strand bundles already built (and devices holding them) fails here.
func TestFixtureStillOpens(t *testing.T) {
	bundlePath := filepath.Join("testdata", "wake-1.1.0.bundle")
	pubPath := filepath.Join("testdata", "wake-1.1.0.pub")
	if *update {
		k := newTestKey(t)
		_, _, b := buildBytes(t, sampleInput(), k)
		der, err := x509.MarshalPKIXPublicKey(&k.priv.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bundlePath, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pemBytes, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatalf("%v (run go test -update once to create it)", err)
	}
	blk, _ := pem.Decode(pemBytes)
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(context.Background(), bytes.NewReader(b), []Verifier{testVerifier{pub.(*ecdsa.PublicKey)}}, Limits{})
	if err != nil {
		t.Fatalf("committed fixture no longer opens: %v", err)
	}
	golden, err := os.ReadFile(filepath.Join("testdata", "manifest.golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.ManifestBytes, golden) {
		t.Fatal("fixture manifest differs from manifest.golden.json; regenerate both with -update")
	}
}

func TestBlocks(t *testing.T) {
	k := newTestKey(t)
	in := sampleInput()
	_, _, b := buildBytes(t, in, k)
	got, err := Open(context.Background(), bytes.NewReader(b), []Verifier{k.Verifier()}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m := got.Manifest
	model := in.Files[0].Bytes
	for i, want := range [][2]int64{{0, 65536}, {65536, 65536}, {131072, 150<<10 - 131072}} {
		off, n, err := m.Block("model.onnx", int64(i))
		if err != nil || off != want[0] || n != want[1] {
			t.Fatalf("Block(model.onnx, %d) = %d, %d, %v; want %v", i, off, n, err, want)
		}
		if err := VerifyBlock(m, "model.onnx", int64(i), model[off:off+n]); err != nil {
			t.Fatalf("VerifyBlock %d: %v", i, err)
		}
	}
	if _, _, err := m.Block("model.onnx", 3); !errors.Is(err, ErrFormat) {
		t.Fatalf("block past the end: %v", err)
	}
	if _, _, err := m.Block("nope.onnx", 0); !errors.Is(err, ErrUnlisted) {
		t.Fatalf("block of unlisted file: %v", err)
	}
	bad := bytes.Clone(model[65536 : 2*65536])
	bad[7] ^= 1
	if err := VerifyBlock(m, "model.onnx", 1, bad); !errors.Is(err, ErrDigest) || !strings.Contains(err.Error(), "block 1") {
		t.Fatalf("tampered block: %v", err)
	}
	if err := VerifyBlock(m, "model.onnx", 1, model[:100]); !errors.Is(err, ErrSize) {
		t.Fatalf("short block: %v", err)
	}
}

func TestBlockSizes(t *testing.T) {
	k := newTestKey(t)
	for _, bs := range []int64{MinBlockSize, 100_000, MaxBlockSize} {
		in := sampleInput()
		in.BlockSize = bs
		_, _, b := buildBytes(t, in, k)
		got, err := Open(context.Background(), bytes.NewReader(b), []Verifier{k.Verifier()}, Limits{})
		if err != nil {
			t.Fatalf("block size %d: %v", bs, err)
		}
		if n := len(got.Manifest.File("model.onnx").Blocks); int64(n) != NumBlocks(150<<10, bs) {
			t.Fatalf("block size %d: %d blocks", bs, n)
		}
	}
	for _, bs := range []int64{MinBlockSize - 1, MaxBlockSize + 1, -5} {
		in := sampleInput()
		in.BlockSize = bs
		if _, _, err := Build(context.Background(), in, k, io.Discard); !errors.Is(err, ErrFormat) {
			t.Fatalf("block size %d: want ErrFormat, got %v", bs, err)
		}
	}
}

func TestEmptyFile(t *testing.T) {
	k := newTestKey(t)
	in := sampleInput()
	in.Files = append(in.Files, File{Path: "golden.json", Role: RoleGolden, Bytes: nil})
	_, mb, b := buildBytes(t, in, k)
	if !bytes.Contains(mb, []byte(`"blocks":[]`)) {
		t.Fatalf("empty file should list no blocks: %s", mb)
	}
	dir := t.TempDir()
	if _, err := ExtractTo(context.Background(), bytes.NewReader(b), dir, []Verifier{k.Verifier()}, Limits{}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "golden.json")); err != nil || fi.Size() != 0 {
		t.Fatalf("empty payload: %v %v", fi, err)
	}
}

func TestInspectAndReadManifest(t *testing.T) {
	k := newTestKey(t)
	id, mb, b := buildBytes(t, sampleInput(), k)
	for name, f := range map[string]func(io.Reader) (*Bundle, error){
		"Inspect":      Inspect,
		"ReadManifest": func(r io.Reader) (*Bundle, error) { return ReadManifest(r, Limits{}) },
	} {
		got, err := f(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.ID != id || !bytes.Equal(got.ManifestBytes, mb) || len(got.Signature) == 0 || got.Manifest.Name != "wake" {
			t.Fatalf("%s: %+v", name, got)
		}
		// The head is enough: manifest and signature go ahead of payloads in a transfer.
		m, err := VerifyManifest(context.Background(), got.ManifestBytes, got.Signature, []Verifier{k.Verifier()})
		if err != nil || m.Version != "1.1.0" {
			t.Fatalf("%s then VerifyManifest: %v", name, err)
		}
	}

	// Without a signature Inspect still shows the manifest; ReadManifest refuses.
	es := explode(t, b)
	unsigned := implode(t, append(es[:1:1], es[2:]...))
	if got, err := Inspect(bytes.NewReader(unsigned)); err != nil || got.Signature != nil || got.ID != id {
		t.Fatalf("Inspect unsigned: %v", err)
	}
	if _, err := ReadManifest(bytes.NewReader(unsigned), Limits{}); !errors.Is(err, ErrSignature) {
		t.Fatalf("ReadManifest unsigned: %v", err)
	}
	// Inspect of a tampered manifest works (no verification) and shows the new id.
	es = explode(t, b)
	es[0].data = bytes.Replace(es[0].data, []byte(`"1.1.0"`), []byte(`"6.6.6"`), 1)
	got, err := Inspect(bytes.NewReader(implode(t, es)))
	if err != nil || got.Manifest.Version != "6.6.6" || got.ID == id {
		t.Fatalf("Inspect tampered: %v", err)
	}
}

func TestVerifyManifestRefusals(t *testing.T) {
	k := newTestKey(t)
	_, mb, _ := buildBytes(t, sampleInput(), k)
	ctx := context.Background()
	sig := k.sigText(t, mb)
	cases := map[string]struct {
		sig []byte
		vs  []Verifier
	}{
		"no verifiers":   {sig, nil},
		"empty sig":      {[]byte("  \n"), []Verifier{k.Verifier()}},
		"not base64":     {[]byte("%%%not-base64%%%"), []Verifier{k.Verifier()}},
		"wrong key":      {sig, []Verifier{newTestKey(t).Verifier()}},
		"garbage sig":    {[]byte("aGVsbG8="), []Verifier{k.Verifier()}},
		"sig of other m": {k.sigText(t, []byte("{}")), []Verifier{k.Verifier()}},
	}
	for name, c := range cases {
		if _, err := VerifyManifest(ctx, mb, c.sig, c.vs); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: want ErrSignature, got %v", name, err)
		}
	}
	// A trailing newline (as some tools write) is fine.
	if _, err := VerifyManifest(ctx, mb, append(sig, '\n'), []Verifier{k.Verifier()}); err != nil {
		t.Fatalf("sig with newline: %v", err)
	}
}

func TestParseManifestForwardCompat(t *testing.T) {
	_, mb, _ := buildBytes(t, sampleInput(), newTestKey(t))
	var generic map[string]any
	if err := json.Unmarshal(mb, &generic); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(map[string]any)) []byte {
		var g map[string]any
		_ = json.Unmarshal(mb, &g)
		f(g)
		b, _ := json.Marshal(g)
		return b
	}
	cases := []struct {
		name string
		b    []byte
		msg  string
	}{
		{"newer format", mutate(func(g map[string]any) { g["format_version"] = 2; g["shiny"] = true }), "newer than this reader"},
		{"no format", mutate(func(g map[string]any) { delete(g, "format_version") }), "format_version missing"},
		{"unknown top field", mutate(func(g map[string]any) { g["surprise"] = 1 }), `unknown field "surprise"`},
		{"unknown nested field", mutate(func(g map[string]any) { g["requirements"].(map[string]any)["gpu"] = "yes" }), `unknown field "gpu"`},
		{"bad semver", mutate(func(g map[string]any) { g["version"] = "1.2" }), `version "1.2"`},
		{"v prefix", mutate(func(g map[string]any) { g["version"] = "v1.2.0" }), `version "v1.2.0"`},
		{"bad parent", mutate(func(g map[string]any) { g["parent"] = "wake" }), `want name@version`},
		{"bad kind", mutate(func(g map[string]any) { g["kind"] = "firmware" }), `kind "firmware"`},
		{"bad datatype", mutate(func(g map[string]any) {
			g["schema"].(map[string]any)["inputs"].([]any)[0].(map[string]any)["datatype"] = "float32"
		}), `datatype "float32"`},
		{"bad dim", mutate(func(g map[string]any) {
			g["schema"].(map[string]any)["inputs"].([]any)[0].(map[string]any)["shape"] = []any{-2, 3}
		}), "dimension -2"},
		{"block count", mutate(func(g map[string]any) {
			f := g["files"].([]any)[0].(map[string]any)
			f["blocks"] = f["blocks"].([]any)[:1]
		}), "1 block digests, want 3"},
		{"bad sha", mutate(func(g map[string]any) { g["files"].([]any)[0].(map[string]any)["sha256"] = "ABC" }), `sha256 "ABC"`},
		{"unsafe path", mutate(func(g map[string]any) { g["files"].([]any)[0].(map[string]any)["path"] = "../model.onnx" }), "climbs out"},
		{"reserved path", mutate(func(g map[string]any) { g["files"].([]any)[0].(map[string]any)["path"] = "manifest.sig" }), "reserved"},
		{"case duplicate", mutate(func(g map[string]any) { g["files"].([]any)[1].(map[string]any)["path"] = "Model.onnx" }), "listed twice"},
		{"no model", mutate(func(g map[string]any) { g["files"].([]any)[0].(map[string]any)["role"] = "reference" }), "role model"},
		{"embedding not an output", mutate(func(g map[string]any) { g["embedding_output"] = "nope" }), "embedding_output"},
		{"trailing data", append(bytes.Clone(mb), []byte(` {}`)...), "data after"},
		{"not json", []byte("PK\x03\x04"), "decode"},
		{"block size", mutate(func(g map[string]any) { g["block_size"] = 1 }), "block_size 1"},
	}
	for _, c := range cases {
		_, err := ParseManifest(c.b)
		if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsafePath) && !errors.Is(err, ErrDuplicate) {
			t.Errorf("%s: want a refusal, got %v", c.name, err)
			continue
		}
		if !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %q does not say %q", c.name, err, c.msg)
		}
	}
	// Open maps, with absent optional fields, still parse.
	m, err := ParseManifest(mutate(func(g map[string]any) {
		delete(g, "schema")
		delete(g, "onnx")
		delete(g, "embedding_output")
		delete(g, "requirements")
		delete(g, "provenance")
		delete(g, "variant")
		delete(g, "parent")
	}))
	if err != nil {
		t.Fatalf("minimal manifest: %v", err)
	}
	if m.Schema != nil || m.Variant != "" {
		t.Fatal("absent fields should stay empty")
	}
}

func TestCheckName(t *testing.T) {
	good := []string{"model.onnx", "pre.onnx", "labels.txt", "a", "libonnxruntime.so.1.20.0", "x_y-z+1.bin"}
	bad := map[string]string{
		"":                       "empty",
		"a\x00b":                 "NUL",
		"mod\xffel.onnx":         "UTF-8",
		"/etc/passwd":            "absolute",
		"C:evil":                 "absolute",
		`a\b`:                    "backslash",
		"..":                     "climbs",
		"../x":                   "climbs",
		"a/../../x":              "climbs",
		"sub/model.onnx":         "not flat",
		"sub/":                   "not flat",
		".hidden":                "must match",
		"a b":                    "must match",
		"é.onnx":                 "must match",
		strings.Repeat("a", 256): "must match",
	}
	for _, n := range good {
		if err := CheckName(n); err != nil {
			t.Errorf("CheckName(%q): %v", n, err)
		}
	}
	for n, why := range bad {
		err := CheckName(n)
		if !errors.Is(err, ErrUnsafePath) || !strings.Contains(err.Error(), why) {
			t.Errorf("CheckName(%q) = %v, want ErrUnsafePath saying %q", n, err, why)
		}
	}
}

func TestBuildRefusals(t *testing.T) {
	k := newTestKey(t)
	ctx := context.Background()
	cases := map[string]struct {
		mod  func(*BuildInput)
		want error
	}{
		"bad version":                       {func(in *BuildInput) { in.Version = "latest" }, ErrFormat},
		"unsafe name":                       {func(in *BuildInput) { in.Files[1].Path = "../post.onnx" }, ErrUnsafePath},
		"dup name":                          {func(in *BuildInput) { in.Files[2].Path = "model.onnx" }, ErrDuplicate},
		"two models":                        {func(in *BuildInput) { in.Files[1].Role = RoleModel }, ErrDuplicate},
		"no files":                          {func(in *BuildInput) { in.Files = nil }, ErrFormat},
		"unknown role":                      {func(in *BuildInput) { in.Files[2].Role = "docs" }, ErrFormat},
		"runtime kind without runtime file": {func(in *BuildInput) { in.Kind = KindRuntime }, ErrFormat},
		"manifest too large": {func(in *BuildInput) {
			in.BlockSize = MinBlockSize
			in.Files[0] = File{Path: "model.onnx", Role: RoleModel, Open: func() (io.ReadCloser, error) {
				return io.NopCloser(io.LimitReader(zeroReader{}, 300<<20)), nil // 76800 blocks of 4 KiB
			}}
		}, ErrTooLarge},
	}
	for name, c := range cases {
		in := sampleInput()
		c.mod(&in)
		var buf bytes.Buffer
		if _, _, err := Build(ctx, in, k, &buf); !errors.Is(err, c.want) {
			t.Errorf("%s: want %v, got %v", name, c.want, err)
		} else if buf.Len() != 0 {
			t.Errorf("%s: wrote %d bytes before refusing", name, buf.Len())
		}
	}
	if _, _, err := Build(ctx, sampleInput(), nil, io.Discard); !errors.Is(err, ErrSignature) {
		t.Errorf("nil signer: %v", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestBuildFileChangedBetweenPasses(t *testing.T) {
	in := sampleInput()
	calls := 0
	in.Files[0] = File{Path: "model.onnx", Role: RoleModel, Open: func() (io.ReadCloser, error) {
		calls++
		data := pseudoRandom(100_000, 9)
		if calls == 2 {
			data[99_000] ^= 0xff
		}
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
	_, _, err := Build(context.Background(), in, newTestKey(t), io.Discard)
	if !errors.Is(err, ErrDigest) || !strings.Contains(err.Error(), "changed while building") {
		t.Fatalf("want ErrDigest 'changed while building', got %v", err)
	}
}

func TestBuildFromPath(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.onnx")
	data := pseudoRandom(70_000, 4)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	in := sampleInput()
	in.Files = []File{FileFromPath("model.onnx", RoleModel, p)}
	in.EmbeddingOutput = ""
	k := newTestKey(t)
	_, mb, _ := buildBytes(t, in, k)
	m, err := ParseManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if f := m.Files[0]; f.SHA256 != hex.EncodeToString(sum[:]) || f.Size != 70_000 {
		t.Fatalf("%+v", f)
	}
}

func TestRuntimeKind(t *testing.T) {
	in := BuildInput{Kind: KindRuntime, Name: "onnxruntime", Version: "1.20.1", Variant: "linux-arm64", CreatedAt: fixedTime,
		Requirements: Requirements{Arch: []string{"arm64"}},
		Files:        []File{{Path: "libonnxruntime.so.1.20.1", Role: RoleRuntime, Bytes: pseudoRandom(10_000, 3)}}}
	k := newTestKey(t)
	_, _, b := buildBytes(t, in, k)
	if _, err := Open(context.Background(), bytes.NewReader(b), []Verifier{k.Verifier()}, Limits{}); err != nil {
		t.Fatal(err)
	}
}

func TestCancelled(t *testing.T) {
	k := newTestKey(t)
	_, _, b := buildBytes(t, sampleInput(), k)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	if _, err := ExtractTo(ctx, bytes.NewReader(b), dir, []Verifier{k.Verifier()}, Limits{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	if tree := listTree(t, dir); len(tree) != 0 {
		t.Fatalf("left %v", tree)
	}
	if _, _, err := Build(ctx, sampleInput(), k, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("Build: want context.Canceled, got %v", err)
	}
}

func TestExtractCreatesAndRemovesFolder(t *testing.T) {
	k := newTestKey(t)
	_, _, b := buildBytes(t, sampleInput(), k)
	es := explode(t, b)
	es[4].data = []byte("silence\nWAKE\n") // labels.txt, the last payload: two temp files exist by then
	parent := t.TempDir()
	dir := filepath.Join(parent, "new")
	_, err := ExtractTo(context.Background(), bytes.NewReader(implode(t, es)), dir, []Verifier{k.Verifier()}, Limits{})
	if !errors.Is(err, ErrDigest) || !strings.Contains(err.Error(), `"labels.txt"`) {
		t.Fatalf("want ErrDigest naming labels.txt, got %v", err)
	}
	if tree := listTree(t, parent); len(tree) != 0 {
		t.Fatalf("left %v", tree)
	}
}

// TestExtractReplacesPlantedSymlink: a symlink already in the slot (planted earlier) must not lead
// a write outside it; the rename replaces the link itself.
func TestExtractReplacesPlantedSymlink(t *testing.T) {
	k := newTestKey(t)
	_, _, b := buildBytes(t, sampleInput(), k)
	parent := t.TempDir()
	outside := filepath.Join(parent, "outside.txt")
	if err := os.WriteFile(outside, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "slot")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "labels.txt")); err != nil {
		t.Fatal(err)
	}
	if _, err := ExtractTo(context.Background(), bytes.NewReader(b), dir, []Verifier{k.Verifier()}, Limits{}); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(outside); string(data) != "keep" {
		t.Fatalf("file outside the slot changed: %q", data)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "labels.txt")); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("labels.txt should now be a regular file: %v %v", fi, err)
	}
}
