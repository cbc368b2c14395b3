package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hostileLimits are small so that bombs are cheap to build; the sample bundle fits well within.
var hostileLimits = Limits{MaxManifestBytes: 64 << 10, MaxFiles: 8, MaxFileBytes: 1 << 20, MaxTotalBytes: 2 << 20}

// TestHostile feeds one hostile bundle per row to both Open and ExtractTo. Each must be refused with
// its specific sentinel and a message naming what was wrong, and ExtractTo must leave nothing
// behind: not in the destination, not beside it.
func TestHostile(t *testing.T) {
	k := newTestKey(t)
	other := newTestKey(t)
	_, mb, good := buildBytes(t, sampleInput(), k)
	base := func() []entry { return explode(t, good) }

	// resign rewrites the manifest with mutate and signs it with k, for lies only a signer could
	// tell (the manifest is then "trusted", and the payload checks must still hold).
	resign := func(es []entry, mutate func(*Manifest)) []entry {
		m, err := ParseManifest(mb)
		if err != nil {
			t.Fatal(err)
		}
		mutate(m)
		raw, err := json.Marshal(m) // any encoding will do: readers take the signed bytes as they are
		if err != nil {
			t.Fatal(err)
		}
		es[0] = reg(ManifestName, raw)
		es[1] = reg(SignatureName, k.sigText(t, raw))
		return es
	}
	with := func(es []entry, f func([]entry) []entry) []byte { return implode(t, f(es)) }

	cases := []struct {
		name   string
		bundle []byte
		want   error
		msg    string // a substring the error must hold, so that it is actionable
	}{
		{"tampered model byte", with(base(), func(es []entry) []entry {
			es[2].data[70000] ^= 0x01 // inside block 1
			return es
		}), ErrDigest, `"model.onnx": block 1 (offset 65536)`},
		{"tampered last block", with(base(), func(es []entry) []entry {
			es[2].data[len(es[2].data)-1] ^= 0x80
			return es
		}), ErrDigest, `"model.onnx": block 2`},
		{"tampered later payload", with(base(), func(es []entry) []entry {
			es[4].data[0] = 'S' // labels.txt, after two payloads were written
			return es
		}), ErrDigest, `"labels.txt"`},
		{"tampered manifest", with(base(), func(es []entry) []entry {
			es[0].data = bytes.Replace(es[0].data, []byte(`"1.1.0"`), []byte(`"1.1.1"`), 1)
			return es
		}), ErrSignature, "matches none of the 1 trusted keys"},
		{"signature from another key", with(base(), func(es []entry) []entry {
			es[1] = reg(SignatureName, other.sigText(t, es[0].data))
			return es
		}), ErrSignature, "matches none"},
		{"missing signature", with(base(), func(es []entry) []entry {
			return append(es[:1], es[2:]...)
		}), ErrSignature, `second entry is "model.onnx", want manifest.sig`},
		{"manifest alone, no signature", implode(t, base()[:1]), ErrSignature, "unsigned bundle"},
		{"empty signature", with(base(), func(es []entry) []entry {
			es[1] = reg(SignatureName, nil)
			return es
		}), ErrSignature, "empty signature"},
		{"truncated file", good[:len(good)-1024-512+5], ErrTruncated, `"labels.txt"`},
		{"truncated in model", good[:3*512+len(mb)+100_000], ErrTruncated, `"model.onnx"`},
		{"truncated in manifest", good[:512+100], ErrTruncated, "manifest.json"},
		{"extra unlisted file", with(base(), func(es []entry) []entry {
			return append(es, reg("extra.bin", []byte("surprise")))
		}), ErrUnlisted, `"extra.bin" is not listed`},
		{"file listed but absent", with(base(), func(es []entry) []entry {
			return append(es[:3], es[4])
		}), ErrMissing, "absent: post.onnx"},
		{"size lie (tar shorter than manifest)", with(base(), func(es []entry) []entry {
			es[3].data = es[3].data[:4000]
			es[3].hdr.Size = 4000
			return es
		}), ErrSize, `"post.onnx": tar says 4000 bytes, manifest says 5000`},
		{"size lie (signed manifest longer than tar)", with(base(), func(es []entry) []entry {
			return resign(es, func(m *Manifest) { m.Files[2].Size = 14 })
		}), ErrSize, `"labels.txt": tar says 13 bytes, manifest says 14`},
		{"dot-dot path", with(base(), func(es []entry) []entry {
			return append(es, reg("../evil.onnx", []byte("x")))
		}), ErrUnsafePath, "climbs out"},
		{"nested dot-dot path", with(base(), func(es []entry) []entry {
			return append(es, reg("a/../../evil.onnx", []byte("x")))
		}), ErrUnsafePath, "climbs out"},
		{"absolute path", with(base(), func(es []entry) []entry {
			return append(es, reg("/tmp/evil.onnx", []byte("x")))
		}), ErrUnsafePath, "absolute"},
		{"folder in name", with(base(), func(es []entry) []entry {
			return append(es, reg("sub/model.onnx", []byte("x")))
		}), ErrUnsafePath, "not flat"},
		{"backslash name", with(base(), func(es []entry) []entry {
			return append(es, reg(`..\evil.onnx`, []byte("x")))
		}), ErrUnsafePath, "backslash"},
		{"non-UTF-8 name", with(base(), func(es []entry) []entry {
			e := reg("mod\xffel.onnx", []byte("x"))
			e.hdr.Format = tar.FormatGNU
			return append(es, e)
		}), ErrUnsafePath, "not valid UTF-8"},
		{"symlink", with(base(), func(es []entry) []entry {
			es[4] = entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "labels.txt", Linkname: "/etc/passwd", Mode: 0o777}}
			return es
		}), ErrEntryType, `"labels.txt": symlink`},
		{"hard link", with(base(), func(es []entry) []entry {
			es[4] = entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "labels.txt", Linkname: "../../etc/shadow"}}
			return es
		}), ErrEntryType, "hard link"},
		{"char device", with(base(), func(es []entry) []entry {
			return append(es, entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3, Mode: 0o666}})
		}), ErrEntryType, "character device"},
		{"block device", with(base(), func(es []entry) []entry {
			return append(es, entry{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "sda", Devmajor: 8}})
		}), ErrEntryType, "block device"},
		{"fifo", with(base(), func(es []entry) []entry {
			return append(es, entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "pipe"}})
		}), ErrEntryType, "fifo"},
		{"folder", with(base(), func(es []entry) []entry {
			return append(es[:2], append([]entry{{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "models/", Mode: 0o755}}}, es[2:]...)...)
		}), ErrEntryType, "folder"},
		{"PAX global header", with(base(), func(es []entry) []entry {
			return append(es[:2], append([]entry{{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"path": "x"}}}}, es[2:]...)...)
		}), ErrEntryType, "PAX global header"},
		{"tar bomb, declared by tar header", func() []byte {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, e := range base()[:2] {
				_ = tw.WriteHeader(&e.hdr)
				_, _ = tw.Write(e.data)
			}
			// 1 TiB declared; the header is written and nothing follows, as in a real bomb.
			_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "model.onnx", Size: 1 << 40, Mode: 0o644})
			_ = tw.Flush()
			return buf.Bytes()
		}(), ErrTooLarge, `"model.onnx" declares 1099511627776 bytes`},
		{"tar bomb, declared by signed manifest", with(base(), func(es []entry) []entry {
			// A huge declared size needs a digest per block, so the manifest limit bounds it too;
			// this one is consistent and only over the per-file limit.
			return resign(es, func(m *Manifest) { setSize(&m.Files[0], 3<<19, m.BlockSize) })
		}), ErrTooLarge, `declares "model.onnx" of 1572864 bytes, limit 1048576`},
		{"tar bomb, total over limit", with(base(), func(es []entry) []entry {
			return resign(es, func(m *Manifest) {
				for i := range m.Files {
					setSize(&m.Files[i], 900<<10, m.BlockSize)
				}
			})
		}), ErrTooLarge, "bytes of payload"},
		{"tar bomb, actual size (huge PAX headers)", with(base(), func(es []entry) []entry {
			// Every declared size is honest and small, yet the stream is megabytes of headers.
			for i := 2; i < len(es); i++ {
				es[i].hdr.Format = tar.FormatPAX
				es[i].hdr.PAXRecords = map[string]string{"comment": strings.Repeat("A", 900<<10)}
			}
			return es
		}), ErrTooLarge, "stream exceeds"},
		{"tar bomb, too many files", with(base(), func(es []entry) []entry {
			return resign(es, func(m *Manifest) {
				for i := range 9 {
					m.Files = append(m.Files, FileEntry{Path: "f" + string(rune('a'+i)), Role: RoleGolden, SHA256: strings.Repeat("0", 64), Blocks: []string{}})
				}
			})
		}), ErrTooLarge, "lists 12 files, limit 8"},
		{"duplicate entries", with(base(), func(es []entry) []entry {
			return append(es, es[2])
		}), ErrDuplicate, `"model.onnx" appears twice`},
		{"duplicate manifest", with(base(), func(es []entry) []entry {
			return append(es, es[0])
		}), ErrDuplicate, `"manifest.json" appears again`},
		{"manifest twice at the head", with(base(), func(es []entry) []entry {
			return append([]entry{es[0]}, es...)
		}), ErrDuplicate, "manifest.json again"},
		{"manifest larger than limit", with(base(), func(es []entry) []entry {
			es[0].data = append(es[0].data, bytes.Repeat([]byte(" "), 70<<10)...)
			es[0].hdr.Size = int64(len(es[0].data))
			return es
		}), ErrTooLarge, `"manifest.json": declares`},
		{"signature first", with(base(), func(es []entry) []entry {
			es[0], es[1] = es[1], es[0]
			return es
		}), ErrFormat, `first entry is "manifest.sig"`},
		{"payload first", with(base(), func(es []entry) []entry {
			return append([]entry{es[2]}, es...)
		}), ErrFormat, `first entry is "model.onnx"`},
		{"signed manifest, bad JSON", with(base(), func(es []entry) []entry {
			raw := []byte(`{"format_version":1,"kind":"model",`)
			es[0] = reg(ManifestName, raw)
			es[1] = reg(SignatureName, k.sigText(t, raw))
			return es
		}), ErrFormat, "decode manifest.json"},
		{"signed manifest, bad semver", with(base(), func(es []entry) []entry {
			return resign(es, func(m *Manifest) { m.Version = "1.1" })
		}), ErrFormat, `version "1.1"`},
		{"signed manifest, unknown field", with(base(), func(es []entry) []entry {
			raw := bytes.Replace(mb, []byte(`"format_version":1`), []byte(`"format_version":1,"backdoor":true`), 1)
			es[0] = reg(ManifestName, raw)
			es[1] = reg(SignatureName, k.sigText(t, raw))
			return es
		}), ErrFormat, `unknown field "backdoor"`},
		{"signed manifest, unsafe listed path", with(base(), func(es []entry) []entry {
			es = resign(es, func(m *Manifest) { m.Files[2].Path = "../labels.txt" })
			es[4].hdr.Name = "../labels.txt"
			return es
		}), ErrUnsafePath, "climbs out"},
		{"empty stream", nil, ErrFormat, "empty stream"},
		{"not a tar", bytes.Repeat([]byte("PK\x03\x04garbage!"), 100), ErrFormat, "read tar header"},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			vs := []Verifier{k.Verifier()}
			_, err := Open(ctx, bytes.NewReader(c.bundle), vs, hostileLimits)
			check(t, "Open", err, c.want, c.msg)
			t.Log(err)

			parent := t.TempDir()
			dest := filepath.Join(parent, "slots", "wake", "b")
			if err := os.MkdirAll(dest, 0o755); err != nil {
				t.Fatal(err)
			}
			_, err = ExtractTo(ctx, bytes.NewReader(c.bundle), dest, vs, hostileLimits)
			check(t, "ExtractTo", err, c.want, c.msg)
			tree := listTree(t, parent)
			if want := []string{"slots", "slots/wake", "slots/wake/b"}; strings.Join(tree, ",") != strings.Join(want, ",") {
				t.Fatalf("ExtractTo left %v, want only the empty destination", tree)
			}
		})
	}
}

func check(t *testing.T, op string, err, want error, msg string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: want %v, got %v", op, want, err)
	}
	for _, s := range []error{ErrSignature, ErrDigest, ErrSize, ErrUnlisted, ErrMissing, ErrUnsafePath, ErrEntryType, ErrDuplicate, ErrTooLarge, ErrTruncated, ErrFormat} {
		if s != want && errors.Is(err, s) {
			t.Fatalf("%s: error matches %v as well as %v: %v", op, s, want, err)
		}
	}
	if !strings.Contains(err.Error(), msg) {
		t.Fatalf("%s: error %q does not say %q", op, err, msg)
	}
}

// setSize makes a manifest entry claim size bytes, with a (fake) digest per block so that the
// manifest stays valid and the lie reaches the limit checks.
func setSize(f *FileEntry, size, blockSize int64) {
	f.Size = size
	f.Blocks = make([]string, NumBlocks(size, blockSize))
	for i := range f.Blocks {
		f.Blocks[i] = strings.Repeat("ab", 32)
	}
}
