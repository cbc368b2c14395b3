package infer

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// MaxRequestBytes bounds one JSON inference request.
const MaxRequestBytes = 64 << 20

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// Handler serves the Open Inference Protocol REST API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"name": "edgefleet-agent", "version": s.Agent, "extensions": []string{}})
	})
	mux.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	mux.HandleFunc("GET /v2/health/ready", func(w http.ResponseWriter, r *http.Request) {
		if len(s.Names()) == 0 {
			writeErr(w, http.StatusServiceUnavailable, "no verified model is loaded yet")
			return
		}
		w.WriteHeader(200)
	})
	for _, prefix := range []string{"/v2/models/{name}", "/v2/models/{name}/versions/{version}"} {
		mux.HandleFunc("GET "+prefix, s.metadata)
		mux.HandleFunc("GET "+prefix+"/ready", s.ready)
		mux.HandleFunc("POST "+prefix+"/infer", s.infer)
	}
	return mux
}

// model resolves the path's model and optional version.
func (s *Server) model(w http.ResponseWriter, r *http.Request) (*Model, bool) {
	name, version := r.PathValue("name"), r.PathValue("version")
	m, ok := s.Get(name)
	if !ok {
		writeErr(w, http.StatusNotFound, "model "+name+" is not served on this device")
		return nil, false
	}
	if version != "" && version != m.Version {
		writeErr(w, http.StatusNotFound, "model "+name+" version "+version+" is not served (serving "+m.Version+")")
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
		out = append(out, tensorMeta{t.Name, string(t.DType), t.Shape})
	}
	return out
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	m, ok := s.model(w, r)
	if !ok {
		return
	}
	sc := m.Schema()
	writeJSON(w, 200, map[string]any{"name": m.Name, "versions": []string{m.Version}, "platform": "onnxruntime_onnx",
		"inputs": meta(sc.Inputs), "outputs": meta(sc.Outputs),
		"parameters": map[string]any{"bundle": m.Bundle, "execution_provider": m.Provider()}})
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.model(w, r); ok {
		w.WriteHeader(200)
	}
}

func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	name, version := r.PathValue("name"), r.PathValue("version")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		writeErr(w, http.StatusRequestEntityTooLarge, "request body over the limit")
		return
	}
	req, err := oip.ParseRequest(body)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	in := make([]onnxrt.Tensor, 0, len(req.Inputs))
	for _, t := range req.Inputs {
		rt, err := oip.Decode(t)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		in = append(in, rt)
	}
	m, release, ok := s.Acquire(name)
	if !ok {
		writeErr(w, http.StatusNotFound, "model "+name+" is not served on this device")
		return
	}
	defer release()
	if version != "" && version != m.Version {
		writeErr(w, http.StatusNotFound, "model "+name+" version "+version+" is not served (serving "+m.Version+")")
		return
	}
	out, err := m.Run(r.Context(), in)
	if err != nil {
		var ie *onnxrt.InputError
		if errors.As(err, &ie) {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		writeErr(w, http.StatusInternalServerError, "inference failed: "+err.Error())
		return
	}
	want := map[string]bool{}
	for _, o := range req.Outputs {
		want[o.Name] = true
	}
	resp := oip.Response{ModelName: m.Name, ModelVersion: m.Version, ID: req.ID}
	for _, t := range out {
		if len(want) > 0 && !want[t.Name] {
			continue
		}
		enc, err := oip.Encode(t)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		resp.Outputs = append(resp.Outputs, enc)
	}
	if len(want) > 0 && len(resp.Outputs) != len(want) {
		writeErr(w, http.StatusBadRequest, "requested outputs include a name the model does not have")
		return
	}
	writeJSON(w, 200, resp)
}
