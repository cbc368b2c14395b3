// Package extbroker connects the control plane to an existing MQTT broker (Mosquitto, EMQX,
// HiveMQ...) as an ordinary client: persistent session, fleet subscriptions re-made on every
// connection, handlers registered before connecting (a message for a subscription without a
// handler is never acknowledged and can fill the in-flight window).
package extbroker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/internal/mqttc"
)

// Handler receives every fleet message.
type Handler func(topic string, payload []byte)

// Client is a connection to an external broker.
type Client struct {
	c   paho.Client
	log *slog.Logger
}

// Connect connects and subscribes to filters, calling h for every message. It returns once the
// first connection is up or ctx ends; later losses are repaired in the background.
func Connect(ctx context.Context, cfg mqttc.Config, filters []string, h Handler, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.Default()
	}
	o, err := cfg.Options()
	if err != nil {
		return nil, err
	}
	o.SetCleanSession(false)
	o.SetAutoReconnect(true)
	o.SetMaxReconnectInterval(30 * time.Second)
	o.SetConnectRetry(true)
	o.SetConnectRetryInterval(2 * time.Second)
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { h(m.Topic(), m.Payload()) })
	o.SetOnConnectHandler(func(c paho.Client) {
		subs := map[string]byte{}
		for _, f := range filters {
			subs[f] = 1
		}
		tok := c.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) { h(m.Topic(), m.Payload()) })
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			log.Error("subscribing to fleet topics failed; reconnecting", "err", tok.Error())
			// Disconnect forces a fresh connection whose OnConnect subscribes again.
			go c.Disconnect(0)
			return
		}
		log.Info("connected to broker", "broker", cfg.URLs)
	})
	o.SetConnectionLostHandler(func(_ paho.Client, err error) {
		log.Warn("lost broker connection; reconnecting", "err", err)
	})
	c := paho.NewClient(o)
	tok := c.Connect()
	select {
	case <-tok.Done():
		if tok.Error() != nil {
			return nil, fmt.Errorf("connect to broker %v: %w", cfg.URLs, tok.Error())
		}
	case <-ctx.Done():
		c.Disconnect(0)
		return nil, ctx.Err()
	}
	return &Client{c: c, log: log}, nil
}

// Publish sends a message and waits for the broker's acknowledgement (QoS 1) or ctx.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	tok := c.c.Publish(topic, qos, retain, payload)
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("publish %s: %w", topic, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publish %s: %w", topic, ctx.Err())
	}
}

// Close disconnects cleanly.
func (c *Client) Close() error {
	c.c.Disconnect(250)
	return nil
}
