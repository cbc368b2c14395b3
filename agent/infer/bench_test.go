package infer

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// BenchmarkInfer compares the bare binding (onnxrt.RawRunner) with the in-process call path
// (Server.Infer: policy, run slot, metrics, session), one intra-op thread, on hello_deepa, a model
// small enough that per-call overhead shows.
//
//	go test ./agent/infer -run '^$' -bench Infer -benchmem
func BenchmarkInfer(b *testing.B) {
	m := loadReal(b, "hello_deepa.onnx", "hello", "1.0.0", LoadOptions{})
	srv := NewServer("bench")
	srv.Swap("hello", m)
	defer m.Close()
	sets, err := onnxrt.GenerateInputs(m.Schema(), 1, 1, nil)
	if err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(fleettest.Models(b), "hello_deepa.onnx"))
	if err != nil {
		b.Fatal(err)
	}
	raw, err := onnxrt.NewRawRunner(data, sets[0], 1)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	b.Run("raw", func(b *testing.B) {
		for b.Loop() {
			if err := raw.Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Server.Infer", func(b *testing.B) {
		ctx := context.Background()
		for b.Loop() {
			if _, _, err := srv.Infer(ctx, "hello", sets[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHandler is the OIP HTTP handler alone (no network, no client): ocr_cls with the binary
// tensor extension, and hello_deepa in JSON. What (c) in bench/infer adds beyond this is the
// loopback TCP exchange and the Go HTTP client.
//
//	go test ./agent/infer -run '^$' -bench Handler -benchmem
func BenchmarkHandler(b *testing.B) {
	for _, bm := range []struct {
		file   string
		shape  map[string][]int64
		binary bool
	}{
		{"ocr_cls.onnx", map[string][]int64{"x": {1, 3, 48, 192}}, true},
		{"hello_deepa.onnx", nil, false},
	} {
		m := loadReal(b, bm.file, "m", "1.0.0", LoadOptions{})
		srv := NewServer("bench")
		srv.Swap("m", m)
		sets, err := onnxrt.GenerateInputs(m.Schema(), 1, 1, bm.shape)
		if err != nil {
			b.Fatal(err)
		}
		t := sets[0][0]
		hdr := map[string]string{}
		var body []byte
		if bm.binary {
			bin, _ := binary.Append(nil, binary.LittleEndian, t.Data)
			j := fmt.Appendf(nil, `{"inputs":[{"name":%q,"shape":%s,"datatype":"FP32","parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}`,
				t.Name, mustJSON(b, t.Shape), len(bin))
			hdr[oip.HeaderLengthKey] = strconv.Itoa(len(j))
			body = append(j, bin...)
		} else {
			body = fmt.Appendf(nil, `{"inputs":[{"name":%q,"shape":%s,"datatype":"FP32","data":`, t.Name, mustJSON(b, t.Shape))
			body = append(oip.AppendData(body, t), "}]}"...)
		}
		h := srv.Handler()
		b.Run(bm.file, func(b *testing.B) {
			for b.Loop() {
				req := httptest.NewRequest("POST", "/v2/models/m/infer", bytes.NewReader(body))
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatal(rec.Code, rec.Body.String())
				}
			}
		})
	}
}
