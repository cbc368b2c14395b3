package builder

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"

	"codeberg.org/sbinet/npyio/npy"

	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// MaxSamples bounds how many reference samples a build reads.
const MaxSamples = 10000

// ReadSamples reads reference samples: JSON lines of Open Inference Protocol request bodies, or a
// .npy array of the model's single input with a leading sample dimension.
func ReadSamples(path string, schema onnxrt.Schema) ([][]onnxrt.Tensor, error) {
	if strings.HasSuffix(path, ".npy") {
		return readNPY(path, schema)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open reference samples: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	var out [][]onnxrt.Tensor
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		req, err := oip.ParseRequest(b)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, line, err)
		}
		var in []onnxrt.Tensor
		for _, t := range req.Inputs {
			rt, err := oip.Decode(t)
			if err != nil {
				return nil, fmt.Errorf("%s line %d: %w", path, line, err)
			}
			in = append(in, rt)
		}
		out = append(out, in)
		if len(out) > MaxSamples {
			return nil, fmt.Errorf("%s: more than %d samples; pass a subset", path, MaxSamples)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no samples", path)
	}
	return out, nil
}

func readNPY(path string, schema onnxrt.Schema) ([][]onnxrt.Tensor, error) {
	if len(schema.Inputs) != 1 {
		return nil, fmt.Errorf("a .npy reference fits a model with one input; this one has %d: use JSON lines", len(schema.Inputs))
	}
	in := schema.Inputs[0]
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open reference samples: %w", err)
	}
	defer f.Close()
	r, err := npy.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	shape := r.Header.Descr.Shape
	if r.Header.Descr.Fortran || len(shape) < 1 {
		return nil, fmt.Errorf("%s: need a C-order array with a leading sample dimension", path)
	}
	var vals []float64
	if err := r.Read(&vals); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	n := shape[0]
	if n == 0 || n > MaxSamples {
		return nil, fmt.Errorf("%s: %d samples (1..%d allowed)", path, n, MaxSamples)
	}
	per := len(vals) / n
	sampleShape := []int64{1}
	for _, d := range shape[1:] {
		sampleShape = append(sampleShape, int64(d))
	}
	// A model whose input has no batch dimension takes the sample shape as is.
	if len(in.Shape) == len(shape)-1 {
		sampleShape = sampleShape[1:]
	}
	out := make([][]onnxrt.Tensor, 0, n)
	for i := 0; i < n; i++ {
		t, err := onnxrt.FromFloat64s(in.Name, in.DType, sampleShape, vals[i*per:(i+1)*per])
		if err != nil {
			return nil, fmt.Errorf("%s sample %d: %w", path, i, err)
		}
		out = append(out, []onnxrt.Tensor{t})
	}
	return out, nil
}
