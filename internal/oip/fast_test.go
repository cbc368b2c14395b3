package oip

import (
	"encoding/binary"
	"math"
	"reflect"
	"strconv"
	"testing"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// TestFastFloats checks that the one-pass parser agrees with strconv where it accepts a value,
// and that what it refuses still parses (or fails) through the general walk.
func TestFastFloats(t *testing.T) {
	for _, tc := range []struct {
		data string
		n    int
		fast bool      // the fast path takes it
		want []float64 // nil: decodeJSONData must fail
	}{
		{"[1,2,3]", 3, true, []float64{1, 2, 3}},
		{" [ [ -1.5 , 2e3 ] ,\n[0.25,\t3E-2] ] ", 4, true, []float64{-1.5, 2000, 0.25, 0.03}},
		{"7", 1, true, []float64{7}},
		{"[[[0.1]]]", 1, true, []float64{0.1}},
		{`["NaN",1]`, 2, false, []float64{math.NaN(), 1}},
		{"[1.00000000000000000001,2]", 2, false, []float64{1, 2}},
		{"[1e30,2]", 2, false, []float64{1e30, 2}},
		{"[1,2]", 3, false, nil},
		{"[1,2,3]", 2, false, nil},
		{"[1,,2]", 2, false, nil},
		{"[1 2]", 2, false, nil},
		{"[1,2", 2, false, nil},
		{"[1,2]]", 2, true, nil},              // trailing data: the caller's check,
		{"[1.,2]", 2, false, []float64{1, 2}}, // strconv's leniency, as before,
		{"[-,2]", 2, false, nil},
		{"[1x,2]", 2, false, nil},
		{"[[],1,2]", 2, false, []float64{1, 2}},
		{"[true,1]", 2, false, nil},
	} {
		for _, f32 := range []bool{true, false} {
			s := &scanner{b: []byte(tc.data)}
			x := make([]float64, tc.n)
			got := fastFloats(s, x, f32)
			if got != tc.fast {
				t.Errorf("%s (f32 %v): fast path took it: %v, want %v", tc.data, f32, got, tc.fast)
			}
			if got && tc.want != nil && s.i != len(tc.data) && tc.data[s.i:] != " " {
				t.Errorf("%s: fast path stopped at %d", tc.data, s.i)
			}
			dt := onnxrt.FP64
			if f32 {
				dt = onnxrt.FP32
			}
			v, err := decodeJSONData(dt, tc.n, []byte(tc.data))
			if tc.want == nil {
				if err == nil {
					t.Errorf("%s (%s): parsed to %v, want an error", tc.data, dt, v)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s (%s): %v", tc.data, dt, err)
				continue
			}
			for i, w := range tc.want {
				var g float64
				if f32 {
					g, w = float64(v.([]float32)[i]), float64(float32(w))
				} else {
					g = v.([]float64)[i]
				}
				if g != w && !(math.IsNaN(g) && math.IsNaN(w)) {
					t.Errorf("%s (%s): element %d = %v, want %v", tc.data, dt, i, g, w)
				}
			}
		}
	}
}

// TestFastFloatsRounding compares the fast path with strconv on many float32 and float64
// values written the way clients write them (shortest round-trip form) and with fewer digits.
func TestFastFloatsRounding(t *testing.T) {
	for i := range 200000 {
		f := math.Float32frombits(uint32(i) * 2654435761)
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		for _, tok := range []string{
			strconv.FormatFloat(float64(f), 'g', -1, 32),
			strconv.FormatFloat(float64(f), 'f', 6, 32),
			strconv.FormatFloat(float64(f)*1e-3, 'g', 9, 64),
		} {
			x32 := make([]float32, 1)
			if fastFloats(&scanner{b: []byte(tok)}, x32, true) {
				want, _ := strconv.ParseFloat(tok, 32)
				if x32[0] != float32(want) {
					t.Fatalf("%s: fast float32 %v, strconv %v", tok, x32[0], float32(want))
				}
			}
			x64 := make([]float64, 1)
			if fastFloats(&scanner{b: []byte(tok)}, x64, false) {
				want, _ := strconv.ParseFloat(tok, 64)
				if x64[0] != want {
					t.Fatalf("%s: fast float64 %v, strconv %v", tok, x64[0], want)
				}
			}
		}
	}
}

func TestParseEight(t *testing.T) {
	for _, s := range []string{"00000000", "12345678", "99999999", "00000001", "10000000", "90817263"} {
		w := binary.LittleEndian.Uint64([]byte(s))
		want, _ := strconv.ParseUint(s, 10, 64)
		if !eightDigits(w) || parseEight(w) != want {
			t.Errorf("%s: digits %v value %d, want %d", s, eightDigits(w), parseEight(w), want)
		}
	}
	for _, s := range []string{"1234567a", "/2345678", ":2345678", "1234 678", "12345678"[:7] + "\xff"} {
		if eightDigits(binary.LittleEndian.Uint64([]byte(s))) {
			t.Errorf("%q taken for 8 digits", s)
		}
	}
}

func TestDecodeBinary(t *testing.T) {
	for _, tc := range []struct {
		d    onnxrt.DType
		data any
	}{
		{onnxrt.FP32, []float32{1.5, -2, float32(math.Inf(1))}},
		{onnxrt.FP64, []float64{1e300, -0.25}},
		{onnxrt.FP16, []uint16{0x3c00, 0x7c00}},
		{onnxrt.INT8, []int8{-128, 127}},
		{onnxrt.UINT8, []uint8{0, 255}},
		{onnxrt.INT16, []int16{-32768, 1}},
		{onnxrt.INT32, []int32{-1, 1 << 30}},
		{onnxrt.UINT32, []uint32{1<<32 - 1}},
		{onnxrt.INT64, []int64{-1 << 62, 7}},
		{onnxrt.UINT64, []uint64{1<<64 - 1}},
		{onnxrt.BOOL, []bool{true, false}},
	} {
		b, err := binary.Append(nil, binary.LittleEndian, tc.data)
		if err != nil {
			t.Fatal(err)
		}
		n := onnxrt.Tensor{DType: tc.d, Data: tc.data}.Len()
		// At an odd offset too, as binary inputs follow a JSON header of any length.
		odd := append([]byte{0}, b...)[1:]
		for _, in := range [][]byte{b, odd} {
			for _, alias := range []bool{false, true} {
				got, err := decodeBinary(tc.d, n, in, alias)
				if err != nil {
					t.Fatalf("%s: %v", tc.d, err)
				}
				if !reflect.DeepEqual(got, tc.data) {
					t.Errorf("%s (alias %v): %v, want %v", tc.d, alias, got, tc.data)
				}
			}
		}
	}
	if _, err := decodeBinary(onnxrt.FP32, 3, make([]byte, 8), true); err == nil {
		t.Error("8 bytes decoded as 3 FP32 elements")
	}
}

func TestAppendBinaryLayout(t *testing.T) {
	for _, data := range []any{[]float32{1.5, -2}, []float64{3}, []int8{-1}, []uint8{7}, []int16{-2}, []uint16{9},
		[]int32{-3}, []uint32{4}, []int64{-5}, []uint64{6}, []bool{true, false}, []float32{}} {
		want, _ := binary.Append([]byte("x"), binary.LittleEndian, data)
		if got := appendBinary([]byte("x"), data); !reflect.DeepEqual(got, want) {
			t.Errorf("%T: % x, want % x", data, got, want)
		}
	}
}

func TestDecodeBinaryAlias(t *testing.T) {
	buf := make([]byte, 4*8+1) // 8-aligned by Go's allocator
	got, _ := decodeBinary(onnxrt.FP32, 8, buf[:32], true)
	buf[0] = 0x3f // writes through: the slice is a view
	if hostLittleEndian && got.([]float32)[0] == 0 {
		t.Error("aligned input was copied, not viewed")
	}
	got, _ = decodeBinary(onnxrt.FP32, 8, buf[1:33], true)
	buf[1] = 0x3f
	if got.([]float32)[0] != 0 {
		t.Error("misaligned input was viewed in place")
	}
}
