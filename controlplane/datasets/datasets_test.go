package datasets

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/audit"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/internal/dataset"
	"github.com/edgefleet/edgefleet/ota/transfer"
)

type harness struct {
	svc  *Service
	st   store.Store
	dir  string
	now  time.Time
	mu   sync.Mutex
	sent map[string][][]byte // device -> commands
	pols map[string]fleet.CapturePolicy
}

func newHarness(t *testing.T) *harness {
	h := &harness{st: store.NewMemory(), dir: t.TempDir(), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		sent: map[string][][]byte{}, pols: map[string]fleet.CapturePolicy{}}
	h.open(t)
	return h
}

func (h *harness) open(t *testing.T) {
	svc, err := New(Config{Store: h.st, Dir: filepath.Join(h.dir, "datasets"), KeyPath: filepath.Join(h.dir, "dataset.key"),
		Command: func(_ context.Context, device string, p []byte) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.sent[device] = append(h.sent[device], p)
			return nil
		},
		Policy: func(_ context.Context, g string) (fleet.CapturePolicy, error) { return h.pols[g], nil },
		DeviceGroup: func(d string) (string, bool) {
			if d == "d-a" || d == "d-b" {
				return "shop", true
			}
			return "", false
		},
		Now: func() time.Time { return h.now }})
	if err != nil {
		t.Fatal(err)
	}
	h.svc = svc
}

// acks returns the acknowledgements sent to device since the last call.
func (h *harness) acks(device string) []dataset.Ack {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []dataset.Ack
	for _, p := range h.sent[device] {
		var a dataset.Ack
		if json.Unmarshal(p, &a) == nil && a.Type == "capture_ack" {
			out = append(out, a)
		}
	}
	h.sent[device] = nil
	return out
}

// capture builds what a device uploads: n samples encrypted to the service, in blocks of 256.
func capture(t *testing.T, h *harness, id, trigger string, n int) (dataset.Manifest, []byte) {
	to, _ := dataset.ParseRecipient(h.svc.Recipient())
	var ct bytes.Buffer
	w, _ := dataset.Encrypt(&ct, to)
	for i := range n {
		fmt.Fprintf(w, `{"id":"r%d","at":"2026-01-01T00:00:00Z","model":"m","inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[%d,0.5]}],"outputs":[]}`+"\n", i, i)
	}
	w.Close()
	data := ct.Bytes()
	m := dataset.Manifest{Capture: id, Model: "m", Trigger: trigger, Reason: "why", Samples: n, Size: int64(len(data)), BlockSize: 256}
	sum := sha256.Sum256(data)
	m.SHA256 = hex.EncodeToString(sum[:])
	for off := 0; off < len(data); off += 256 {
		s := sha256.Sum256(data[off:min(off+256, len(data))])
		m.Blocks = append(m.Blocks, hex.EncodeToString(s[:]))
	}
	return m, data
}

func sendManifest(h *harness, device string, m dataset.Manifest) {
	b, _ := json.Marshal(m)
	h.svc.HandleUpload(device, transfer.Frame{Bundle: m.Capture, File: dataset.FileManifest, Data: b}.Encode())
}

func sendBlock(h *harness, device string, m dataset.Manifest, data []byte, i int64) {
	off := i * m.BlockSize
	h.svc.HandleUpload(device, transfer.Frame{Bundle: m.Capture, File: dataset.FileSamples, Index: i, Data: data[off : off+m.BlockLen(i)]}.Encode())
}

func TestRequestRules(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.pols["open"] = fleet.CapturePolicy{Enabled: true, MaxSamples: 50, Retention: "24h"}
	h.pols["off"] = fleet.CapturePolicy{Enabled: false, MaxSamples: 50}
	for _, tc := range []struct {
		name, group, model string
		max, want          int
		err                error
	}{
		{"allowed", "open", "m", 10, 10, nil},
		{"capped by the policy", "open", "m", 500, 50, nil},
		{"policy's limit by default", "open", "m", 0, 50, nil},
		{"group without a policy", "none", "m", 10, 0, ErrNotAllowed},
		{"policy off", "off", "m", 10, 0, ErrNotAllowed},
		{"no group", "", "m", 10, 0, ErrNotAllowed},
		{"no model", "open", "", 10, 0, ErrRequest},
		{"negative", "open", "m", -1, 0, ErrRequest},
	} {
		before := len(h.sent["d1"])
		r, err := h.svc.Request(ctx, "d1", tc.group, tc.model, tc.max, "r", "admin")
		if tc.err != nil {
			if !errors.Is(err, tc.err) || len(h.sent["d1"]) != before {
				t.Errorf("%s: %v (%d commands sent), want %v and none", tc.name, err, len(h.sent["d1"])-before, tc.err)
			}
			continue
		}
		var c dataset.Command
		json.Unmarshal(h.sent["d1"][len(h.sent["d1"])-1], &c)
		if err != nil || r.MaxSamples != tc.want || c.MaxSamples != tc.want || c.Permitted == nil || !*c.Permitted || c.Recipient != h.svc.Recipient() || c.Capture != r.ID {
			t.Errorf("%s: %v, record %+v, command %+v", tc.name, err, r, c)
		}
	}
}

