package quant

import (
	"math"
)

// quantizeWeights quantizes w (shape dims) to int8, symmetric, one scale per slice along axis:
// scale = max|w|/127, zero point 0. Symmetric weights let ORT skip the zero-point correction
// term in its int8 GEMMs; per-channel scales keep a channel with small weights from being
// crushed by one with large weights, which per-tensor scaling does to depthwise convolutions.
// It also returns the relative RMS error of the dequantized weights, the per-layer proxy error.
func quantizeWeights(w []float32, dims []int64, axis int) (q []int8, scales []float32, relErr float64) {
	channels := int(dims[axis])
	inner := 1
	for _, d := range dims[axis+1:] {
		inner *= int(d)
	}
	scales = make([]float32, channels)
	for i, x := range w {
		c := (i / inner) % channels
		if a := float32(math.Abs(float64(x))); a > scales[c] {
			scales[c] = a
		}
	}
	for c := range scales {
		scales[c] /= 127
		if scales[c] == 0 {
			scales[c] = 1 // an all-zero channel: any scale represents it exactly
		}
	}
	q = make([]int8, len(w))
	var num, den float64
	for i, x := range w {
		s := scales[(i/inner)%channels]
		v := math.RoundToEven(float64(x / s))
		v = math.Max(-127, math.Min(127, v))
		q[i] = int8(v)
		d := float64(x) - v*float64(s)
		num += d * d
		den += float64(x) * float64(x)
	}
	if den > 0 {
		relErr = math.Sqrt(num / den)
	}
	return q, scales, relErr
}

// qrange is the integer range of an activation type.
func qrange(int8Act bool) (lo, hi float64) {
	if int8Act {
		return -128, 127
	}
	return 0, 255
}

// activationParams turns a calibrated range into an asymmetric scale and zero point. The range
// always includes 0 so that zero (padding, ReLU's floor) is exact.
func activationParams(lo, hi float32, int8Act bool) (scale float32, zp int) {
	rmin, rmax := math.Min(float64(lo), 0), math.Max(float64(hi), 0)
	qmin, qmax := qrange(int8Act)
	s := (rmax - rmin) / (qmax - qmin)
	if s == 0 || math.IsNaN(s) || math.IsInf(s, 0) {
		s = 1
	}
	z := math.RoundToEven(qmin - rmin/s)
	z = math.Max(qmin, math.Min(qmax, z))
	return float32(s), int(z)
}
