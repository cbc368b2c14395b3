package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
)

// BenchmarkVerify measures Open (signature, then size, SHA-256 and block digests of every payload)
// over a whole bundle in memory; BenchmarkSHA256 is plain SHA-256 over the same bytes, the floor
// Verify is compared against:
//
//	go test ./ota/bundle -run '^$' -bench 'Verify|SHA256' -benchtime 20x
func BenchmarkVerify(b *testing.B) {
	for _, size := range []int{5 << 20, 50 << 20} {
		data, vs := benchBundle(b, size)
		b.Run(fmt.Sprintf("%dMB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := Open(context.Background(), bytes.NewReader(data), vs, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSHA256(b *testing.B) {
	for _, size := range []int{5 << 20, 50 << 20} {
		data, _ := benchBundle(b, size)
		b.Run(fmt.Sprintf("%dMB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				sha256.Sum256(data)
			}
		})
	}
}

// BenchmarkExtract adds the cost of writing and fsyncing the payloads to a folder.
func BenchmarkExtract(b *testing.B) {
	data, vs := benchBundle(b, 50<<20)
	dir := b.TempDir() // reused: each extraction replaces the previous files
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ExtractTo(context.Background(), bytes.NewReader(data), dir, vs, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

var benchCache = map[int]struct {
	data []byte
	k    testKey
}{}

func benchBundle(b *testing.B, modelSize int) ([]byte, []Verifier) {
	b.Helper()
	if c, ok := benchCache[modelSize]; ok {
		return c.data, []Verifier{c.k.Verifier()}
	}
	k := newTestKey(b)
	in := sampleInput()
	in.Files[0].Bytes = pseudoRandom(modelSize, 7)
	_, _, data := buildBytes(b, in, k)
	benchCache[modelSize] = struct {
		data []byte
		k    testKey
	}{data, k}
	return data, []Verifier{k.Verifier()}
}
