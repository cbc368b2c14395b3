package oip

import (
	"encoding/binary"
	"math"
)

// fastFloats parses a data value made only of (nested) arrays of plain decimal numbers into x,
// in one pass over the bytes with no call per element: the common request, and the one whose
// parse dominates HTTP inference of a small model. It reports false, and leaves the scanner
// where it was, on anything else (strings such as "NaN", literals, empty arrays, too many or
// too few elements, malformed JSON, numbers that need strconv to round exactly); decodeAt's
// general walk then parses the value or says what is wrong with it. f32 selects float32
// rounding.
func fastFloats[T float32 | float64](s *scanner, x []T, f32 bool) bool {
	b, i, depth, n := s.b, s.i, 0, 0
	for {
		// A value: an array opening, or a number.
		for i < len(b) && isSpace(b[i]) {
			i++
		}
		if i >= len(b) {
			return false
		}
		if b[i] == '[' {
			if depth++; depth > 32 {
				return false
			}
			i++
			continue
		}
		v, end, ok := fastNumber(b, i)
		if !ok || n >= len(x) {
			return false
		}
		if f32 && math.Float64bits(v)&(1<<29-1) == 1<<28 {
			return false // on a float32 midpoint: strconv rounds it (see parseFloat)
		}
		x[n], n, i = T(v), n+1, end
		// After a value: ',' then another value, or ']' closing arrays.
		for {
			if depth == 0 {
				s.i = i
				return n == len(x)
			}
			for i < len(b) && isSpace(b[i]) {
				i++
			}
			if i >= len(b) {
				return false
			}
			if b[i] == ']' {
				depth--
				i++
				continue
			}
			if b[i] != ',' {
				return false
			}
			i++
			break
		}
	}
}

// eightDigits reports whether the 8 bytes of w (little-endian) are all ASCII digits.
func eightDigits(w uint64) bool {
	return (w&0xF0F0F0F0F0F0F0F0)|(((w+0x0606060606060606)&0xF0F0F0F0F0F0F0F0)>>4) == 0x3333333333333333
}

// parseEight returns the value of 8 ASCII digits, the first in the lowest byte of w, with three
// multiplications instead of eight dependent ones.
func parseEight(w uint64) uint64 {
	w -= 0x3030303030303030
	w = w*10 + w>>8
	return ((w&0x000000FF000000FF)*(100+(1000000<<32)) + (w>>16&0x000000FF000000FF)*(1+(10000<<32))) >> 32
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// fastNumber parses the number at b[i:] as fastFloat does and returns where it ends; ok is
// false where fastFloat would refuse it. What follows the number is the caller's to check.
func fastNumber(b []byte, i int) (f float64, end int, ok bool) {
	neg := false
	if i < len(b) && b[i] == '-' {
		neg, i = true, i+1
	}
	var mant uint64
	digits, exp := 0, 0
	start := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		mant = mant*10 + uint64(b[i]-'0')
		digits++
	}
	if i == start {
		return 0, 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		fs := i
		// Clients write float32 values with up to 9 significant digits: most fractions hold 8
		// digits in a row, taken in one step.
		if i+8 <= len(b) && digits < 8 {
			if w := binary.LittleEndian.Uint64(b[i:]); eightDigits(w) {
				mant = mant*100000000 + parseEight(w)
				digits += 8
				i += 8
			}
		}
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			mant = mant*10 + uint64(b[i]-'0')
			digits++
		}
		if i == fs {
			return 0, 0, false
		}
		exp -= i - fs
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg, i = b[i] == '-', i+1
		}
		es, e := i, 0
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9' && e < 1000; i++ {
			e = e*10 + int(b[i]-'0')
		}
		if i == es {
			return 0, 0, false
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	if digits > 15 || mant >= 1<<53 {
		return 0, 0, false
	}
	f = float64(mant)
	switch {
	case exp == 0:
	case exp > 0 && exp <= 22:
		f *= pow10[exp]
	case exp < 0 && exp >= -22:
		f /= pow10[-exp]
	default:
		return 0, 0, false
	}
	if neg {
		f = -f
	}
	return f, i, true
}
