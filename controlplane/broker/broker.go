// Package broker runs the embedded MQTT broker (mochi-mqtt) inside the control plane process. It
// enforces the per-device topic ACL (deny by default) and hands every fleet message to the control
// plane in-process, through the broker's hooks, so ingest never depends on a subscriber queue that
// can overflow (DESIGN.md "Telemetry").
package broker

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgefleet/edgefleet/internal/wire"
)

// Handler receives fleet messages (topic, payload) published by devices or sent as their Last
// Will. It runs on the publishing client's goroutine and must not block for long.
type Handler func(topic string, payload []byte)

// Config of the embedded broker.
type Config struct {
	Listen  string // TCP address, e.g. 127.0.0.1:1883
	Prefix  string
	Handler Handler
	Logger  *slog.Logger
	// MaxPacketBytes bounds one MQTT packet; bundle blocks are 64 KiB by default.
	MaxPacketBytes uint32
	// Authenticate, when set, decides whether a device may connect with these credentials.
	// Without it any client whose id is a valid device id may connect (loopback default).
	Authenticate func(clientID, username string, password []byte) bool

	// allowAll lifts the device ACL; only this package's tests set it, to run the broker
	// conformance suite (which needs free topics and client ids) against the embedded broker.
	allowAll bool
}

const clientWritesPending = 512

// Broker is a running embedded broker.
type Broker struct {
	srv    *mqtt.Server
	addr   net.Addr
	topics wire.Topics
	once   sync.Once
}

// Start listens and serves.
func Start(cfg Config) (*Broker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxPacketBytes == 0 {
		cfg.MaxPacketBytes = 2 << 20
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacketBytes
	// mochi gives every client an outbound queue of MaximumClientWritesPending packet pointers
	// (default 8,192: 64 KiB a client, most of what a connected device cost). A device gets
	// little: its desired state, trust documents and bundle blocks (a carousel window is 16
	// blocks), so 512 pending writes leave ample room and take 4 KiB. The 2 KiB read and write
	// buffers are mochi's defaults, kept for the 64 KiB bundle blocks' sake.
	caps.MaximumClientWritesPending = clientWritesPending
	// mochi's default removes any retained message older than a day, whether or not it was
	// replaced: a device's retained status, reported and desired state would vanish under a
	// fleet that is simply stable. Retained state is replaced, never aged out.
	caps.MaximumMessageExpiryInterval = 0
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Capabilities: caps,
		// mochi logs its start-up and every client at info; keep only its warnings so the
		// control plane's log stays about the fleet.
		Logger: slog.New(minLevel{cfg.Logger.Handler(), slog.LevelWarn}).With("component", "broker"),
	})
	topics := wire.NewTopics(cfg.Prefix)
	h := &hook{topics: topics, handler: cfg.Handler, auth: cfg.Authenticate, log: cfg.Logger, allowAll: cfg.allowAll}
	if err := srv.AddHook(h, nil); err != nil {
		return nil, fmt.Errorf("add broker hook: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded broker listen on %s: %w", cfg.Listen, err)
	}
	tcp := listeners.NewNet("tcp", ln)
	if err := srv.AddListener(tcp); err != nil {
		ln.Close()
		return nil, fmt.Errorf("add broker listener: %w", err)
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("start embedded broker: %w", err)
	}
	return &Broker{srv: srv, addr: ln.Addr(), topics: topics}, nil
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() net.Addr { return b.addr }

// URL is the broker's address as a client URL.
func (b *Broker) URL() string { return "mqtt://" + b.addr.String() }

