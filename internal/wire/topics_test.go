package wire

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRoundTrip(t *testing.T) {
	tp := NewTopics("plant7")
	id := "cam-0042"
	for _, c := range []struct {
		topic string
		kind  Kind
		sub   string
	}{
		{tp.Status(id), KindStatus, ""},
		{tp.Reported(id), KindReported, ""},
		{tp.Desired(id), KindDesired, ""},
		{tp.Ack(id), KindAck, ""},
		{tp.Cmd(id), KindCmd, ""},
		{tp.CmdResult(id), KindCmdResult, ""},
		{tp.BlocksReq(id), KindBlocksReq, ""},
		{tp.Blocks(id), KindBlocks, ""},
		{tp.Telemetry(id, "health"), KindTelemetry, "health"},
		{tp.Prefix + "/devices/" + id + "/upload/ds-1/3", KindUpload, "ds-1/3"},
	} {
		p, err := tp.Parse(c.topic)
		if err != nil || p.Kind != c.kind || p.Device != id || p.Sub != c.sub {
			t.Errorf("%s: %+v %v", c.topic, p, err)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	tp := NewTopics("")
	wrongShard := (Shard("dev-1") + 1) % Shards
	for _, topic := range []string{
		"other/devices/dev-1/status",
		"edgefleet/devices/Dev-1/status",
		"edgefleet/devices/dev-1/unknown",
		"edgefleet/devices//status",
		"edgefleet/devices/" + strings.Repeat("a", 65) + "/status",
		"edgefleet/shards/x/devices/dev-1/telemetry/health",
		"edgefleet/shards/64/devices/dev-1/telemetry/health",
		"edgefleet/shards/" + itoa(wrongShard) + "/devices/dev-1/telemetry/health",
		"edgefleet/shards/" + itoa(Shard("dev-1")) + "/devices/dev-1/telemetry/",
		"edgefleet/devices/dev-1/upload/",
		"edgefleet",
	} {
		if _, err := tp.Parse(topic); !errors.Is(err, ErrTopic) {
			t.Errorf("%q: %v, want ErrTopic", topic, err)
		}
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

func TestShardIsFNV1a(t *testing.T) {
	// FNV-1a-32("a") = 0xe40c292c; mod 64 = 44. A fixed vector keeps replicas of different builds
	// agreeing on who owns which device.
	if got := Shard("a"); got != 0xe40c292c%64 {
		t.Fatalf("Shard(a) = %d", got)
	}
	seen := map[int]bool{}
	for i := 0; i < 2000; i++ {
		seen[Shard("dev-"+itoa(i))] = true
	}
	if len(seen) != Shards {
		t.Fatalf("2000 devices cover %d of %d shards", len(seen), Shards)
	}
}

func TestDeviceIDAndPrefix(t *testing.T) {
	for id, ok := range map[string]bool{"a": true, "dev-1.a_b": true, "": false, "-a": false, "A": false, "a/b": false, "a+": false, strings.Repeat("a", 64): true, strings.Repeat("a", 65): false} {
		if ValidDeviceID(id) != ok {
			t.Errorf("ValidDeviceID(%q) != %v", id, ok)
		}
	}
	for p, ok := range map[string]bool{"edgefleet": true, "site/a": true, "": false, "a/#": false, "+": false, "/a": false, "a/": false, "a//b": false} {
		if ValidPrefix(p) != ok {
			t.Errorf("ValidPrefix(%q) != %v", p, ok)
		}
	}
}