// TestUploadAndSweep: blocks are verified and acknowledged one by one, a bad block is not, a
// restarted service resumes from the verified blocks on disk, an automatic capture needs the
// group's policy and is audited, and the sweeper deletes what is past retention by the clock.
func TestUploadAndSweep(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.pols["shop"] = fleet.CapturePolicy{Enabled: true, MaxSamples: 100, Retention: "48h"}
	r, err := h.svc.Request(ctx, "d-a", "shop", "m", 30, "drifting", "admin")
	if err != nil {
		t.Fatal(err)
	}
	h.acks("d-a")
	m, data := capture(t, h, r.ID, dataset.TriggerCommand, 30)
	if len(m.Blocks) < 4 {
		t.Fatalf("only %d blocks", len(m.Blocks))
	}
	sendManifest(h, "d-b", m) // another device's capture: ignored
	if a := h.acks("d-b"); len(a) != 0 {
		t.Fatalf("another device got %+v", a)
	}
	sendManifest(h, "d-a", m)
	if a := h.acks("d-a"); len(a) != 1 || len(a[0].Have) != 0 {
		t.Fatalf("manifest answer %+v, want one ack holding nothing", a)
	}
	sendBlock(h, "d-a", m, data, 0)
	bad := bytes.Clone(data)
	bad[256] ^= 1
	sendBlock(h, "d-a", m, bad, 1)
	sendBlock(h, "d-a", m, data, 0) // duplicate: acknowledged again, written once
	if a := h.acks("d-a"); len(a) != 2 || a[0].Have[0] != 0 || a[1].Have[0] != 0 {
		t.Fatalf("acks %+v, want block 0 twice and nothing for the corrupt block 1", a)
	}

	// A restarted control plane re-verifies the partial file and resumes.
	h.open(t)
	sendManifest(h, "d-a", m)
	if a := h.acks("d-a"); len(a) != 1 || len(a[0].Have) != 1 || a[0].Have[0] != 0 {
		t.Fatalf("resume answer %+v, want block 0 held", a)
	}
	for i := int64(1); i < int64(len(m.Blocks)); i++ {
		sendBlock(h, "d-a", m, data, i)
	}
	a := h.acks("d-a")
	if last := a[len(a)-1]; !last.Complete {
		t.Fatalf("last ack %+v, want complete", last)
	}
	got, _ := h.svc.Get(ctx, r.ID)
	if got.State != StateComplete || got.Samples != 30 {
		t.Fatalf("record %+v", got)
	}
	ctype, write, err := h.svc.Samples(ctx, r.ID, "npy")
	if err != nil || ctype != "application/octet-stream" {
		t.Fatal(ctype, err)
	}
	var npy bytes.Buffer
	write(&npy)
	hdr, _ := dataset.NPYHeader("FP32", []int64{30, 2})
	if !bytes.HasPrefix(npy.Bytes(), hdr) || npy.Len() != len(hdr)+30*2*4 {
		t.Fatalf("npy of %d bytes", npy.Len())
	}

	// Automatic captures: only under the policy, audited with the device as requester.
	auto, autoData := capture(t, h, fmt.Sprintf("%064x", 7), dataset.TriggerDrift, 3)
	h.pols["shop"] = fleet.CapturePolicy{}
	sendManifest(h, "d-b", auto)
	if a := h.acks("d-b"); len(a) != 1 || a[0].Refused == "" {
		t.Fatalf("automatic capture without a policy: %+v", a)
	}
	h.pols["shop"] = fleet.CapturePolicy{Enabled: true, MaxSamples: 100, Retention: "1h"}
	sendManifest(h, "d-b", auto)
	for i := range int64(len(auto.Blocks)) {
		sendBlock(h, "d-b", auto, autoData, i)
	}
	if g, _ := h.svc.Get(ctx, auto.Capture); g.State != StateComplete || g.Requester != "device:d-b" || g.Trigger != "drift" {
		t.Fatalf("automatic dataset %+v", g)
	}
	es, _ := audit.List(ctx, h.st, time.Time{}, 0)
	var actions []string
	for _, e := range es {
		actions = append(actions, e.Who+" "+e.Action)
	}
	if fmt.Sprint(actions) != "[admin capture requested device:d-b automatic capture refused device:d-b automatic capture (drift)]" {
		t.Fatalf("audit %v", actions)
	}

	// Retention follows the group's current policy (1h now) and the injected clock.
	h.now = h.now.Add(30 * time.Minute)
	if n, err := h.svc.Sweep(ctx); n != 0 || err != nil {
		t.Fatalf("sweep before retention: %d %v", n, err)
	}
	h.now = h.now.Add(time.Hour)
	if n, err := h.svc.Sweep(ctx); n != 2 || err != nil {
		t.Fatalf("sweep after retention: %d %v", n, err)
	}
	if _, err := h.svc.Get(ctx, r.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dataset after retention: %v", err)
	}
}

// TestDeviceRefusal: a device's refusal on cmd/result marks its requested dataset refused; a
// result from another device, or a success, changes nothing.
func TestDeviceRefusal(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.pols["shop"] = fleet.CapturePolicy{Enabled: true, MaxSamples: 5}
	r, err := h.svc.Request(ctx, "d-a", "shop", "m", 5, "", "admin")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		device, payload, want string
	}{
		{"d-b", `{"type":"capture","capture":"` + r.ID + `","ok":false,"error":"x"}`, StateRequested},
		{"d-a", `{"type":"capture","capture":"` + r.ID + `","ok":true}`, StateRequested},
		{"d-a", `{"type":"other","capture":"` + r.ID + `","ok":false}`, StateRequested},
		{"d-a", `{"type":"capture","capture":"` + r.ID + `","ok":false,"error":"capture not permitted"}`, StateRefused},
	} {
		h.svc.HandleResult(tc.device, []byte(tc.payload))
		if got, _ := h.svc.Get(ctx, r.ID); got.State != tc.want {
			t.Fatalf("after %s from %s: state %s, want %s", tc.payload, tc.device, got.State, tc.want)
		}
	}
}
