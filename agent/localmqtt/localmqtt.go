// Package localmqtt answers inference requests over the device's local MQTT broker, for PLC and
// IoT applications that already speak MQTT rather than HTTP. MQTT 3.1.1 has no response topic or
// correlation data (those are MQTT 5), so both travel in the request body: the Open Inference
// Protocol request plus "reply_to" and "correlation_id"; the answer, published on reply_to, is
// the OIP response plus the same correlation_id, or {"error", "correlation_id"}.
//
// It owns only that translation; models, validation and metrics are agent/infer's. It must not
// talk to the fleet's broker: this is the device's local one.
package localmqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/edgefleet/edgefleet/agent/infer"
	"github.com/edgefleet/edgefleet/internal/oip"
)

// DefaultTopic is the request topic pattern; {model} is the model name's level.
const DefaultTopic = "edgefleet/local/infer/{model}"

// Config of the local MQTT front end.
type Config struct {
	// Broker is the local broker's URL (tcp://127.0.0.1:1883, mqtt://..., ssl://...).
	Broker             string
	ClientID           string // default "edgefleet-local-infer"
	Username, Password string
	// Topic is the request topic pattern with one {model} level (default DefaultTopic).
	Topic string
	// QoS of the subscription and of answers (default 0: a PLC polls again rather than have a
	// stale answer queued; set 1 where requests must not be lost).
	QoS    byte
	Logger *slog.Logger
}

// Service subscribes to inference requests and answers them.
type Service struct {
	srv     *infer.Server
	cfg     Config
	log     *slog.Logger
	sub     string // subscription filter
	level   int    // index of the {model} level
	timeout time.Duration
}

// New checks the configuration and returns a service for srv.
func New(srv *infer.Server, cfg Config) (*Service, error) {
	if cfg.Topic == "" {
		cfg.Topic = DefaultTopic
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "edgefleet-local-infer"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.QoS > 1 {
		return nil, fmt.Errorf("local MQTT QoS %d: use 0 or 1", cfg.QoS)
	}
	levels := strings.Split(cfg.Topic, "/")
	s := &Service{srv: srv, cfg: cfg, log: cfg.Logger.With("component", "localmqtt"), level: -1, timeout: 30 * time.Second}
	for i, l := range levels {
		if l == "{model}" {
			if s.level >= 0 {
				return nil, fmt.Errorf("local MQTT topic %q: {model} appears twice", cfg.Topic)
			}
			s.level, levels[i] = i, "+"
		} else if strings.ContainsAny(l, "+#{}") {
			return nil, fmt.Errorf("local MQTT topic %q: level %q is not allowed", cfg.Topic, l)
		}
	}
	if s.level < 0 {
		return nil, fmt.Errorf("local MQTT topic %q has no {model} level", cfg.Topic)
	}
	s.sub = strings.Join(levels, "/")
	return s, nil
}

// Subscription is the topic filter the service subscribes to.
func (s *Service) Subscription() string { return s.sub }

// Run connects to the broker and serves until ctx ends. It reconnects by itself (paho's
// auto-reconnect) and subscribes again on every connection.
func (s *Service) Run(ctx context.Context) error {
	o := paho.NewClientOptions().AddBroker(s.cfg.Broker).SetClientID(s.cfg.ClientID).
		SetUsername(s.cfg.Username).SetPassword(s.cfg.Password).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetMaxReconnectInterval(10 * time.Second).
		// Requests are independent: let them run concurrently instead of one by one.
		SetOrderMatters(false)
	o.SetOnConnectHandler(func(c paho.Client) {
		tok := c.Subscribe(s.sub, s.cfg.QoS, func(c paho.Client, m paho.Message) { s.handle(ctx, c, m) })
		if tok.WaitTimeout(10*time.Second) && tok.Error() != nil {
			s.log.Error("subscribe to local inference requests", "topic", s.sub, "err", tok.Error())
			return
		}
		s.log.Info("serving inference on local MQTT", "broker", s.cfg.Broker, "topic", s.sub)
	})
	c := paho.NewClient(o)
	tok := c.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("local MQTT broker %s: %w", s.cfg.Broker, err)
		}
	case <-ctx.Done():
	}
	<-ctx.Done()
	c.Disconnect(250)
	return nil
}

type envelope struct {
	ReplyTo       string `json:"reply_to"`
	CorrelationID string `json:"correlation_id"`
}

var errNoReply = errors.New("no reply_to")

var memberRE = map[string]*regexp.Regexp{
	"reply_to":       regexp.MustCompile(`"reply_to"\s*:\s*"([^"\\]*)"`),
	"correlation_id": regexp.MustCompile(`"correlation_id"\s*:\s*"([^"\\]*)"`),
}

// member finds a plain string member in a body that is not valid JSON.
func member(b []byte, key string) string {
	if m := memberRE[key].FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return ""
}

func (s *Service) handle(ctx context.Context, c paho.Client, msg paho.Message) {
	levels := strings.Split(msg.Topic(), "/")
	if s.level >= len(levels) {
		return
	}
	model := levels[s.level]
	resp, reply, err := s.Answer(ctx, model, msg.Payload())
	if errors.Is(err, errNoReply) {
		s.log.Warn("local inference request without reply_to dropped", "model", model)
		return
	}
	c.Publish(reply, s.cfg.QoS, false, resp)
}

// Answer computes the reply to one request payload for model: the body to publish and the
// topic to publish it on.
func (s *Service) Answer(ctx context.Context, model string, payload []byte) (body []byte, replyTo string, err error) {
	c, err := oip.ParseCall(payload, nil, oip.ParseOptions{Extra: []string{"reply_to", "correlation_id"}})
	var env envelope
	if err != nil {
		// The envelope may still be readable, even in a truncated body; answer the error where
		// the caller listens.
		if json.Unmarshal(payload, &env) != nil {
			env.ReplyTo, env.CorrelationID = member(payload, "reply_to"), member(payload, "correlation_id")
		}
		if env.ReplyTo == "" {
			return nil, "", errNoReply
		}
		return oip.AppendError(nil, err.Error(), [2]string{"correlation_id", env.CorrelationID}), env.ReplyTo, nil
	}
	env = envelope{ReplyTo: c.Extra["reply_to"], CorrelationID: c.Extra["correlation_id"]}
	if env.ReplyTo == "" {
		return nil, "", errNoReply
	}
	if strings.ContainsAny(env.ReplyTo, "+#") {
		return nil, "", fmt.Errorf("%w: reply_to %q is a filter", errNoReply, env.ReplyTo)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, m, err := s.srv.Call(ctx, model, "", c)
	cid := [2]string{"correlation_id", env.CorrelationID}
	if err != nil {
		return oip.AppendError(nil, err.Error(), cid), env.ReplyTo, nil
	}
	var w oip.ResponseWriter
	w.Begin(m.Name, m.Version, c.ID, cid)
	for _, t := range out {
		w.Output(t, false) // MQTT payloads are JSON; binary tensors are an HTTP extension
	}
	w.End()
	return w.JSON, env.ReplyTo, nil
}
