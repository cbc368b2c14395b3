package dataset

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"codeberg.org/sbinet/npyio/npy"

	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

func TestNPYHeader(t *testing.T) {
	for _, tc := range []struct {
		dtype onnxrt.DType
		shape []int64
		dict  string
	}{
		// What numpy.save writes for these arrays (numpy 1.x and 2.x, format 1.0).
		{onnxrt.FP32, []int64{2, 3}, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"},
		{onnxrt.UINT8, []int64{5}, "{'descr': '|u1', 'fortran_order': False, 'shape': (5,), }"},
		{onnxrt.INT64, []int64{}, "{'descr': '<i8', 'fortran_order': False, 'shape': (), }"},
		{onnxrt.FP64, []int64{10, 1, 64, 64}, "{'descr': '<f8', 'fortran_order': False, 'shape': (10, 1, 64, 64), }"},
		{onnxrt.BOOL, []int64{3, 0}, "{'descr': '|b1', 'fortran_order': False, 'shape': (3, 0), }"},
	} {
		h, err := NPYHeader(tc.dtype, tc.shape)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(h, []byte("\x93NUMPY\x01\x00")) {
			t.Fatalf("%v: magic/version %q", tc.shape, h[:8])
		}
		hlen := int(binary.LittleEndian.Uint16(h[8:10]))
		if len(h) != 10+hlen || len(h)%64 != 0 {
			t.Fatalf("%v: header length %d in %d bytes; the data must start on a 64-byte boundary", tc.shape, hlen, len(h))
		}
		body := string(h[10:])
		if !strings.HasSuffix(body, "\n") || strings.TrimRight(body, " \n") != tc.dict {
			t.Fatalf("%v: header %q, want %q padded", tc.shape, body, tc.dict)
		}
	}
	// numpy's own bytes for np.save(np.zeros((2,3), '<f4')): header length 118, 128 in all.
	h, _ := NPYHeader(onnxrt.FP32, []int64{2, 3})
	if len(h) != 128 || h[8] != 118 {
		t.Fatalf("header of a (2, 3) float32 array is %d bytes (length byte %d), numpy writes 128 (118)", len(h), h[8])
	}
	if _, err := NPYHeader(onnxrt.BYTES, []int64{1}); !errors.Is(err, ErrNPY) {
		t.Fatalf("string tensors: %v, want ErrNPY", err)
	}
}

func sample(t *testing.T, ts ...onnxrt.Tensor) Sample {
	t.Helper()
	var s Sample
	for _, x := range ts {
		e, err := oip.Encode(x)
		if err != nil {
			t.Fatal(err)
		}
		// Through JSON, as samples travel.
		b, _ := json.Marshal(e)
		var back oip.Tensor
		json.Unmarshal(b, &back)
		s.Inputs = append(s.Inputs, back)
	}
	return s
}

func TestStack(t *testing.T) {
	f32 := func(shape []int64, v ...float32) onnxrt.Tensor {
		return onnxrt.Tensor{Name: "x", DType: onnxrt.FP32, Shape: shape, Data: v}
	}
	third := float32(1) / 3
	for _, tc := range []struct {
		name    string
		samples [][]onnxrt.Tensor
		shape   []int64
		data    []float32
		err     bool
	}{
		{"batch of one each", [][]onnxrt.Tensor{{f32([]int64{1, 2}, 1, 2)}, {f32([]int64{1, 2}, third, -4.5e-7)}}, []int64{2, 2}, []float32{1, 2, third, -4.5e-7}, false},
		{"batches add up", [][]onnxrt.Tensor{{f32([]int64{2, 1}, 1, 2)}, {f32([]int64{1, 1}, 3)}}, []int64{3, 1}, []float32{1, 2, 3}, false},
		{"scalars become rows", [][]onnxrt.Tensor{{f32(nil, 5)}, {f32(nil, math.MaxFloat32)}}, []int64{2}, []float32{5, math.MaxFloat32}, false},
		{"shapes differ", [][]onnxrt.Tensor{{f32([]int64{1, 2}, 1, 2)}, {f32([]int64{1, 3}, 1, 2, 3)}}, nil, nil, true},
		{"two inputs", [][]onnxrt.Tensor{{f32([]int64{1}, 1), f32([]int64{1}, 2)}}, nil, nil, true},
		{"types differ", [][]onnxrt.Tensor{{f32([]int64{1}, 1)}, {{Name: "x", DType: onnxrt.INT64, Shape: []int64{1}, Data: []int64{1}}}}, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st Stack
			var err error
			for _, s := range tc.samples {
				if err = st.Add(sample(t, s...)); err != nil {
					break
				}
			}
			if tc.err {
				if !errors.Is(err, ErrNPY) {
					t.Fatalf("err %v, want ErrNPY", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if _, err := st.WriteTo(&b); err != nil {
				t.Fatal(err)
			}
			h, _ := NPYHeader(onnxrt.FP32, tc.shape)
			if !bytes.HasPrefix(b.Bytes(), h) {
				t.Fatalf("header %q, want %q", b.Bytes()[:len(h)], h)
			}
			got := make([]float32, (b.Len()-len(h))/4)
			binary.Read(bytes.NewReader(b.Bytes()[len(h):]), binary.LittleEndian, got)
			if !slices.Equal(got, tc.data) {
				t.Fatalf("data %v, want %v", got, tc.data)
			}
			// An independent reader (the one bundle build uses for .npy samples) agrees.
			r, err := npy.NewReader(bytes.NewReader(b.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			var shape []int64
			for _, d := range r.Header.Descr.Shape {
				shape = append(shape, int64(d))
			}
			var back []float32
			if err := r.Read(&back); err != nil || strings.Trim(r.Header.Descr.Type, "'") != "<f4" || r.Header.Descr.Fortran || !slices.Equal(shape, tc.shape) || !slices.Equal(back, tc.data) {
				t.Fatalf("npyio reads %v %s %v: %v", shape, r.Header.Descr.Type, back, err)
			}
		})
	}
}

func TestManifestCheck(t *testing.T) {
	d := strings.Repeat("ab", 32)
	good := Manifest{Capture: d, Model: "m", Samples: 3, Size: 100, BlockSize: 64, Blocks: []string{d, d}, SHA256: d}
	for _, tc := range []struct {
		name string
		edit func(m *Manifest)
		ok   bool
	}{
		{"good", func(*Manifest) {}, true},
		{"short id", func(m *Manifest) { m.Capture = "abc" }, false},
		{"upper-case id", func(m *Manifest) { m.Capture = strings.ToUpper(d) }, false},
		{"block count", func(m *Manifest) { m.Blocks = m.Blocks[:1] }, false},
		{"bad digest", func(m *Manifest) { m.Blocks = []string{d, "zz"} }, false},
		{"no samples", func(m *Manifest) { m.Samples = 0 }, false},
		{"huge blocks", func(m *Manifest) { m.BlockSize = 2 << 20; m.Blocks = []string{d} }, false},
	} {
		m := good
		m.Blocks = slices.Clone(good.Blocks)
		tc.edit(&m)
		if err := m.Check(); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
