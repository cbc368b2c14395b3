package controlplane_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/internal/dataset"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

type datasetView struct {
	ID        string `json:"id"`
	Device    string `json:"device"`
	Group     string `json:"group"`
	Model     string `json:"model"`
	Version   string `json:"version"`
	Bundle    string `json:"bundle"`
	Trigger   string `json:"trigger"`
	Reason    string `json:"reason"`
	Requester string `json:"requester"`
	Samples   int    `json:"samples"`
	State     string `json:"state"`
	MaxSample int    `json:"max_samples"`
	Size      int64  `json:"size"`
}

// TestSampleCapture: capture is refused for a group without a capture policy (nothing reaches
// the device); once the policy allows it, a capture of N calls through the agent's API becomes
// a dataset with its lineage, downloadable as JSON lines and .npy holding exactly the inputs
// sent; the files at rest on the device and the control plane are not plaintext; an agent
// killed mid-upload resumes without duplicates; the device deletes its copy once acknowledged;
// the retention sweeper deletes the dataset once its group's retention has passed.
func TestSampleCapture(t *testing.T) {
	models := fleettest.Models(t)
	k := fleettest.NewKeys(t)
	var skew atomic.Int64 // the control plane's clock runs this far ahead (retention)
	cpDir := t.TempDir()
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}, DataDir: cpDir,
		DatasetSweep: 100 * time.Millisecond, Clock: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	ag := fleettest.OTAAgent(t, cp, k, "cap-1", "shop-a", "--capture-block-size", "2048")

	v1, id1 := fleettest.BuildBundle(t, k, "hello_deepa.onnx", "wake", "1.0.0")
	cp.Push(v1)
	fleettest.Eventually(t, 30*time.Second, "device registered", func() bool { _, ok := cp.Devices()["cap-1"]; return ok })
	assign(t, cp, "cap-1", "wake@1.0.0", "0s")
	waitModel(t, cp, "cap-1", "wake", "committed", func(a, s, _ string) bool { return a == id1 && s == updater.StepCommitted })

	// No policy: refused with an actionable message, and no command goes out.
	code, body := cp.Do("POST", "/api/v1/devices/cap-1/capture", map[string]any{"model": "wake", "max_samples": 5, "reason": "too early"}, nil)
	if code != 422 || !strings.Contains(body, `"capture_not_allowed"`) || !strings.Contains(body, "PUT /api/v1/groups/shop-a") {
		t.Fatalf("capture without a policy: %d %s", code, body)
	}
	var list struct {
		Datasets []datasetView `json:"datasets"`
		Count    int           `json:"count"`
	}
	if code, _ := cp.Do("GET", "/api/v1/datasets", nil, &list); code != 200 || list.Count != 0 {
		t.Fatalf("datasets after a refused capture: %d %+v", code, list)
	}
	if code, body := cp.Do("POST", "/api/v1/devices/nope/capture", map[string]any{"model": "wake"}, nil); code != 404 {
		t.Fatalf("capture from an unknown device: %d %s", code, body)
	}

	// Enable capture for the group, limited to 12 samples a capture.
	if code, body := cp.Do("PUT", "/api/v1/groups/shop-a", map[string]any{"capture": map[string]any{"enabled": true, "max_samples": 12, "retention": "720h"}}, nil); code != 200 {
		t.Fatalf("enable capture: %d %s", code, body)
	}
	if code, body := cp.Do("POST", "/api/v1/devices/cap-1/capture", map[string]any{"model": ""}, nil); code != 400 {
		t.Fatalf("capture without a model: %d %s", code, body)
	}

	// Restart the agent so that it dies once part of the upload is acknowledged.
	ag.Stop()
	ag.StartWith(t, "--crash-at", "capture-upload")
	addr := ag.ListenAddrAfter(t, 2)

	var d datasetView
	code, body = cp.Do("POST", "/api/v1/devices/cap-1/capture", map[string]any{"model": "wake", "max_samples": 500, "reason": "false wakes at the till"}, &d)
	if code != 202 || d.ID == "" || d.MaxSample != 12 || d.State != "requested" {
		t.Fatalf("capture: %d %s (max_samples must be capped at the policy's 12)", code, body)
	}
	fleettest.Eventually(t, 20*time.Second, "capture armed on the device", func() bool { return strings.Contains(ag.Log(), "capture armed") })

	modelBytes, _ := os.ReadFile(filepath.Join(models, "hello_deepa.onnx"))
	sess, err := onnxrt.NewSession(modelBytes, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	const n = 12
	// Exactly n calls: the agent dies once the upload of the n-th sample's capture begins, so a
	// further call could find it gone (the cap of n on the device is unit-tested in agent/capture).
	inputs, _ := onnxrt.GenerateInputs(sess.Schema(), n, 11, nil)
	sent := map[string][]onnxrt.Tensor{}
	for i, in := range inputs {
		id := fmt.Sprintf("cap-%d", i)
		inferID(t, addr, "wake", id, in)
		sent[id] = in
	}

	// The agent is killed mid-upload; its sealed capture is on disk, encrypted.
	if !ag.WaitExit(60 * time.Second) {
		t.Fatalf("the agent did not stop mid-upload; log:\n%s", ag.Log())
	}
	devFile := filepath.Join(ag.DataDir, "captures", d.ID, dataset.FileSamples)
	assertNotPlain(t, devFile, inputs[0][0])
	fleettest.Eventually(t, 10*time.Second, "dataset uploading", func() bool {
		var r datasetView
		cp.Do("GET", "/api/v1/datasets/"+d.ID, nil, &r)
		return r.State == "uploading"
	})
	ag.Start(t) // resumes the upload
	fleettest.Eventually(t, 60*time.Second, "dataset complete", func() bool {
		var r datasetView
		cp.Do("GET", "/api/v1/datasets/"+d.ID, nil, &r)
		return r.State == "complete"
	})
	var r datasetView
	cp.Do("GET", "/api/v1/datasets/"+d.ID, nil, &r)
	t.Logf("dataset of %d encrypted bytes in blocks of 2048", r.Size)
	if r.Size <= 8*2048 {
		t.Fatalf("dataset of %d bytes: fewer than 9 blocks, so the kill after the first ack may come after the last block (the agent sends 8 at a time)", r.Size)
	}
	if r.Samples != n || r.Device != "cap-1" || r.Group != "shop-a" || r.Model != "wake" || r.Bundle != id1 || r.Version != "1.0.0" ||
		r.Reason != "false wakes at the till" || r.Requester != "admin" || r.Trigger != "command" {
		t.Fatalf("dataset lineage %+v", r)
	}
	fleettest.Eventually(t, 20*time.Second, "device copy deleted", func() bool {
		_, err := os.Stat(filepath.Dir(devFile))
		return os.IsNotExist(err)
	})
	if strings.Count(ag.Log(), "capture armed") != 1 || strings.Contains(ag.Log(), "capture refused") {
		t.Fatalf("the refused capture reached the device; log:\n%s", ag.Log())
	}

	// JSON lines: exactly the n first calls, each once, with the inputs sent.
	code, body = cp.Do("GET", "/api/v1/datasets/"+d.ID+"/samples?format=jsonl", nil, nil)
	if code != 200 {
		t.Fatalf("jsonl: %d %s", code, body)
	}
	var ids []string
	var stacked []float32
	err = dataset.ReadSamples(strings.NewReader(body), func(_ []byte, s dataset.Sample) error {
		ids = append(ids, s.ID)
		want, ok := sent[s.ID]
		if !ok || len(s.Inputs) != len(want) || len(s.Outputs) == 0 || s.Bundle != id1 {
			return fmt.Errorf("sample %s: %d inputs, %d outputs, bundle %s", s.ID, len(s.Inputs), len(s.Outputs), s.Bundle)
		}
		got, err := oip.Decode(s.Inputs[0])
		if err != nil {
			return err
		}
		if !slices.Equal(got.Data.([]float32), want[0].Data.([]float32)) || !slices.Equal(got.Shape, want[0].Shape) {
			return fmt.Errorf("sample %s: input differs from what was sent", s.ID)
		}
		stacked = append(stacked, got.Data.([]float32)...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantIDs := make([]string, n)
	for i := range wantIDs {
		wantIDs[i] = fmt.Sprintf("cap-%d", i)
	}
	if !slices.Equal(ids, wantIDs) {
		t.Fatalf("samples %v, want %v (each once, in order)", ids, wantIDs)
	}

	// .npy: the inputs stacked along the batch axis.
	code, body = cp.Do("GET", "/api/v1/datasets/"+d.ID+"/samples?format=npy", nil, nil)
	if code != 200 {
		t.Fatalf("npy: %d %s", code, body)
	}
	in0 := inputs[0][0]
	shape := append([]int64{in0.Shape[0] * n}, in0.Shape[1:]...)
	hdr, _ := dataset.NPYHeader(onnxrt.FP32, shape)
	if !strings.HasPrefix(body, string(hdr)) {
		t.Fatalf("npy header %q, want %q", body[:min(len(body), len(hdr))], hdr)
	}
	got := make([]float32, (len(body)-len(hdr))/4)
	binary.Read(strings.NewReader(body[len(hdr):]), binary.LittleEndian, got)
	if !slices.Equal(got, stacked) {
		t.Fatalf("npy data (%d values) differs from the inputs sent (%d values)", len(got), len(stacked))
	}
	if code, _ := cp.Do("GET", "/api/v1/datasets/"+d.ID+"/samples?format=csv", nil, nil); code != 422 {
		t.Fatalf("unknown format: %d, want 422", code)
	}

	// At rest on the control plane: encrypted; the key is the control plane's own, 0600.
	assertNotPlain(t, filepath.Join(cpDir, "datasets", d.ID, dataset.FileSamples), in0)
	for _, key := range []string{filepath.Join(cpDir, "dataset.key"), filepath.Join(ag.DataDir, "capture.key")} {
		if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", key, fi.Mode(), err)
		}
	}

	// Audited: who asked and why.
	var aud struct {
		Entries []struct{ Who, Action, Reason string } `json:"entries"`
	}
	cp.Do("GET", "/api/v1/audit", nil, &aud)
	found := false
	for _, e := range aud.Entries {
		found = found || (e.Action == "capture requested" && e.Who == "admin" && e.Reason == "false wakes at the till")
	}
	if !found {
		t.Fatalf("no audit entry for the capture: %+v", aud.Entries)
	}

	// Retention: 31 days later the sweeper deletes the dataset and its files.
	skew.Store(int64(31 * 24 * time.Hour))
	fleettest.Eventually(t, 20*time.Second, "dataset deleted after retention", func() bool {
		code, _ := cp.Do("GET", "/api/v1/datasets/"+d.ID, nil, nil)
		return code == 404
	})
	if _, err := os.Stat(filepath.Join(cpDir, "datasets", d.ID)); !os.IsNotExist(err) {
		t.Fatalf("dataset files still there after retention: %v", err)
	}
}

// assertNotPlain fails if the file holds the tensor's values as raw little-endian bytes or as
// the JSON numbers a sample carries.
func assertNotPlain(t *testing.T, path string, x onnxrt.Tensor) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	binary.Write(&raw, binary.LittleEndian, x.Data.([]float32)[:8])
	enc, _ := oip.Encode(x)
	js, _ := json.Marshal(enc)
	if bytes.Contains(b, raw.Bytes()) || bytes.Contains(b, enc.Data[:min(len(enc.Data), 40)]) || bytes.Contains(b, js[:40]) || bytes.Contains(b, []byte(`"inputs"`)) {
		t.Fatalf("%s holds plaintext samples", path)
	}
}

// TestAutomaticCapture: a device's scheduled captures start only once its group's policy is
// granted to it, and arrive as datasets whose requester is the device, audited.
func TestAutomaticCapture(t *testing.T) {
	models := fleettest.Models(t)
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	ag := fleettest.OTAAgent(t, cp, k, "cap-2", "shop-b", "--capture-every", "500ms")
	addr := ag.ListenAddr(t)
	v1, id1 := fleettest.BuildBundle(t, k, "hello_deepa.onnx", "wake", "1.0.0")
	cp.Push(v1)
	fleettest.Eventually(t, 30*time.Second, "device registered", func() bool { _, ok := cp.Devices()["cap-2"]; return ok })
	assign(t, cp, "cap-2", "wake@1.0.0", "0s")
	waitModel(t, cp, "cap-2", "wake", "committed", func(a, s, _ string) bool { return a == id1 && s == updater.StepCommitted })

	modelBytes, _ := os.ReadFile(filepath.Join(models, "hello_deepa.onnx"))
	sess, err := onnxrt.NewSession(modelBytes, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	inputs, _ := onnxrt.GenerateInputs(sess.Schema(), 4, 5, nil)

	// Without a grant the schedule captures nothing.
	fleettest.Eventually(t, 20*time.Second, "schedule refused", func() bool {
		return strings.Contains(ag.Log(), "automatic capture not permitted")
	})
	for i := range 3 {
		inferID(t, addr, "wake", fmt.Sprintf("pre-%d", i), inputs[i%len(inputs)])
	}
	if code, body := cp.Do("PUT", "/api/v1/groups/shop-b", map[string]any{"capture": map[string]any{"enabled": true, "max_samples": 3}}, nil); code != 200 {
		t.Fatalf("enable capture: %d %s", code, body)
	}
	var done datasetView
	i := 0
	fleettest.Eventually(t, 60*time.Second, "a scheduled capture completes", func() bool {
		inferID(t, addr, "wake", fmt.Sprintf("post-%d", i), inputs[i%len(inputs)])
		i++
		var list struct {
			Datasets []datasetView `json:"datasets"`
		}
		cp.Do("GET", "/api/v1/datasets?state=complete", nil, &list)
		if len(list.Datasets) > 0 {
			done = list.Datasets[len(list.Datasets)-1]
			return true
		}
		return false
	})
	if done.Trigger != "schedule" || done.Requester != "device:cap-2" || done.Samples != 3 || done.Group != "shop-b" || done.Bundle != id1 {
		t.Fatalf("scheduled dataset %+v", done)
	}
	_, body := cp.Do("GET", "/api/v1/datasets/"+done.ID+"/samples", nil, nil)
	dataset.ReadSamples(strings.NewReader(body), func(_ []byte, s dataset.Sample) error {
		if !strings.HasPrefix(s.ID, "post-") {
			t.Errorf("sample %s was captured before the policy allowed it", s.ID)
		}
		return nil
	})
	var aud struct {
		Entries []struct{ Who, Action, Reason string } `json:"entries"`
	}
	cp.Do("GET", "/api/v1/audit", nil, &aud)
	found := false
	for _, e := range aud.Entries {
		found = found || (e.Who == "device:cap-2" && e.Action == "automatic capture (schedule)" && strings.HasPrefix(e.Reason, "schedule"))
	}
	if !found {
		t.Fatalf("no audit entry for the automatic capture: %+v", aud.Entries)
	}
}

// TestDriftCapture: inputs far from the bundle's reference push a telemetry window's PSI past
// --capture-drift-psi, and the device captures the drifted inputs under its group's grant.
func TestDriftCapture(t *testing.T) {
	models := fleettest.Models(t)
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	if code, body := cp.Do("PUT", "/api/v1/groups/shop-c", map[string]any{"capture": map[string]any{"enabled": true, "max_samples": 4}}, nil); code != 200 {
		t.Fatalf("enable capture: %d %s", code, body)
	}
	ag := fleettest.OTAAgent(t, cp, k, "cap-3", "shop-c", "--capture-drift-psi", "0.2")
	addr := ag.ListenAddr(t)
	v1, id1 := fleettest.BuildBundleRef(t, k, "hello_deepa.onnx", "wake", "1.0.0", 300)
	cp.Push(v1)
	fleettest.Eventually(t, 30*time.Second, "device registered", func() bool { _, ok := cp.Devices()["cap-3"]; return ok })
	assign(t, cp, "cap-3", "wake@1.0.0", "0s")
	waitModel(t, cp, "cap-3", "wake", "committed", func(a, s, _ string) bool { return a == id1 && s == updater.StepCommitted })

	modelBytes, _ := os.ReadFile(filepath.Join(models, "hello_deepa.onnx"))
	sess, err := onnxrt.NewSession(modelBytes, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	inputs, _ := onnxrt.GenerateInputs(sess.Schema(), 50, 3, nil)
	for _, in := range inputs { // shifted and stretched: drift
		for _, x := range in {
			if d, ok := x.Data.([]float32); ok {
				for i := range d {
					d[i] = d[i]*4 + 2
				}
			}
		}
	}
	var done datasetView
	i := 0
	fleettest.Eventually(t, 90*time.Second, "a drift capture completes", func() bool {
		for range 10 {
			inferID(t, addr, "wake", fmt.Sprintf("d-%d", i), inputs[i%len(inputs)])
			i++
		}
		var list struct {
			Datasets []datasetView `json:"datasets"`
		}
		cp.Do("GET", "/api/v1/datasets?state=complete", nil, &list)
		if len(list.Datasets) > 0 {
			done = list.Datasets[len(list.Datasets)-1]
			return true
		}
		return false
	})
	if done.Trigger != "drift" || done.Requester != "device:cap-3" || done.Samples != 4 || !strings.HasPrefix(done.Reason, "drift: PSI") {
		t.Fatalf("drift dataset %+v", done)
	}
	t.Logf("drift capture after %d calls: %s", i, done.Reason)
}
