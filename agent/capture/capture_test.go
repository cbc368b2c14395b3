package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/edgefleet/edgefleet/internal/dataset"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

func TestCheck(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	rcpt := id.Recipient().String()
	yes, no := true, false
	good := dataset.Command{Type: "capture", Capture: strings.Repeat("0f", 32), Model: "m", MaxSamples: 10, Permitted: &yes, Recipient: rcpt}
	for _, tc := range []struct {
		name string
		edit func(c *dataset.Command)
		want error
	}{
		{"permitted", func(*dataset.Command) {}, nil},
		{"permission missing", func(c *dataset.Command) { c.Permitted = nil }, ErrNotPermitted},
		{"policy off", func(c *dataset.Command) { c.Permitted = &no }, ErrNotPermitted},
		{"policy off wins over other faults", func(c *dataset.Command) { c.Permitted = &no; c.Model = "" }, ErrNotPermitted},
		{"no recipient", func(c *dataset.Command) { c.Recipient = "" }, ErrCommand},
		{"recipient not age", func(c *dataset.Command) { c.Recipient = "ssh-ed25519 AAAA" }, ErrCommand},
		{"short id", func(c *dataset.Command) { c.Capture = "abc" }, ErrCommand},
		{"no model", func(c *dataset.Command) { c.Model = "" }, ErrCommand},
		{"zero samples", func(c *dataset.Command) { c.MaxSamples = 0 }, ErrCommand},
		{"too many samples", func(c *dataset.Command) { c.MaxSamples = MaxSamples + 1 }, ErrCommand},
		{"negative seconds", func(c *dataset.Command) { c.Seconds = -1 }, ErrCommand},
	} {
		c := good
		tc.edit(&c)
		err := Check(c)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestTriggerNeedsGrant: automatic captures are refused until the control plane sent a grant,
// and again once it revoked it; the manager never arms anything by itself.
func TestTriggerNeedsGrant(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: filepath.Join(dir, "captures"), KeyPath: filepath.Join(dir, "capture.key"), GrantPath: filepath.Join(dir, "capture-policy.json"), Device: "d1"}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m.Armed("m") {
		t.Fatal("armed by default")
	}
	if _, err := m.Trigger("m", dataset.TriggerDrift, "psi"); !errors.Is(err, ErrNotPermitted) {
		t.Fatalf("trigger without a grant: %v", err)
	}
	id, _ := age.GenerateX25519Identity()
	yes, no := true, false
	if err := m.SetGrant(dataset.Command{Type: "capture_policy", Permitted: &yes, MaxSamples: 5, Recipient: id.Recipient().String()}); err != nil {
		t.Fatal(err)
	}
	m2, _ := New(cfg) // the grant survives a restart
	if _, err := m2.Trigger("m", dataset.TriggerSchedule, "every 1h"); err != nil || !m2.Armed("m") {
		t.Fatalf("trigger with a grant: %v, armed %v", err, m2.Armed("m"))
	}
	if _, err := m2.Trigger("m", dataset.TriggerSchedule, "again"); !errors.Is(err, ErrBusy) {
		t.Fatalf("second capture of the same model: %v", err)
	}
	if err := m2.SetGrant(dataset.Command{Type: "capture_policy", Permitted: &no}); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Trigger("other", dataset.TriggerDrift, "psi"); !errors.Is(err, ErrNotPermitted) {
		t.Fatalf("trigger after revocation: %v", err)
	}
}

// TestArmedOnly: calls are recorded only while a capture is armed, at most max_samples; the
// sealed file is readable by the control plane's identity only through age, survives a restart
// and is deleted once acknowledged complete.
func TestArmedOnly(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: filepath.Join(dir, "captures"), KeyPath: filepath.Join(dir, "capture.key"), GrantPath: filepath.Join(dir, "g.json"), Device: "d1",
		Publish: func(context.Context, []byte) error { return nil }}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cpID, _ := age.GenerateX25519Identity()
	x := func(v float32) []onnxrt.Tensor {
		return []onnxrt.Tensor{{Name: "x", DType: onnxrt.FP32, Shape: []int64{1}, Data: []float32{v}}}
	}
	m.Observe("m", "1", "b", "before", x(1), x(2)) // nothing armed: not recorded
	yes := true
	capID := strings.Repeat("ab", 32)
	if err := m.Arm(dataset.Command{Type: "capture", Capture: capID, Model: "m", MaxSamples: 2, Permitted: &yes, Recipient: cpID.Recipient().String()}); err != nil {
		t.Fatal(err)
	}
	m.Observe("other", "1", "b", "o", x(9), x(9)) // another model: not recorded
	for i := range 3 {
		m.Observe("m", "1", "b", fmt.Sprintf("r%d", i), x(float32(i)), x(0))
	}
	m.Flush()
	if m.Armed("m") || len(m.Pending()) != 1 {
		t.Fatalf("armed %v, pending %v", m.Armed("m"), m.Pending())
	}
	m2, err := New(cfg) // a restart finds the sealed capture
	if err != nil || len(m2.Pending()) != 1 {
		t.Fatalf("after restart: %v %v", m2.Pending(), err)
	}
	f, _ := os.ReadFile(filepath.Join(cfg.Dir, capID, dataset.FileSamples))
	pr, err := dataset.Decrypt(bytes.NewReader(f), cpID)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	dataset.ReadSamples(pr, func(_ []byte, s dataset.Sample) error { ids = append(ids, s.ID); return nil })
	if fmt.Sprint(ids) != "[r0 r1]" {
		t.Fatalf("captured %v, want [r0 r1]", ids)
	}
	if err := m2.Arm(dataset.Command{Type: "capture", Capture: capID, Model: "m", MaxSamples: 2, Permitted: &yes, Recipient: cpID.Recipient().String()}); err != nil || m2.Armed("m") {
		t.Fatalf("a re-delivered command re-armed the capture: %v", err)
	}
	m2.OnAck(dataset.Ack{Type: "capture_ack", Capture: capID, Complete: true})
	if _, err := os.Stat(filepath.Join(cfg.Dir, capID)); !os.IsNotExist(err) || len(m2.Pending()) != 0 {
		t.Fatalf("capture not deleted after the complete ack: %v", err)
	}
}
