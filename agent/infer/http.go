package infer

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// MaxRequestBytes bounds one inference request body (after decompression).
const MaxRequestBytes = 64 << 20

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(oip.AppendError(nil, msg))
}

// Status maps an inference error to its HTTP status: 400 for the caller's mistakes, 404 for a
// name or version not served, 503 while a model is loading, 500 for the runtime's failures.
func Status(err error) int {
	var ie *onnxrt.InputError
	switch {
	case errors.Is(err, ErrNoModel), errors.Is(err, ErrVersion):
		return http.StatusNotFound
	case errors.Is(err, ErrLoading):
		return http.StatusServiceUnavailable
	case errors.As(err, &ie), errors.Is(err, oip.ErrBadRequest), errors.Is(err, ErrOutputName):
		return http.StatusBadRequest
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Handler serves the Open Inference Protocol REST API, and Prometheus metrics on /metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"name": "edgefleet-agent", "version": s.Agent, "extensions": []string{oip.ExtensionBinary}})
	})
	mux.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	mux.HandleFunc("GET /v2/health/ready", func(w http.ResponseWriter, r *http.Request) {
		// The protocol reads 200 as true and a 4xx as false.
		if len(s.Names()) == 0 {
			writeErr(w, http.StatusBadRequest, "not ready: no verified model is loaded yet")
			return
		}
		w.WriteHeader(200)
	})
	for _, prefix := range []string{"/v2/models/{name}", "/v2/models/{name}/versions/{version}"} {
		mux.HandleFunc("GET "+prefix, s.metadata)
		mux.HandleFunc("GET "+prefix+"/ready", s.ready)
		mux.HandleFunc("POST "+prefix+"/infer", s.infer)
	}
	mux.Handle("GET /metrics", s.MetricsHandler())
	mux.HandleFunc("POST /v1/feedback", s.feedback)
	return mux
}

// model resolves the path's model and optional version.
func (s *Server) model(w http.ResponseWriter, r *http.Request) (*Model, bool) {
	name, version := r.PathValue("name"), r.PathValue("version")
	m, ok := s.Get(name)
	if !ok {
		err := s.missing(name)
		st := Status(err)
		if st == http.StatusServiceUnavailable && strings.HasSuffix(r.URL.Path, "/ready") {
			st = http.StatusBadRequest // readiness is a boolean: 4xx is false
		}
		writeErr(w, st, err.Error())
		return nil, false
	}
	if version != "" && version != m.Version {
		writeErr(w, http.StatusNotFound, fmt.Sprintf("model %s version %s is not served (serving %s)", name, version, m.Version))
		return nil, false
	}
	return m, true
}

type tensorMeta struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

func meta(ts []onnxrt.TensorInfo) []tensorMeta {
	out := make([]tensorMeta, 0, len(ts))
	for _, t := range ts {
		shape := t.Shape
		if shape == nil {
			shape = []int64{-1} // rank unknown; the protocol has no spelling for it
		}
		out = append(out, tensorMeta{t.Name, string(t.DType), shape})
	}
	return out
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	m, ok := s.model(w, r)
	if !ok {
		return
	}
	sc := m.Schema()
	params := map[string]any{"bundle": m.Bundle, "execution_provider": m.Provider(), "dynamic_batching": m.Batching()}
	if fr := m.FallbackReason(); fr != "" {
		params["execution_provider_fallback"] = fr
	}
	writeJSON(w, 200, map[string]any{"name": m.Name, "versions": []string{m.Version}, "platform": "onnxruntime_onnx",
		"inputs": meta(sc.Inputs), "outputs": meta(sc.Outputs), "parameters": params})
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.model(w, r); ok {
		w.WriteHeader(200)
	}
}

func (s *Server) maxBody() int64 {
	if s.MaxBody > 0 {
		return s.MaxBody
	}
	return MaxRequestBytes
}

type buffers struct {
	body bytes.Buffer
	resp oip.ResponseWriter
}

func (s *Server) getBufs() *buffers {
	if b, ok := s.bufs.Get().(*buffers); ok {
		return b
	}
	return &buffers{}
}

func (s *Server) putBufs(b *buffers) {
	// A one-off huge request should not pin its buffer forever.
	if b.body.Cap() > 8<<20 || cap(b.resp.JSON)+cap(b.resp.Binary) > 8<<20 {
		return
	}
	b.body.Reset()
	b.resp.Reset()
	s.bufs.Put(b)
}

func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	name, version := r.PathValue("name"), r.PathValue("version")
	bufs := s.getBufs()
	defer s.putBufs(bufs) // after the call: binary inputs may view the buffer (AliasBinary)
	hl := r.Header.Get(oip.HeaderLengthKey)
	// With the binary extension, pad the buffer so that the binary part starts 8-byte aligned:
	// its tensors can then be used in place instead of copied.
	pad := 0
	if n, err := strconv.Atoi(hl); err == nil && n >= 0 {
		pad = (8 - n%8) % 8
	}
	body, status, err := readBody(w, r, &bufs.body, pad, s.maxBody())
	if err != nil {
		writeErr(w, status, err.Error())
		return
	}
	header, bin := body, []byte(nil)
	if hl != "" {
		n, err := strconv.Atoi(hl)
		if err != nil || n < 0 || n > len(body) {
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("%s %q does not fit a body of %d bytes", oip.HeaderLengthKey, hl, len(body)))
			return
		}
		header, bin = body[:n], body[n:]
	}
	c, err := oip.ParseCall(header, bin, oip.ParseOptions{AliasBinary: true})
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	out, m, err := s.call(r.Context(), name, version, c)
	if err != nil {
		if errors.Is(err, ErrLoading) {
			w.Header().Set("Retry-After", "1")
		}
		writeErr(w, Status(err), err.Error())
		return
	}
	rw := &bufs.resp
	rw.Begin(m.Name, m.Version, c.ID)
	for _, t := range out {
		rw.Output(t, c.BinaryOutput(t.Name))
	}
	rw.End()
	h := w.Header()
	if len(rw.Binary) > 0 {
		h.Set(oip.HeaderLengthKey, strconv.Itoa(len(rw.JSON)))
		h.Set("Content-Type", "application/octet-stream")
	} else {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Content-Length", strconv.Itoa(len(rw.JSON)+len(rw.Binary)))
	w.WriteHeader(200)
	w.Write(rw.JSON)
	if len(rw.Binary) > 0 {
		w.Write(rw.Binary)
	}
}

// readBody reads the request body into buf after pad zero bytes, decompressing gzip or deflate
// (Triton clients' request compression), bounded by MaxRequestBytes either way, and returns the
// body (without the padding).
func readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer, pad int, limit int64) ([]byte, int, error) {
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body of %d bytes is over the limit of %d", r.ContentLength, limit)
	}
	var src io.Reader = http.MaxBytesReader(w, r.Body, limit)
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("gzip body: %w", err)
		}
		src = zr
	case "deflate":
		src = flate.NewReader(src)
	default:
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("content encoding %q is not supported (gzip, deflate)", enc)
	}
	if r.ContentLength > 0 {
		// One allocation of the final size; bytes.Buffer then reads a little past it to see EOF.
		buf.Grow(pad + int(r.ContentLength) + bytes.MinRead)
	}
	var zeros [8]byte
	buf.Write(zeros[:pad])
	_, err := buf.ReadFrom(io.LimitReader(src, limit+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe) || int64(buf.Len()-pad) > limit:
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body is over the limit of %d bytes", limit)
	case err != nil:
		return nil, http.StatusBadRequest, fmt.Errorf("read body: %w", err)
	}
	return buf.Bytes()[pad:], 0, nil
}
