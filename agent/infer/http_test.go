package infer

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxpb"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

type httpCase struct {
	Name      string            `json:"name"`
	Method    string            `json:"method"`
	Path      string            `json:"path"`
	Body      json.RawMessage   `json:"body"`
	Raw       string            `json:"raw"`
	ReqHeader map[string]string `json:"req_header"`
	Status    int               `json:"status"`
	Contains  []string          `json:"contains"`
	Absent    []string          `json:"absent"`
	Header    map[string]string `json:"header"`
}

// identServer serves the identity model of every datatype as "ident" (NaN rejected) and
// "nanok" (NaN allowed), and has "installing" marked as loading.
func identServer(t *testing.T) *Server {
	p := identityModel(t, map[string]idInput{
		"b":   {onnxpb.TensorProto_BOOL, []int64{2}},
		"f16": {onnxpb.TensorProto_FLOAT16, []int64{1, 2}},
		"f32": {onnxpb.TensorProto_FLOAT, []int64{-1, 2}},
		"i64": {onnxpb.TensorProto_INT64, []int64{2}},
		"i8":  {onnxpb.TensorProto_INT8, []int64{2}},
	})
	s := NewServer("test")
	s.Swap("ident", loadFile(t, p, "ident", "1.2.0", onnxrt.Options{}, LoadOptions{}))
	s.Swap("nanok", loadFile(t, p, "nanok", "1.0.0", onnxrt.Options{}, LoadOptions{}))
	s.SetPolicy("nanok", Policy{AllowNonFinite: true})
	s.SetLoading("installing", true)
	return s
}

// TestOIP runs testdata/oip_cases.json: the protocol's endpoints, every datatype, the
// validation table and the error statuses.
func TestOIP(t *testing.T) {
	s := identServer(t)
	h := s.Handler()
	b, err := os.ReadFile(filepath.Join("testdata", "oip_cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []httpCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			var body []byte
			switch {
			case c.Raw != "":
				body = []byte(c.Raw)
			case c.Body != nil:
				body = c.Body
			}
			status, hdr, got := do(t, h, c.Method, c.Path, body, c.ReqHeader)
			if status != c.Status {
				t.Fatalf("status %d, want %d; body %s", status, c.Status, got)
			}
			if status >= 400 && !json.Valid(got) || status >= 400 && !bytes.HasPrefix(got, []byte(`{"error":`)) {
				t.Errorf("error body is not {\"error\": ...}: %s", got)
			}
			for _, want := range c.Contains {
				if !strings.Contains(string(got), want) {
					t.Errorf("body lacks %s:\n%s", want, got)
				}
			}
			for _, no := range c.Absent {
				if strings.Contains(string(got), no) {
					t.Errorf("body has %s:\n%s", no, got)
				}
			}
			for k, v := range c.Header {
				if hdr.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, hdr.Get(k), v)
				}
			}
		})
	}
}

func TestOversizedBody(t *testing.T) {
	s := identServer(t)
	s.MaxBody = 1 << 10
	body := []byte(`{"inputs":[{"name":"f32","shape":[1,2],"datatype":"FP32","data":[` + strings.Repeat("1,", 2000) + `1]}]}`)
	status, _, got := do(t, s.Handler(), "POST", "/v2/models/ident/infer", body, nil)
	if status != http.StatusRequestEntityTooLarge || !strings.Contains(string(got), "over the limit") {
		t.Fatalf("status %d body %s, want 413", status, got)
	}
	// A gzip bomb is bounded after decompression too.
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(body)
	zw.Close()
	status, _, got = do(t, s.Handler(), "POST", "/v2/models/ident/infer", z.Bytes(), map[string]string{"Content-Encoding": "gzip"})
	if status != http.StatusRequestEntityTooLarge {
		t.Fatalf("gzip: status %d body %s, want 413", status, got)
	}
}

// ocrInput is a deterministic ocr_cls input of n rows.
func ocrInput(t testing.TB, m *Model, n int64, seed uint64) onnxrt.Tensor {
	t.Helper()
	in, err := onnxrt.GenerateInputs(m.Schema(), 1, seed, map[string][]int64{"x": {n, 3, 48, 192}})
	if err != nil {
		t.Fatal(err)
	}
	return in[0][0]
}

// tritonBinary builds a request as tritonclient.http does with binary_data=True: the JSON header
// with binary_data_size per input, then the raw little-endian tensors.
func tritonBinary(t testing.TB, in onnxrt.Tensor, binaryOut bool) ([]byte, map[string]string) {
	t.Helper()
	raw, err := binary.Append(nil, binary.LittleEndian, in.Data)
	if err != nil {
		t.Fatal(err)
	}
	req := map[string]any{
		"inputs": []any{map[string]any{"name": in.Name, "shape": in.Shape, "datatype": string(in.DType),
			"parameters": map[string]any{"binary_data_size": len(raw)}}},
		"outputs": []any{map[string]any{"name": "softmax_0.tmp_0", "parameters": map[string]any{"binary_data": binaryOut}}},
	}
	hdr := mustJSON(t, req)
	return append(hdr, raw...), map[string]string{oip.HeaderLengthKey: strconv.Itoa(len(hdr)), "Content-Type": "application/octet-stream"}
}

