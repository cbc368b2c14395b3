package wire

import (
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strconv"
	"strings"
)

// DefaultPrefix is the topic prefix both binaries use unless --prefix says otherwise.
const DefaultPrefix = "edgefleet"

// Shards is the number of telemetry shards; control-plane replicas split ingest by shard.
const Shards = 64

var deviceIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ErrDeviceID is returned for a device id outside [a-z0-9][a-z0-9._-]{0,63}.
var ErrDeviceID = errors.New("invalid device id")

// ValidDeviceID reports whether id may be used as a device id (and MQTT client id).
func ValidDeviceID(id string) bool { return deviceIDRe.MatchString(id) }

// CheckDeviceID returns a descriptive error when id is not a valid device id.
func CheckDeviceID(id string) error {
	if !ValidDeviceID(id) {
		return fmt.Errorf("%w %q: use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit", ErrDeviceID, id)
	}
	return nil
}

// ValidPrefix reports whether p can prefix our topics (no wildcards, no empty levels).
func ValidPrefix(p string) bool {
	if p == "" || strings.ContainsAny(p, "+#\x00") || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") {
		return false
	}
	return true
}

// Shard returns FNV-1a-32(device id) mod Shards.
func Shard(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % Shards)
}

// Topics builds and parses topic names under one prefix.
type Topics struct{ Prefix string }

// NewTopics returns Topics for prefix, or DefaultPrefix when prefix is empty.
func NewTopics(prefix string) Topics {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Topics{Prefix: prefix}
}

func (t Topics) device(id, rest string) string { return t.Prefix + "/devices/" + id + "/" + rest }

func (t Topics) Status(id string) string   { return t.device(id, "status") }
func (t Topics) Reported(id string) string { return t.device(id, "reported") }
func (t Topics) Desired(id string) string  { return t.device(id, "desired") }
func (t Topics) Ack(id string) string      { return t.device(id, "ack") }
func (t Topics) Cmd(id string) string      { return t.device(id, "cmd") }
func (t Topics) CmdResult(id string) string {
	return t.device(id, "cmd/result")
}
func (t Topics) BlocksReq(id string) string { return t.device(id, "blocks/req") }
func (t Topics) Blocks(id string) string    { return t.device(id, "blocks") }
func (t Topics) Trust() string              { return t.Prefix + "/trust" }

// Upload is a device's upload topic for what sub names (e.g. "capture").
func (t Topics) Upload(id, sub string) string { return t.device(id, "upload/"+sub) }
func (t Topics) Carousel(bundle string) string {
	return t.Prefix + "/bundles/" + bundle + "/carousel"
}

// Telemetry is the shard topic for one device's telemetry of a kind.
func (t Topics) Telemetry(id, kind string) string {
	return t.Prefix + "/shards/" + strconv.Itoa(Shard(id)) + "/devices/" + id + "/telemetry/" + kind
}

// Filters the control plane subscribes to when it reads fleet traffic as an ordinary client.
func (t Topics) FleetFilters() []string {
	return []string{
		t.Prefix + "/devices/+/status",
		t.Prefix + "/devices/+/reported",
		t.Prefix + "/devices/+/blocks/req",
		t.Prefix + "/devices/+/cmd/result",
		t.Prefix + "/devices/+/upload/#",
		t.Prefix + "/shards/+/devices/+/telemetry/+",
	}
}

// Kind is what an inbound fleet topic carries.
type Kind int

const (
	KindUnknown Kind = iota
	KindStatus
	KindReported
	KindTelemetry
	KindBlocksReq
	KindCmdResult
	KindUpload
	KindDesired
	KindAck
	KindBlocks
	KindCmd
)

// Parsed is a fleet topic taken apart.
type Parsed struct {
	Kind   Kind
	Device string
	Shard  int    // telemetry only
	Sub    string // telemetry kind, or the rest of an upload topic
}

// ErrTopic is returned for a topic that is not part of the contract.
var ErrTopic = errors.New("topic outside the edgefleet contract")

// Parse takes apart a topic under t.Prefix. Device ids are validated, and a telemetry topic's
// shard must match the device, so a device cannot pick another replica's shard.
func (t Topics) Parse(topic string) (Parsed, error) {
	rest, ok := strings.CutPrefix(topic, t.Prefix+"/")
	if !ok {
		return Parsed{}, fmt.Errorf("%w: %q lacks prefix %q", ErrTopic, topic, t.Prefix)
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) >= 3 && parts[0] == "devices":
		id := parts[1]
		if err := CheckDeviceID(id); err != nil {
			return Parsed{}, fmt.Errorf("%w: %v", ErrTopic, err)
		}
		p := Parsed{Device: id}
		tail := strings.Join(parts[2:], "/")
		switch {
		case tail == "status":
			p.Kind = KindStatus
		case tail == "reported":
			p.Kind = KindReported
		case tail == "desired":
			p.Kind = KindDesired
		case tail == "ack":
			p.Kind = KindAck
		case tail == "cmd":
			p.Kind = KindCmd
		case tail == "cmd/result":
			p.Kind = KindCmdResult
		case tail == "blocks/req":
			p.Kind = KindBlocksReq
		case tail == "blocks":
			p.Kind = KindBlocks
		case strings.HasPrefix(tail, "upload/") && len(tail) > len("upload/"):
			p.Kind, p.Sub = KindUpload, strings.TrimPrefix(tail, "upload/")
		default:
			return Parsed{}, fmt.Errorf("%w: %q", ErrTopic, topic)
		}
		return p, nil
	case len(parts) == 6 && parts[0] == "shards" && parts[2] == "devices" && parts[4] == "telemetry":
		k, err := strconv.Atoi(parts[1])
		if err != nil || k < 0 || k >= Shards {
			return Parsed{}, fmt.Errorf("%w: bad shard in %q", ErrTopic, topic)
		}
		id := parts[3]
		if err := CheckDeviceID(id); err != nil {
			return Parsed{}, fmt.Errorf("%w: %v", ErrTopic, err)
		}
		if Shard(id) != k {
			return Parsed{}, fmt.Errorf("%w: device %s belongs to shard %d, not %d", ErrTopic, id, Shard(id), k)
		}
		if parts[5] == "" {
			return Parsed{}, fmt.Errorf("%w: empty telemetry kind in %q", ErrTopic, topic)
		}
		return Parsed{Kind: KindTelemetry, Device: id, Shard: k, Sub: parts[5]}, nil
	}
	return Parsed{}, fmt.Errorf("%w: %q", ErrTopic, topic)
}
