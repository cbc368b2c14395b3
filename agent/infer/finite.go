package infer

import (
	"math"
	"unsafe"
)

// nonFinite32 reports whether d holds a NaN or an Inf: an exponent of all ones. It reads two
// elements per 64-bit word and ORs, per element, (exponent bits + 1 << 23), whose bit 31 is set
// exactly when the exponent is all ones; no branch per element, so a clean input (the usual
// case) costs about a third of comparing each value with itself, which on a small model was
// a visible part of a call.
func nonFinite32(d []float32) bool {
	const m, k = 0x7f8000007f800000, 0x0080000000800000
	var acc uint32
	if len(d) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(d)))%8 != 0 {
		acc |= math.Float32bits(d[0])&0x7f800000 + 0x00800000
		d = d[1:]
	}
	if len(d)%2 == 1 {
		acc |= math.Float32bits(d[len(d)-1])&0x7f800000 + 0x00800000
	}
	w := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(d))), len(d)/2)
	var a, b, c, e uint64
	for len(w) >= 4 {
		a |= w[0]&m + k
		b |= w[1]&m + k
		c |= w[2]&m + k
		e |= w[3]&m + k
		w = w[4:]
	}
	for _, x := range w {
		a |= x&m + k
	}
	a |= b | c | e
	return (a|a>>32|uint64(acc))&0x80000000 != 0
}