func jsonRequest(t testing.TB, in onnxrt.Tensor) []byte {
	t.Helper()
	var b []byte
	b = append(b, `{"inputs":[{"name":`...)
	b = strconv.AppendQuote(b, in.Name)
	b = append(b, `,"shape":`...)
	b = append(b, mustJSON(t, in.Shape)...)
	b = append(b, `,"datatype":"FP32","data":`...)
	b = oip.AppendData(b, in)
	return append(b, "}]}"...)
}

// readResponse decodes an OIP response, JSON or with binary outputs, into float32 outputs.
func readResponse(t testing.TB, hdr http.Header, body []byte) map[string][]float32 {
	t.Helper()
	jsonPart, bin := body, []byte(nil)
	if hl := hdr.Get(oip.HeaderLengthKey); hl != "" {
		n, _ := strconv.Atoi(hl)
		jsonPart, bin = body[:n], body[n:]
	}
	var resp struct {
		Outputs []struct {
			Name       string
			Datatype   string
			Data       []float32
			Parameters map[string]float64
		}
	}
	if err := json.Unmarshal(jsonPart, &resp); err != nil {
		t.Fatalf("%v: %s", err, jsonPart)
	}
	out := map[string][]float32{}
	for _, o := range resp.Outputs {
		if size, ok := o.Parameters["binary_data_size"]; ok {
			v := make([]float32, int(size)/4)
			if _, err := binary.Decode(bin[:int(size)], binary.LittleEndian, v); err != nil {
				t.Fatal(err)
			}
			bin = bin[int(size):]
			out[o.Name] = v
			continue
		}
		out[o.Name] = o.Data
	}
	return out
}

// TestTritonBinaryMatchesJSON: the same ocr_cls input sent as JSON and as a Triton binary
// request (binary and JSON outputs) gives identical outputs.
func TestTritonBinaryMatchesJSON(t *testing.T) {
	m := loadReal(t, "ocr_cls.onnx", "ocr_cls", "1.0.0", LoadOptions{})
	s := NewServer("test")
	s.Swap("ocr_cls", m)
	h := s.Handler()
	in := ocrInput(t, m, 2, 7)

	status, hdr, body := do(t, h, "POST", "/v2/models/ocr_cls/infer", jsonRequest(t, in), nil)
	if status != 200 {
		t.Fatalf("JSON: %d %s", status, body)
	}
	want := readResponse(t, hdr, body)["softmax_0.tmp_0"]
	if len(want) != 4 {
		t.Fatalf("JSON output %v, want 2x2", want)
	}
	for _, binOut := range []bool{true, false} {
		req, rh := tritonBinary(t, in, binOut)
		status, hdr, body := do(t, h, "POST", "/v2/models/ocr_cls/infer", req, rh)
		if status != 200 {
			t.Fatalf("binary (binary outputs %v): %d %s", binOut, status, body)
		}
		if got := hdr.Get(oip.HeaderLengthKey) != ""; got != binOut {
			t.Errorf("binary outputs %v: response %s present = %v", binOut, oip.HeaderLengthKey, got)
		}
		got := readResponse(t, hdr, body)["softmax_0.tmp_0"]
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("binary (binary outputs %v) = %v, JSON = %v", binOut, got, want)
		}
	}
	// Headers of every length modulo 8: the handler pads its buffer so that the tensor bytes are
	// aligned and used in place; the answers stay the same.
	for extra := range 8 {
		req, rh := tritonBinary(t, in, true)
		req = append([]byte(strings.Repeat(" ", extra)), req...)
		n, _ := strconv.Atoi(rh[oip.HeaderLengthKey])
		rh[oip.HeaderLengthKey] = strconv.Itoa(n + extra)
		status, hdr, body := do(t, h, "POST", "/v2/models/ocr_cls/infer", req, rh)
		if got := readResponse(t, hdr, body)["softmax_0.tmp_0"]; status != 200 || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("header of %d bytes: %d %v, want %v", n+extra, status, got, want)
		}
	}
	// A binary size that does not match the shape is the caller's error.
	req, rh := tritonBinary(t, in, true)
	rh[oip.HeaderLengthKey] = strconv.Itoa(len(req) - 4*len(in.Data.([]float32)) - 4)
	if status, _, body := do(t, h, "POST", "/v2/models/ocr_cls/infer", req, rh); status != 400 {
		t.Errorf("bad header length: %d %s", status, body)
	}
}