// Publish sends a message from the control plane itself (not subject to device ACLs).
func (b *Broker) Publish(topic string, payload []byte, qos byte, retain bool) error {
	if err := b.srv.Publish(topic, payload, retain, qos); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// Disconnect drops a client's connection (e.g. a revoked device).
func (b *Broker) Disconnect(clientID string) bool {
	cl, ok := b.srv.Clients.Get(clientID)
	if !ok {
		return false
	}
	// mochi returns the reason code itself as the error for codes >= 0x80: the client is
	// stopped all the same, and its Last Will goes out as for any dropped connection.
	_ = b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	return true
}

// Close stops the broker; connected devices see their connection drop and reconnect later.
func (b *Broker) Close() error {
	var err error
	b.once.Do(func() { err = b.srv.Close() })
	return err
}

type hook struct {
	mqtt.HookBase
	topics   wire.Topics
	handler  Handler
	auth     func(string, string, []byte) bool
	log      *slog.Logger
	allowAll bool
}

func (h *hook) ID() string { return "edgefleet" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublished, mqtt.OnWillSent}, []byte{b})
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.allowAll {
		return true
	}
	id := cl.ID
	if !wire.ValidDeviceID(id) {
		h.log.Warn("refused connection: client id is not a valid device id", "client", id, "remote", cl.Net.Remote)
		return false
	}
	if pk.Connect.WillFlag && pk.Connect.WillTopic != h.topics.Status(id) {
		h.log.Warn("refused connection: Last Will outside the device's status topic", "device", id, "will_topic", pk.Connect.WillTopic)
		return false
	}
	if h.auth != nil && !h.auth(id, string(pk.Connect.Username), pk.Connect.Password) {
		h.log.Warn("refused connection: bad credentials", "device", id, "remote", cl.Net.Remote)
		return false
	}
	return true
}

func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if h.allowAll {
		return true
	}
	ok := DeviceMayAccess(h.topics, cl.ID, topic, write)
	if !ok {
		h.log.Warn("denied topic access", "device", cl.ID, "topic", topic, "write", write)
	}
	return ok
}

func (h *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || h.handler == nil {
		return // our own publications
	}
	h.handler(pk.TopicName, pk.Payload)
}

func (h *hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if h.handler != nil {
		h.handler(pk.TopicName, pk.Payload)
	}
}

// DeviceMayAccess is the device ACL: deny by default; a device publishes only under its own id
// and reads only its own topics, the trust document and bundle carousels. Wildcard filters are
// refused except a carousel's `+` bundle level.
func DeviceMayAccess(t wire.Topics, id, topic string, write bool) bool {
	if !wire.ValidDeviceID(id) {
		return false
	}
	if write {
		p, err := t.Parse(topic)
		if err != nil || p.Device != id {
			return false
		}
		switch p.Kind {
		case wire.KindStatus, wire.KindReported, wire.KindTelemetry, wire.KindBlocksReq, wire.KindCmdResult, wire.KindUpload:
			return true
		}
		return false
	}
	switch topic {
	case t.Trust(), t.Desired(id), t.Ack(id), t.Blocks(id), t.Cmd(id), t.Status(id):
		return true
	}
	if rest, ok := strings.CutPrefix(topic, t.Prefix+"/bundles/"); ok {
		parts := strings.Split(rest, "/")
		if len(parts) == 2 && parts[1] == "carousel" && parts[0] != "" && parts[0] != "#" {
			return true
		}
	}
	return false
}

type minLevel struct {
	slog.Handler
	min slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.Handler.Enabled(ctx, l)
}

// Handle drops mochi's warnings about connections that simply closed (a device going away, or
// every client at shutdown): they say nothing an operator can act on, and the registry already
// records the device going offline.
func (m minLevel) Handle(ctx context.Context, r slog.Record) error {
	quiet := r.Message == ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			v := a.Value.String()
			if v == "EOF" || strings.Contains(v, "use of closed network connection") || strings.Contains(v, "connection reset by peer") {
				quiet = true
			}
		}
		return true
	})
	if quiet {
		return nil
	}
	return m.Handler.Handle(ctx, r)
}
func (m minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{m.Handler.WithAttrs(a), m.min}
}
func (m minLevel) WithGroup(n string) slog.Handler { return minLevel{m.Handler.WithGroup(n), m.min} }
