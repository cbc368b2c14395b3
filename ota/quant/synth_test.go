package quant

import (
	"math"
	"math/rand/v2"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// A 5x7 bitmap font, enough to draw text-like lines: OCR models respond to strokes, baselines
// and character spacing, which uniform noise lacks entirely.
var font = map[rune][7]string{
	'0': {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."},
	'1': {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'2': {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"},
	'3': {"####.", "....#", "....#", ".###.", "....#", "....#", "####."},
	'4': {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."},
	'5': {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."},
	'7': {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
	'A': {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'E': {"#####", "#....", "#....", "####.", "#....", "#....", "#####"},
	'F': {"#####", "#....", "#....", "####.", "#....", "#....", "#...."},
	'L': {"#....", "#....", "#....", "#....", "#....", "#....", "#####"},
	'P': {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."},
	'R': {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"},
	'T': {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."},
	'b': {"#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####."},
	'd': {"....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"},
	'g': {".####", "#...#", "#...#", ".####", "....#", "#...#", ".###."},
	'h': {"#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#"},
	'k': {"#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."},
	'y': {"#...#", "#...#", "#...#", ".####", "....#", "#...#", ".###."},
}

var glyphs = func() []rune {
	var r []rune
	for k := range font {
		r = append(r, k)
	}
	// map order is random; sort for reproducible samples
	for i := range r {
		for j := i + 1; j < len(r); j++ {
			if r[j] < r[i] {
				r[i], r[j] = r[j], r[i]
			}
		}
	}
	return r
}()

// canvas is an RGB image, values 0..255, HWC.
type canvas struct {
	w, h int
	px   []float32
}

func newCanvas(w, h int, rng *rand.Rand) *canvas {
	c := &canvas{w: w, h: h, px: make([]float32, w*h*3)}
	// A light, slightly graded and tinted background, like paper or a sign under uneven light.
	base := [3]float64{200 + 50*rng.Float64(), 200 + 50*rng.Float64(), 190 + 50*rng.Float64()}
	gx, gy := rng.Float64()*40-20, rng.Float64()*40-20
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			for ch := 0; ch < 3; ch++ {
				v := base[ch] + gx*float64(x)/float64(w) + gy*float64(y)/float64(h) + rng.NormFloat64()*6
				c.px[(y*w+x)*3+ch] = float32(math.Max(0, math.Min(255, v)))
			}
		}
	}
	return c
}

// text draws a string with glyphs scaled by s at (x0, y0) in a dark ink; returns the end x.
func (c *canvas) text(s string, x0, y0, scale int, ink [3]float32) int {
	x := x0
	for _, r := range s {
		g, ok := font[r]
		if !ok {
			x += 3 * scale
			continue
		}
		for gy := 0; gy < 7; gy++ {
			for gx := 0; gx < 5; gx++ {
				if g[gy][gx] != '#' {
					continue
				}
				for dy := 0; dy < scale; dy++ {
					for dx := 0; dx < scale; dx++ {
						px, py := x+gx*scale+dx, y0+gy*scale+dy
						if px >= 0 && px < c.w && py >= 0 && py < c.h {
							copy(c.px[(py*c.w+px)*3:], ink[:])
						}
					}
				}
			}
		}
		x += 6 * scale
	}
	return x
}

func (c *canvas) rotate180() *canvas {
	r := &canvas{w: c.w, h: c.h, px: make([]float32, len(c.px))}
	n := c.w * c.h
	for i := 0; i < n; i++ {
		copy(r.px[(n-1-i)*3:(n-i)*3], c.px[i*3:(i+1)*3])
	}
	return r
}

// chw converts to a normalized NCHW float tensor.
func (c *canvas) chw(name string, mean, std [3]float32) onnxrt.Tensor {
	out := make([]float32, 3*c.w*c.h)
	for y := 0; y < c.h; y++ {
		for x := 0; x < c.w; x++ {
			for ch := 0; ch < 3; ch++ {
				out[ch*c.w*c.h+y*c.w+x] = (c.px[(y*c.w+x)*3+ch]/255 - mean[ch]) / std[ch]
			}
		}
	}
	return onnxrt.Tensor{Name: name, DType: onnxrt.FP32, Shape: []int64{1, 3, int64(c.h), int64(c.w)}, Data: out}
}

func randomWord(rng *rand.Rand, n int) string {
	b := make([]rune, n)
	for i := range b {
		b[i] = glyphs[rng.IntN(len(glyphs))]
	}
	return string(b)
}

func ink(rng *rand.Rand) [3]float32 {
	v := float32(rng.Float64() * 70)
	return [3]float32{v + float32(rng.Float64()*30), v, v + float32(rng.Float64()*30)}
}

// clsSamples makes n inputs for ocr_cls (PP-OCR's text direction classifier: 3x48x192, 0 or 180
// degrees): text lines, half of them turned upside down, so that the float model's answer varies.
// PaddleOCR normalizes with mean 0.5, std 0.5.
func clsSamples(input string, n int, seed uint64) [][]onnxrt.Tensor {
	rng := rand.New(rand.NewPCG(seed, 1))
	half := [3]float32{0.5, 0.5, 0.5}
	var out [][]onnxrt.Tensor
	for len(out) < n {
		c := newCanvas(192, 48, rng)
		scale := 3 + rng.IntN(3)
		y := (48 - 7*scale) / 2
		y += rng.IntN(5) - 2
		c.text(randomWord(rng, 4+rng.IntN(6)), rng.IntN(10), y, scale, ink(rng))
		if rng.IntN(2) == 0 {
			c = c.rotate180()
		}
		out = append(out, []onnxrt.Tensor{c.chw(input, half, half)})
	}
	return out
}

// detSamples makes n inputs for ocr_det (PP-OCRv4 text detector): scenes with several text lines,
// ImageNet normalization as PaddleOCR uses.
func detSamples(input string, n, size int, seed uint64) [][]onnxrt.Tensor {
	rng := rand.New(rand.NewPCG(seed, 2))
	mean, std := [3]float32{0.485, 0.456, 0.406}, [3]float32{0.229, 0.224, 0.225}
	var out [][]onnxrt.Tensor
	for len(out) < n {
		c := newCanvas(size, size, rng)
		lines := 2 + rng.IntN(4)
		for l := 0; l < lines; l++ {
			scale := 2 + rng.IntN(3)
			c.text(randomWord(rng, 3+rng.IntN(8)), rng.IntN(size/2), rng.IntN(size-7*scale), scale, ink(rng))
		}
		out = append(out, []onnxrt.Tensor{c.chw(input, mean, std)})
	}
	return out
}

// featureSamples makes smooth, structured [1,25,96] feature frames for hello_deepa (openWakeWord's
// classifier over 25 speech-embedding frames): slowly varying bands with noise, at several
// amplitudes, rather than white noise.
func featureSamples(input string, n int, seed uint64) [][]onnxrt.Tensor {
	rng := rand.New(rand.NewPCG(seed, 3))
	var out [][]onnxrt.Tensor
	for len(out) < n {
		v := make([]float32, 25*96)
		amp := 0.5 + 4*rng.Float64()
		f1, f2, ph := rng.Float64()*0.5, rng.Float64()*0.3, rng.Float64()*6
		for t := 0; t < 25; t++ {
			for k := 0; k < 96; k++ {
				v[t*96+k] = float32(amp*math.Sin(f1*float64(k)+f2*float64(t)+ph) + rng.NormFloat64()*0.3)
			}
		}
		out = append(out, []onnxrt.Tensor{{Name: input, DType: onnxrt.FP32, Shape: []int64{1, 25, 96}, Data: v}})
	}
	return out
}
