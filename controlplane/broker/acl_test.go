package broker

import (
	"testing"

	"github.com/edgefleet/edgefleet/internal/wire"
)

func TestDeviceACL(t *testing.T) {
	tp := wire.NewTopics("")
	a, b := "dev-a", "dev-b"
	cases := []struct {
		topic string
		write bool
		want  bool
	}{
		// A device publishes under its own id only.
		{tp.Status(a), true, true},
		{tp.Reported(a), true, true},
		{tp.Telemetry(a, "health"), true, true},
		{tp.BlocksReq(a), true, true},
		{tp.CmdResult(a), true, true},
		{tp.Prefix + "/devices/" + a + "/upload/ds1/0", true, true},
		{tp.Status(b), true, false},
		{tp.Telemetry(b, "health"), true, false},
		{tp.Desired(a), true, false}, // only the control plane writes desired state
		{tp.Ack(a), true, false},
		{tp.Trust(), true, false},
		{tp.Carousel("x"), true, false},
		{"other/topic", true, false},
		// It reads its own topics, trust and carousels.
		{tp.Desired(a), false, true},
		{tp.Ack(a), false, true},
		{tp.Blocks(a), false, true},
		{tp.Cmd(a), false, true},
		{tp.Status(a), false, true},
		{tp.Trust(), false, true},
		{tp.Carousel("abc123"), false, true},
		{tp.Prefix + "/bundles/+/carousel", false, true},
		{tp.Desired(b), false, false},
		{tp.Reported(b), false, false},
		{tp.Prefix + "/devices/+/desired", false, false},
		{tp.Prefix + "/#", false, false},
		{"#", false, false},
		{tp.Prefix + "/bundles/#", false, false},
		{tp.Telemetry(a, "health"), false, false},
	}
	for _, c := range cases {
		if got := DeviceMayAccess(tp, a, c.topic, c.write); got != c.want {
			t.Errorf("device %s write=%v %s: %v, want %v", a, c.write, c.topic, got, c.want)
		}
	}
	if DeviceMayAccess(tp, "Not_Valid", tp.Status("Not_Valid"), true) {
		t.Error("invalid client id allowed")
	}
}
